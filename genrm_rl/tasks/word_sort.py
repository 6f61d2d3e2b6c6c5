"""Word sorting (BIG-Bench `word_sorting`; the GenRM paper's second algorithmic task).

The reference solution is a selection sort written out: each step names the words left and picks
the alphabetically first, so every step can be checked on its own.
"""

from __future__ import annotations

import random

from genrm_rl.tasks.base import Problem, Task


class WordSortTask(Task):
    name = "word_sort"
    lengths = {"train": (2, 4), "val": (2, 4), "test": (5, 6), "mixed": (2, 6)}

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
        n = len(words)
        kind = rng.choice(["pick", "drop", "answer"])
        if kind == "pick":  # a non-minimal word picked at step i, most often the runner-up; later steps follow
            i = rng.randrange(n - 1)
            good = sorted(words)
            left = sorted(good[i:])
            wrong = left[1] if rng.random() < 0.7 else rng.choice(left[1:])
            rest = sorted(w for w in left if w != wrong)
            return "\n".join(self.steps(words, good[:i] + [wrong] + rest)), i + 1
        if kind == "drop":  # a word vanishes: step i picks the next word instead
            i = rng.randrange(n)
            good = sorted(words)
            return "\n".join(self.steps(words, good[:i] + good[i + 1:])), i + 1
        lines = self.steps(words)
        order = sorted(words)
        i = rng.randrange(n - 1)
        order[i], order[i + 1] = order[i + 1], order[i]
        lines[-1] = f"The answer is {' '.join(order)}."
        return "\n".join(lines), n + 1
