"""`genrm-rl score`: score every candidate with one verifier and write a scores JSONL.

    genrm-rl score --model DIR --candidates c.jsonl --mode cot --k 8 --out scores.jsonl
"""

from __future__ import annotations

import dataclasses
import time

from genrm_rl.config import option
from genrm_rl.verifier import VerifierConfig


@dataclasses.dataclass
class ScoreConfig(VerifierConfig):
    candidates: str = option("", help="candidates JSONL")
    out: str = option("scores.jsonl", help="scores JSONL to write")
    chunk_size: int = option(64, help="candidates per progress-bar update")

    def __post_init__(self):
        super().__post_init__()
        if not self.model:
            raise ValueError("model is required")
        if not self.candidates:
            raise ValueError("candidates is required")


def main(argv=None, prog="python -m jobs.score") -> int:
    from genrm_rl.config import parse_cli
    from jobs._common import setup_logging

    cfg = parse_cli(ScoreConfig, argv, prog, "Score candidates with a GenRM / GenRM-CoT / ORM verifier.")
    setup_logging()
    from genrm_rl.records import Candidate, read_records, write_records
    from genrm_rl.verifier import build_scorer, score_candidates

    cands = read_records(cfg.candidates, Candidate)
    t0 = time.time()
    scorer = build_scorer(cfg)
    scores = score_candidates(scorer, cands, cfg.chunk_size, desc=f"score {cfg.mode}")
    write_records(cfg.out, scores)
    print(f"wrote {len(scores)} scores to {cfg.out} in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
