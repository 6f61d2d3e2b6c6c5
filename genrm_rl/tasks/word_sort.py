"""Word sorting (BIG-Bench `word_sorting`; the GenRM paper's second algorithmic task).

The reference solution is a selection sort written out: each step names the words left and picks
the alphabetically first, so every step can be checked on its own. The oracle verification either
does the sort again and compares the answer with it word by word (`rationale`), or, in
`word_sort.yaml`'s layout, finds each question word in the answer and checks the answer's order
without sorting (`matched_rationale`).
"""

from __future__ import annotations

import random

from genrm_rl.tasks.base import Problem, Rationale, Task, word_list


class WordSortTask(Task):
    name = "word_sort"
    lengths = {"train": (2, 4), "val": (2, 4), "test": (5, 6), "mixed": (2, 6)}
    row_layouts = ("all", "ends", "spelled", "matched")

    def question(self, items):
        return f'Sort the words "{" ".join(items)}" alphabetically.'

    def target(self, items):
        return " ".join(sorted(items))

    def steps(self, items, picks=None):
        left = list(items)
        picks = list(picks) if picks is not None else sorted(items)
        lines, chosen = [], []
        for pick in picks:
            lines.append(f"Left: {' '.join(left)}. Pick {pick}.")
            chosen.append(pick)
            if pick in left:
                left.remove(pick)
        lines.append(f"The answer is {' '.join(chosen)}.")
        return lines

    def step_result(self, line: str) -> str:
        """`Pick w.` of a step: the picks make the answer; the list of words left is scratch work."""
        return line[line.index("Pick "):] if line.startswith("Left:") and "Pick " in line else line

    def corrupt(self, problem: Problem, rng: random.Random) -> tuple[str, int]:
        words = self.items(problem.question)
        n, good = len(words), sorted(words)
        kind = rng.choice(["pick", "pick", "drop", "repeat", "foreign", "answer"])
        if kind == "pick":  # a non-minimal word picked at step i, most often the runner-up; later steps follow
            i = rng.randrange(n - 1)
            left = good[i:]
            wrong = left[1] if rng.random() < 0.7 else rng.choice(left[1:])
            rest = sorted(w for w in left if w != wrong)
            return "\n".join(self.steps(words, good[:i] + [wrong] + rest)), i + 1
        if kind == "drop":  # a word vanishes: step i picks the next word instead
            i = rng.randrange(n)
            return "\n".join(self.steps(words, good[:i] + good[i + 1:])), i + 1
        if kind == "repeat":  # a word already picked is picked again in place of the next one
            i = rng.randrange(1, n)
            return "\n".join(self.steps(words, good[:i] + [good[i - 1]] + good[i + 1:])), i + 1
        if kind == "foreign":  # a word that is not in the question takes a word's place, in order
            i = rng.randrange(n)
            lo, hi = (good[i - 1] if i else ""), (good[i + 1] if i + 1 < n else "~")
            fits = [w for w in word_list() if lo < w < hi and w not in words]
            if fits:
                return "\n".join(self.steps(words, good[:i] + [rng.choice(fits)] + good[i + 1:])), i + 1
        lines, order = self.steps(words), list(good)
        i = rng.randrange(n - 1)
        order[i], order[i + 1] = order[i + 1], order[i]
        lines[-1] = f"The answer is {' '.join(order)}."
        return "\n".join(lines), n + 1

    def long_answer(self, problem: Problem, rng: random.Random) -> str:
        """The reference sort with 2-4 words that are not in the question appended to its answer
        (`The answer is barn late autumn tide.`): rows past the list's end are `-`, as on last-letter."""
        words = self.items(problem.question)
        extra = rng.sample([w for w in word_list() if w not in words], rng.randint(2, 4))
        lines = self.steps(words)
        lines[-1] = f"The answer is {' '.join(sorted(words) + extra)}."
        return "\n".join(lines)

    def rationale(self, problem: Problem, solution: str, rows: str = "all") -> Rationale:
        """The verification a program writes: the sort done again from the question (the reference's
        steps), then one row per position of the solution's answer with its word, the word the sort
        put there and a mark, then the verdict:

            Left: autumn late barn. Pick autumn.
            Left: late barn. Pick barn.
            Left: late. Pick late.
            autumn/autumn+
            late/barn-
            barn/late-
            Wrong.
            Verification: Is the answer correct (Yes/No)? No

        Why this shape (docs/experiments.md, W1-W2): rows that each check one answer word by
        searching the question for it (membership, then order with the next word) left every mark at
        its base rate: the 0.57 M verifier copies single-token words well (96% of rows) but does not
        learn to look one up among many. The generator's own sort is a skill the verifier starts
        with, and comparing two words one token apart is the check that worked on last-letter.
        `_` fills a position one side does not have. The verdict is "no `-` row" and agrees with the
        answer checker by construction.

        `rows="spelled"` (W7) writes each row's two words and then a mark for their first letters and
        one for their last: `barn/late b/l- n/e-`. W2's marks, which compare two of 300 single-token
        words, were right on 60% of rows; these compare two of 26 letters, and once learned they
        follow the letters on 99.5% of rows (docs/experiments.md, W7)."""
        items = self.items(problem.question)
        answer = self.extract_answer(solution)
        if rows == "matched":
            return self.matched_rationale(problem, solution, items, answer.split() if answer else [])
        return self.row_rationale(problem, solution, answer.split() if answer else [], sorted(items),
                                  derivation=self.steps(items)[:-1], rows=rows)

    def matched_rationale(self, problem: Problem, solution: str, items: list[str], given: list[str]) -> Rationale:
        """`rows="matched"` (W10): the answer checked against the question without sorting again.

            ready: famous r/f- raven r/r e/a- ready r/r e/e a/a d/d y/y+ ship r/s- +
            raven: famous r/f- raven r/r a/a v/v e/e n/n+ ready r/r a/e- ship r/s- +
            ...
            famous<raven f/r+
            raven<ready r/r a/e+
            ready<ship r/s+
            Correct.
            Verification: Is the answer correct (Yes/No)? Yes

        One row per question word, in the question's order, compares it with each answer word
        letter by letter (`-` as soon as two differ, `_` past a word's end; `+` when every letter
        matches); the row ends `+` if some answer word matched. Answer positions past the list get
        a row headed `_`, which ends `-`. Then one row per adjacent pair of answer words compares their
        letters from the first until two differ, `+` if in order. Why (docs/experiments.md, W10): the
        policy's wrong answers hold a word that is not in the question (95-99% of them), and W7's
        verifier, which sorts again, makes that same mistake in its own sort; every mark here compares
        two letters, the check W7 learned. The verdict is the answer checker's, which is "every row
        `+`" for a question without a repeated word (the task's problems never repeat one)."""
        def spelled(word: str, other: str) -> str:
            marks = []
            for x, y in zip(word.ljust(len(other), "_"), other.ljust(len(word), "_"), strict=True):
                if x != y:
                    return " ".join([*marks, f"{x}/{y}-"])
                marks.append(f"{x}/{y}")
            return " ".join(marks) + "+"

        def ordered(a: str, b: str) -> str:
            marks = []
            for x, y in zip(a, b, strict=False):
                if x != y:
                    return " ".join([*marks, f"{x}/{y}{'+' if x < y else '-'}"])
                marks.append(f"{x}/{y}")
            return " ".join([*marks, "+" if len(a) < len(b) else "-"])  # a prefix of the other, or equal

        lines = []
        for i in range(max(len(items), len(given))):
            head = items[i] if i < len(items) else "_"
            entries = [f"{w} {spelled(head, w)}" if head != "_" else f"{w} _" for w in given]
            found = head in given
            lines.append(" ".join([f"{head}:", *entries, "+" if found else "-"]))
        lines += [f"{a}<{b} {ordered(a, b)}" for a, b in zip(given, given[1:], strict=False)]
        return self.checked_rationale(problem, solution, lines)
