"""What every task provides: problems, a reference solution, answer checking, oracle rationales.

Why: the paper's algorithmic tasks have a program that can *write* a correct step-by-step
verification for any candidate. Writing that once here, against a small per-task interface (the
reference solution as a list of steps), gives oracle GenRM-CoT training data for every task and a
rationale that stops at the first wrong step of a wrong candidate.
"""

from __future__ import annotations

import dataclasses
import random
import re
from functools import lru_cache
from importlib import resources

from genrm_rl.prompts import ENDS_WIDTH, VERDICT_CUE


@dataclasses.dataclass(frozen=True)
class Problem:
    """A problem record: `{"id", "task", "question", "target"}`."""

    id: str
    task: str
    question: str
    target: str


@dataclasses.dataclass(frozen=True)
class Rationale:
    """An oracle verification of one candidate.

    `text` ends with "Verification: Is the answer correct (Yes/No)? Yes|No"; `first_error_step` is
    the 1-based index of the first wrong step (None when every step is right)."""

    text: str
    verdict: bool
    first_error_step: int | None


@lru_cache(maxsize=1)
def word_list() -> tuple[str, ...]:
    text = resources.files("genrm_rl.tasks").joinpath("words.txt").read_text()
    return tuple(w for w in (line.strip() for line in text.splitlines()) if w and not w.startswith("#"))


def _norm(line: str) -> str:
    return " ".join(line.split())


ANSWER_RE = re.compile(r"The answer is\s*(.+?)\.?\s*$", re.MULTILINE)


ROWS_PER_END = ENDS_WIDTH  # the `ends` question view shows exactly the words these rows read


def end_positions(items: list[str], per_end: int = ROWS_PER_END) -> list[str]:
    """The first `per_end` items, then the last `per_end` counted from the end, `_` where the list is
    too short: `end_positions(list("tge"))` is `[t, g, e, e, g, t]`, `end_positions(list("tg"))` is
    `[t, g, _, g, t, _]`. Covers every item of a list up to 2 x `per_end` long."""
    head = [items[i] if i < len(items) else "_" for i in range(per_end)]
    tail = [items[-j] if j <= len(items) else "_" for j in range(1, per_end + 1)]
    return head + tail


