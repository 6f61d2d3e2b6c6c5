"""`genrm-rl bench`: scoring, service and training benchmarks -> JSON + BENCHMARKS.md.

    genrm-rl bench --config configs/bench.yaml              # needs runs/quickstart (make demo)
    genrm-rl bench --config configs/bench.yaml which=scoring
GPU (Gemma-2B shape, random weights): python -m bench.gpu_gemma2b (see bench/README.md).
"""

from __future__ import annotations


def main(argv=None, prog="python -m jobs.bench") -> int:
    from genrm_rl.bench import BenchConfig, markdown, run_bench
    from genrm_rl.config import parse_cli
    from jobs._common import setup_logging

    cfg = parse_cli(BenchConfig, argv, prog, "Throughput benchmarks against baselines measured in the same run.")
    setup_logging()
    result = run_bench(cfg)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
