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


def score_candidates(scorer, cands, chunk_size: int, progress: bool = True, desc: str = "score"):
    """Score records in chunks with a progress bar; returns Score records in input order.

    A candidate whose solution is empty (a generator that stopped at once) is not a solution: it
    scores 0.0 without a verifier call, which is also what keeps it away from the reward service,
    whose protocol rejects empty text as bad input."""
    from tqdm import tqdm

    from genrm_rl.records import Score

    out = []
    with tqdm(total=len(cands), desc=desc, disable=not progress, mininterval=2, unit="cand") as bar:
        for start in range(0, len(cands), chunk_size):
            chunk = cands[start:start + chunk_size]
            real = [c for c in chunk if c.solution.strip()]
            results = iter(scorer.score([(c.question, c.solution) for c in real]) if real else [])
            for c in chunk:
                if not c.solution.strip():
                    out.append(Score(c.problem_id, c.candidate_id, 0.0, None, None))
                    continue
                r = next(results)
                out.append(Score(c.problem_id, c.candidate_id, r.score, r.votes if r.mode == "cot" else None,
                                 r.rationales))
            bar.update(len(chunk))
    return out


def main(argv=None, prog="python -m jobs.score") -> int:
    from genrm_rl.config import parse_cli
    from jobs._common import setup_logging

    cfg = parse_cli(ScoreConfig, argv, prog, "Score candidates with a GenRM / GenRM-CoT / ORM verifier.")
    setup_logging()
    from genrm_rl.records import Candidate, read_records, write_records
    from genrm_rl.verifier import build_scorer

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