class Task:
    """Base class. Subclasses set `name`, `lengths` and implement the abstract methods."""

    name: str = ""
    #: number of items (e.g. words) per problem for each split
    lengths: dict[str, tuple[int, int]] = {}
    #: the `rationale_rows` layouts `rationale` writes
    row_layouts: tuple[str, ...] = ("all",)

    # ---- problems -------------------------------------------------------------------------
    def make_problems(self, split: str, num: int, seed: int = 0) -> list[Problem]:
        if split not in self.lengths:
            raise ValueError(f"task {self.name!r} has splits {sorted(self.lengths)}, got {split!r}")
        if num <= 0:
            raise ValueError(f"num must be positive, got {num}")
        lo, hi = self.lengths[split]
        # String seeds hash deterministically across processes (unlike hash()).
        rng = random.Random(f"{self.name}/{split}/{seed}")
        words = word_list()
        problems = []
        for i in range(num):
            items = rng.sample(words, rng.randint(lo, hi))
            problems.append(Problem(f"{self.name}-{split}-{seed}-{i}", self.name, self.question(items), self.target(items)))
        return problems

    def question(self, items: list[str]) -> str:
        raise NotImplementedError

    def target(self, items: list[str]) -> str:
        raise NotImplementedError

    def items(self, question: str) -> list[str]:
        """Recover the items (words) from a question written by `question()`."""
        match = re.search(r'"([^"]*)"', question)
        if not match:
            raise ValueError(f"{self.name}: cannot find the quoted words in question {question!r}")
        return match.group(1).split()

    # ---- solutions ------------------------------------------------------------------------
    def steps(self, items: list[str]) -> list[str]:
        """Lines of the reference step-by-step solution; the last is "The answer is X."."""
        raise NotImplementedError

    def solve(self, problem: Problem) -> str:
        return "\n".join(self.steps(self.items(problem.question)))

    def extract_answer(self, solution: str) -> str | None:
        found = ANSWER_RE.findall(solution)
        return _norm(found[-1]) if found else None

    def is_correct(self, problem: Problem, solution: str) -> bool:
        answer = self.extract_answer(solution)
        return answer is not None and answer == _norm(problem.target)

    def corrupt(self, problem: Problem, rng: random.Random) -> tuple[str, int]:
        """A wrong solution with a planted error; returns (solution, 1-based first wrong step)."""
        raise NotImplementedError

    # ---- oracle rationale -----------------------------------------------------------------
    @property
    def has_long_answers(self) -> bool:
        """Whether this task writes `long_answer` negatives (`long_negatives_per_problem`)."""
        return type(self).long_answer is not Task.long_answer

    def long_answer(self, problem: Problem, rng: random.Random) -> str:
        """The reference solution with extra items appended to its final answer: a wrong candidate
        whose answer is longer than the list. Tasks without one say so."""
        raise ValueError(f"task {self.name!r} has no long-answer negatives: set long_negatives_per_problem to 0")

    def rationale(self, problem: Problem, solution: str, rows: str = "all") -> Rationale:
        """The verification a program writes: the solution as it should be, step by step, derived from
        the question alone, then the final answers compared.

            " boat: t, so t.
            boat star: r, so tr.
            star ": end.
            So the answer should be tr; the solution's answer is kr. Wrong.
            Verification: Is the answer correct (Yes/No)? No

        Why this shape (docs/experiments.md has the runs): with the solution's step written before the
        expected one, copying the solution was the cheapest fit; with every step graded against the
        solution's, the 0.57 M verifier derived its steps well but did not learn to compare aligned
        steps (its verdicts matched the program's on 36-60% of rationales). Here the verdict agrees with
        the answer checker by construction (the paper's labels), but on last-letter the 0.57 M verifier
        did not learn the final comparison of two whole answers (52%, runs Q0 and L4 in
        docs/experiments.md), so both built-in tasks override this with rows that each make one
        lookup and one comparison (`LastLetterTask`, `WordSortTask`); this stays the default for a
        task that only defines its steps."""
        if rows not in self.row_layouts:
            raise ValueError(f"task {self.name!r} writes no answer rows; rationale_rows must be one of "
                             f"{list(self.row_layouts)}, got {rows!r}")
        items = self.items(problem.question)
        derived = [_norm(x) for x in self.steps(items)[:-1]]
        answer = self.extract_answer(solution)
        correct = self.is_correct(problem, solution)
        given = f"the solution's answer is {answer}" if answer else "the solution gives no answer"
        lines = derived + [f"So the answer should be {_norm(problem.target)}; {given}. {'Correct.' if correct else 'Wrong.'}",
                           f"{VERDICT_CUE} {'Yes' if correct else 'No'}"]
        return Rationale("\n".join(lines), correct, None if correct else self.first_wrong_step(problem, solution))

    def row_rationale(self, problem: Problem, solution: str, given: list[str], want: list[str],
                      derivation: list[str] = (), rows: str = "all") -> Rationale:
        """The row-by-row verification both built-in tasks write: the `derivation` lines (if any), one
        row `{given}/{want}{+|-}` per position of the longer of the two (`_` where one side has
        none), then the verdict. The verdict is the answer checker's (the paper's labels); with
        `want` the reference answer's items it is also "no `-` row".

        `rows="ends"` compares `end_positions` of both sides instead: always six rows, three from
        the start and three from the end, so no row ever looks further than the third item from an
        end of the list, whatever its length (docs/experiments.md, E1).

        `rows="spelled"` (items that are words) names both words and then compares their first and
        their last letters, a mark each: `tent/frog t/f- t/g-`. A mark compares two of 26 letters
        instead of two of 300 single-token words (docs/experiments.md, W7). The verdict stays the
        answer checker's; two different words with the same first and last letters (under 1% of
        wrong answers) make a wrong answer whose rows are all `+`."""
        if rows not in self.row_layouts:
            raise ValueError(f"rationale_rows must be one of {list(self.row_layouts)} for {self.name}, got {rows!r}")
        if rows == "ends":
            given, want = end_positions(given), end_positions(want)
        marks = []
        for i in range(max(len(given), len(want))):
            got, expected = (given[i] if i < len(given) else "_"), (want[i] if i < len(want) else "_")
            if rows == "spelled":
                marks.append(f"{got}/{expected}" + "".join(
                    f" {got[end]}/{expected[end]}{'+' if got[end] == expected[end] else '-'}" for end in (0, -1)))
            else:
                marks.append(f"{got}/{expected}{'+' if got == expected else '-'}")
        return self.checked_rationale(problem, solution, [*derivation, *marks])

    def checked_rationale(self, problem: Problem, solution: str, lines: list[str]) -> Rationale:
        """`lines` followed by the answer checker's verdict (`Correct.`/`Wrong.` and the verdict cue):
        the ending every row layout shares."""
        correct = self.is_correct(problem, solution)
        lines = [*lines, "Correct." if correct else "Wrong.", f"{VERDICT_CUE} {'Yes' if correct else 'No'}"]
        return Rationale("\n".join(lines), correct, None if correct else self.first_wrong_step(problem, solution))

    def step_result(self, line: str) -> str:
        """The part of a solution line the answer depends on (for locating a solution's first wrong
        step). Default: the line."""
        return line

    def first_wrong_step(self, problem: Problem, solution: str) -> int | None:
        """1-based index of the first line whose result differs from the reference's, or None."""
        expected = [_norm(x) for x in self.steps(self.items(problem.question))]
        got = [line for line in (_norm(x) for x in solution.strip().splitlines()) if line]
        for i in range(max(len(expected), len(got))):
            if i >= len(expected) or i >= len(got) or self.step_result(got[i]) != self.step_result(expected[i]):
                return i + 1
        return None
