"""`genrm-rl rl` / `python -m jobs.rl_grpo`: TRL GRPO (or RLOO) with GenRM rewards from the service.

    genrm-rl rl --config configs/rl_grpo.yaml policy=runs/quickstart/generator/model \
        reward.verifier.model=runs/quickstart/genrm_cot/model
    accelerate launch --config_file configs/accelerate_zero2.yaml -m jobs.rl_grpo --config ... reward.url=http://HOST:8000
"""

from __future__ import annotations

import json


def main(argv=None, prog="python -m jobs.rl_grpo") -> int:
    from genrm_rl.config import parse_cli
    from genrm_rl.rl import RLConfig
    from jobs._common import setup_logging

    cfg = parse_cli(RLConfig, argv, prog, "Policy RL (TRL GRPO/RLOO) with GenRM rewards.")
    setup_logging()
    from genrm_rl.rl import run_rl

    summary = run_rl(cfg)
    print(json.dumps({k: v for k, v in summary.items() if k != "log_history"}, indent=2))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
