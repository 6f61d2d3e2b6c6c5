"""`genrm-rl reproduce`: the end-to-end GenRM reproduction on the embedded default (README's main job).

    genrm-rl reproduce --config configs/quickstart.yaml          # ~15 min on a 2-core CPU
    genrm-rl reproduce --config configs/quickstart.yaml task=word_sort output_dir=runs/word_sort
    genrm-rl reproduce --config configs/gpu_preset.yaml           # larger models on GPU nodes
"""

from __future__ import annotations


def main(argv=None, prog="python -m jobs.reproduce") -> int:
    from genrm_rl.config import parse_cli
    from genrm_rl.pipeline import Pipeline, ReproduceConfig, print_summary
    from jobs._common import setup_logging

    cfg = parse_cli(ReproduceConfig, argv, prog, "Generator -> candidates -> GenRM-CoT/GenRM/ORM -> Best-of-N.")
    setup_logging()
    summary = Pipeline(cfg).run()
    print_summary(summary)
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
