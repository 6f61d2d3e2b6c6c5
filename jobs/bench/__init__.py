"""`genrm-rl bench`: benchmarks, each measured against a baseline in the same run.

    genrm-rl bench --config configs/bench.yaml               # CPU suite -> BENCHMARKS.md (needs `make demo`)
    genrm-rl bench --config configs/bench.yaml which=[scoring]
    genrm-rl bench gpu out=gemma2b.json                       # Gemma-2B shape on one GPU (no Ray)
    genrm-rl bench gpu shape=tiny device=cpu dtype=float32    # the GPU script's smoke run, anywhere

`cpu.py` holds the CPU suite (scoring, service, adaptive K, soak, training), `gpu.py` the GPU script; both read a
config dataclass through the project's one config system. Notes: `jobs/bench/README.md`.
"""

from __future__ import annotations

import json


def main(argv=None, prog="python -m jobs.bench") -> int:
    from genrm_rl.config import parse_cli
    from jobs._common import setup_logging

    argv = list(argv or [])
    setup_logging()
    if argv and argv[0] == "gpu":
        from jobs.bench.gpu import GpuBenchConfig, run_gpu_bench

        cfg = parse_cli(GpuBenchConfig, argv[1:], f"{prog} gpu", "Decode and training speed of a Gemma-2B shape.")
        print(json.dumps(run_gpu_bench(cfg), indent=2))
        return 0
    from jobs.bench.cpu import BenchConfig, markdown, run_bench

    cfg = parse_cli(BenchConfig, argv, prog, "Throughput benchmarks against baselines measured in the same run.")
    print(markdown(run_bench(cfg)))
    return 0
