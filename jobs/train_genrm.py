"""`genrm-rl train` / `python -m jobs.train_genrm`: train a verifier (GenRM-CoT, GenRM, ORM) or the
generator with DeepSpeed ranks started by Ray Train.

    python -m jobs.train_genrm --config configs/train_genrm_cot.yaml model=runs/gen/model
    ray job submit --working-dir . -- python -m jobs.train_genrm --config configs/train_genrm_cot.yaml

Re-running with the same output_dir resumes from its latest checkpoint.
"""

from __future__ import annotations

import json


def main(argv=None, prog="python -m jobs.train_genrm") -> int:
    from genrm_rl.config import parse_cli
    from genrm_rl.training.config import TrainConfig
    from jobs._common import setup_logging

    cfg = parse_cli(TrainConfig, argv, prog, "Train GenRM-CoT / GenRM / ORM / generator on DeepSpeed ranks under Ray Train.")
    setup_logging()
    from genrm_rl.training.launch import run_training

    result = run_training(cfg)
    print(json.dumps({"output_dir": cfg.output_dir, "model": f"{cfg.output_dir}/model", **result}))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
