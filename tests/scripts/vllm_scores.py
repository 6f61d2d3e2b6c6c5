"""Score fixed items with the vLLM backend and print JSON (run in its own process by test_vllm)."""

import json
import sys


def main() -> None:
    from genrm_rl.verifier import GenerativeVerifier, VerifierConfig

    spec = json.loads(sys.argv[1])
    cfg = VerifierConfig(model=spec["model"], mode="direct", backend="vllm", device="cpu",
                         vllm_gpu_memory_utilization=0.2, max_new_tokens=spec["max_new_tokens"])
    verifier = GenerativeVerifier(cfg)
    items = [tuple(x) for x in spec["items"]]
    direct = [r.score for r in verifier.score(items, mode="direct")]
    cot = verifier.score(items, mode="cot", k=spec["k"])
    print("RESULT " + json.dumps({"direct": direct, "cot_votes": [r.votes for r in cot],
                                  "cot_forced": [r.num_forced for r in cot]}), flush=True)


if __name__ == "__main__":  # vLLM spawns worker processes that re-import the main module
    main()
