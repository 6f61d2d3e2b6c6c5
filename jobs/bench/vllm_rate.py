"""Time GenRM-CoT scoring on the vLLM backend in a process of its own and print JSON (`bench`).

Why a separate process: vLLM spawns engine workers that re-import the main module, and its engine
should not share a process with the transformers backend's torch threads while being timed."""

import json
import sys
import time


def main() -> None:
    from genrm_rl.verifier import GenerativeVerifier, VerifierConfig

    spec = json.loads(sys.argv[1])
    verifier = GenerativeVerifier(VerifierConfig(
        model=spec["model"], mode="cot", k=spec["k"], backend="vllm", device=spec.get("device", "cpu"), batch_size=spec["batch_size"],
        max_new_tokens=spec["max_new_tokens"], seed=spec["seed"], vllm_gpu_memory_utilization=0.2))
    pairs = [tuple(x) for x in spec["pairs"]]
    verifier.score(pairs[:2])  # warm-up
    t0 = time.perf_counter()
    res = verifier.score(pairs)
    dt = time.perf_counter() - t0
    print("RESULT " + json.dumps({"verifications_per_s": len(pairs) / dt,
                                  "tokens_per_s": sum(r.generated_tokens for r in res) / dt}), flush=True)


if __name__ == "__main__":  # vLLM spawns worker processes that re-import the main module
    main()
