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
    # vLLM's import on a CPU machine: three lines on Triton having no CPU backend, nothing to act on
    logging.getLogger("vllm.triton_utils").setLevel(logging.ERROR)
    # Library warnings through the log, each text once per process: Python's own dedup is per call
    # site (TRL warns about the vLLM version from five), and its "once" action forgets what it saw
    # whenever an import adds a warnings filter (vLLM and Ray do).
    logging.captureWarnings(True)
    py_warnings = logging.getLogger("py.warnings")
    if not any(isinstance(f, FirstOfEachWarning) for f in py_warnings.filters):
        py_warnings.addFilter(FirstOfEachWarning())


class FirstOfEachWarning(logging.Filter):
    """Pass a captured warning (logger "py.warnings") only the first time its text appears."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        # "path:line: Category: text\n  source line" -> "Category: text"
        first = next(iter(record.getMessage().splitlines()), "")
        key = first.split(": ", 1)[-1]
        if key in self._seen:
            return False
        self._seen.add(key)
        return True


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
