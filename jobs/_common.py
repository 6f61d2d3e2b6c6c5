"""Shared bits of the job entry points: logging setup and a subcommand helper."""

from __future__ import annotations

import logging
import os
import sys


def setup_logging(verbose: bool = False) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("DS_ACCELERATOR", "cpu" if not _has_cuda() else "cuda")
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch missing is reported elsewhere
        return False


def split_subcommand(argv: list[str], choices: dict[str, str], prog: str) -> tuple[str, list[str]]:
    """`prog SUB ...` -> (SUB, rest); prints the choices on --help or a bad name (exit 2)."""
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: {prog} {{{','.join(choices)}}} [--help] ...\n")
        for name, desc in choices.items():
            print(f"  {name:<10} {desc}")
        raise SystemExit(0 if argv else 2)
    if argv[0] not in choices:
        print(f"{prog}: unknown subcommand {argv[0]!r}; choose one of {sorted(choices)}", file=sys.stderr)
        raise SystemExit(2)
    return argv[0], argv[1:]
