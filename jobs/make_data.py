"""`genrm-rl data make|sample`: problems JSONL from a task generator; candidates from a generator.

    genrm-rl data make --task last_letter --split test --num 200 --seed 0 --out problems.jsonl
    genrm-rl data sample --model runs/gen/model --problems problems.jsonl --n 16 --out candidates.jsonl
"""

from __future__ import annotations

import dataclasses
import logging

from genrm_rl.config import option, parse_cli
from jobs._common import setup_logging, split_subcommand

log = logging.getLogger("genrm_rl.data")


@dataclasses.dataclass
class MakeConfig:
    task: str = option("last_letter", help="task name (last_letter, word_sort)")
    split: str = option("test", help="train (2-4 words), val (2-4), test (5-6)")
    num: int = option(200, help="number of problems")
    seed: int = option(0, help="generation seed")
    out: str = option("problems.jsonl", help="output JSONL")

    def __post_init__(self):
        from genrm_rl.tasks import get_task

        task = get_task(self.task)
        if self.split not in task.lengths:
            raise ValueError(f"task {self.task!r} has no split {self.split!r}; choose one of {sorted(task.lengths)}")
        if self.num < 1:
            raise ValueError(f"num must be >= 1, got {self.num}")


def make(cfg: MakeConfig) -> int:
    from genrm_rl.records import write_records
    from genrm_rl.tasks import get_task

    return write_records(cfg.out, get_task(cfg.task).make_problems(cfg.split, cfg.num, cfg.seed))


def sample(cfg) -> dict:
    from genrm_rl.generation import label_candidates, sample_solutions
    from genrm_rl.records import read_records, write_records
    from genrm_rl.tasks import Problem

    problems = read_records(cfg.problems, Problem)
    solutions = sample_solutions(cfg, [p.question for p in problems])
    cands = label_candidates(problems, solutions)
    write_records(cfg.out, cands)
    acc = sum(c.correct for c in cands) / max(len(cands), 1)
    return {"candidates": len(cands), "accuracy": acc}


def main(argv=None, prog="genrm-rl data") -> int:
    from genrm_rl.generation import SampleConfig

    sub, rest = split_subcommand(list(argv or []), {"make": "write problems JSONL",
                                                    "sample": "sample + label candidates"}, prog)
    setup_logging()
    if sub == "make":
        cfg = parse_cli(MakeConfig, rest, f"{prog} make", "Write task problems as JSONL.")
        print(f"wrote {make(cfg)} problems to {cfg.out}")
    else:
        cfg = parse_cli(SampleConfig, rest, f"{prog} sample", "Sample N candidates per problem and label them.")
        stats = sample(cfg)
        print(f"wrote {stats['candidates']} candidates to {cfg.out} (accuracy {stats['accuracy']:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(__import__("sys").argv[1:], "python -m jobs.make_data"))
