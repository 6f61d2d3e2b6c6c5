"""`genrm-rl serve`: run the GenRM reward service until interrupted.

    genrm-rl serve --config configs/serve.yaml verifier.model=runs/quickstart/genrm_cot/model
Prints the URL; POST /score and /get_reward, GET /health and /metrics (see README).
"""

from __future__ import annotations

import signal
import threading


def main(argv=None, prog="python -m jobs.serve") -> int:
    from genrm_rl.config import parse_cli
    from jobs._common import setup_logging
    from reward.config import ServeConfig

    cfg = parse_cli(ServeConfig, argv, prog, "Serve a GenRM / GenRM-CoT / ORM verifier as a reward model.")
    setup_logging()
    from reward.service import start_service

    service = start_service(cfg)
    print(f"GenRM reward service ready: {service.url or '(no HTTP)'} "
          f"router={cfg.router_name!r} namespace={cfg.namespace!r}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    service.shutdown()
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
