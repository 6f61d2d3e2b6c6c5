"""`genrm-rl <job>`: one console command whose subcommands are the jobs in `jobs/`.

Each subcommand forwards its arguments to `jobs.<module>.main`, so `genrm-rl train --config X`
and `python -m jobs.train_genrm --config X` are the same program (the second is what
`ray job submit -- python -m jobs.train_genrm ...` runs on a cluster).
"""

from __future__ import annotations

import importlib
import sys

JOBS = {
    "data": ("jobs.make_data", "make problems, sample candidates, export SFT data"),
    "train": ("jobs.train_genrm", "train GenRM-CoT / GenRM / ORM / generator (DeepSpeed on Ray Train)"),
    "serve": ("jobs.serve", "run the GenRM reward service (Ray actors + HTTP)"),
    "score": ("jobs.score", "score candidates with a verifier -> scores JSONL"),
    "rl": ("jobs.rl_grpo", "TRL GRPO/RLOO policy training with GenRM rewards"),
    "eval": ("jobs.eval_bon", "Best-of-N report, table and plot"),
    "bench": ("jobs.bench", "throughput benchmarks -> BENCHMARKS.md"),
    "reproduce": ("jobs.reproduce", "the end-to-end paper reproduction (the README's main job)"),
}


def usage() -> str:
    lines = ["usage: genrm-rl <job> [--help] [--config FILE] [options] [key=value ...]", "", "jobs:"]
    lines += [f"  {name:<10} {desc}" for name, (_, desc) in JOBS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from genrm_rl import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in JOBS:
        print(f"genrm-rl: unknown job {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(JOBS[name][0])
    return int(module.main(rest, prog=f"genrm-rl {name}") or 0)


if __name__ == "__main__":
    sys.exit(main())
