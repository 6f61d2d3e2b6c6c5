"""Last-letter concatenation (Wei et al. 2022; the GenRM paper's first algorithmic task).

Solutions walk the word list by content, not by position: each step names the previous word and
the word that follows it in the question, then that word's last letter and the letters so far;
the walk ends when the previous word is followed by the closing quote:

    " coat: t, so t.
    coat dog: g, so tg.
    dog apple: e, so tge.
    apple ": end.
    The answer is tge.

Why: every step is the same local operation (find a word in the question, read the next one), so
a model that learns it on 2-4 words has a chance on 5-6, and a verifier can check each step
against the question alone. Planted errors are near misses of the mistakes a sampled solution
makes: a neighbouring letter, a skipped or repeated word, an early or late end, a dropped letter.
"""

from __future__ import annotations

import random

from genrm_rl.tasks.base import Problem, Rationale, Task, word_list

QUOTE = '"'


class LastLetterTask(Task):
    name = "last_letter"
    lengths = {"train": (2, 4), "val": (2, 4), "test": (5, 6), "mixed": (2, 6)}
    row_layouts = ("all", "ends")

    def question(self, items):
        return f'Take the last letters of the words in "{" ".join(items)}" and concatenate them.'

    def target(self, items):
        return "".join(w[-1] for w in items)

    def steps(self, items, walk=None, letters=None, stop=True, answer=None):
        """The solution for `items`; a corrupted one passes the words it walks (`walk`), their letters,
        whether it ends with the end line, and its final answer."""
        walk = list(items) if walk is None else walk
        letters = [w[-1] for w in walk] if letters is None else letters
        lines, prev, so_far = [], QUOTE, ""
        for word, letter in zip(walk, letters, strict=True):
            so_far += letter
            lines.append(f"{prev} {word}: {letter}, so {so_far}.")
            prev = word
        if stop:
            lines.append(f"{prev} {QUOTE}: end.")
        lines.append(f"The answer is {so_far if answer is None else answer}.")
        return lines

    def corrupt(self, problem: Problem, rng: random.Random) -> tuple[str, int]:
        """A near-miss wrong solution and its first wrong step; its final answer is always wrong (a
        wrong step that happens to give the right letters, e.g. a swapped-in word with the same last
        letter, is drawn again), so the planted label agrees with the answer checker."""
        for _ in range(50):
            solution, planted = self._corrupt_once(problem, rng)
            if not self.is_correct(problem, solution):  # graded on results: a same-letter word is not yet wrong
                return solution, self.first_wrong_step(problem, solution) or planted
        raise RuntimeError(f"could not plant an error that changes the answer of {problem.question!r}")

    def _corrupt_once(self, problem: Problem, rng: random.Random) -> tuple[str, int]:
        words = self.items(problem.question)
        n = len(words)
        letters = [w[-1] for w in words]
        kind = rng.choice(["letter", "letter", "skip", "repeat", "early_end", "late_end", "drop", "answer"])
        if kind == "letter":  # a near miss: the second-to-last letter, or a neighbour's last letter
            i = rng.randrange(n)
            options = {words[i][-2]} | {words[j][-1] for j in (i - 1, i + 1) if 0 <= j < n}
            options.discard(letters[i])
            wrong = rng.choice(sorted(options) or [c for c in "etsdnr" if c != letters[i]])
            return self._join(self.steps(words, letters=letters[:i] + [wrong] + letters[i + 1:])), i + 1
        if kind == "skip" and n > 2:  # a word is skipped: the walk jumps over it
            i = rng.randrange(1, n)
            return self._join(self.steps(words, walk=words[:i] + words[i + 1:])), i + 1
        if kind == "repeat":  # a word is taken twice, or a word from elsewhere takes the place of the next
            i = rng.randrange(1, n)
            other = rng.choice([w for w in words if w != words[i]] + [rng.choice(word_list())])
            walk = words[:i] + [other] + words[i + 1:]
            return self._join(self.steps(words, walk=walk)), i + 1
        if kind in ("early_end", "skip") and n > 1:  # the walk stops before the last word
            i = rng.randrange(1, n)
            return self._join(self.steps(words, walk=words[:i])), i + 1
        if kind == "late_end":  # the walk goes on past the last word
            extra = rng.choice([w for w in word_list() if w not in words])
            return self._join(self.steps(words, walk=words + [extra])), n + 1
        lines = self.steps(words)
        joined = "".join(letters)
        if kind == "drop":  # a letter goes missing from the letters so far
            i = rng.randrange(1, n) if n > 1 else 0
            so_far = joined[:i + 1]
            bad = so_far[:-2] + so_far[-1] if len(so_far) > 1 else rng.choice([c for c in "etsdnr" if c != so_far])
            lines[i] = lines[i].rsplit(", so ", 1)[0] + f", so {bad}."
            for j in range(i + 1, n):  # later steps build on the wrong letters
                bad += letters[j]
                lines[j] = lines[j].rsplit(", so ", 1)[0] + f", so {bad}."
            lines[-1] = f"The answer is {bad}."
            return self._join(lines), i + 1
        wrong = joined
        while wrong == joined:  # the answer line does not copy the letters so far
            i = rng.randrange(len(joined))
            wrong = joined[:i] + joined[i + 1:] if rng.random() < 0.5 and len(joined) > 1 else \
                joined[:i] + rng.choice("abcdefghijklmnopqrstuvwxyz") + joined[i + 1:]
        lines[-1] = f"The answer is {wrong}."
        return self._join(lines), n + 2

    def long_answer(self, problem: Problem, rng: random.Random) -> str:
        """The reference walk with 2-4 random letters appended to its answer (`The answer is tgexq.`):
        rows past the list's end are `-`, and answer letters sit further from the rows than any
        right answer of 2-4 words puts them."""
        extra = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 4)))
        lines = self.solve(problem).splitlines()
        lines[-1] = f"The answer is {problem.target}{extra}."
        return self._join(lines)

    def rationale(self, problem: Problem, solution: str, rows: str = "all") -> Rationale:
        """The verification a program writes: one row per position of the solution's answer, with the
        solution's letter, the letter the question asks for there (the last letter of that word) and a
        mark, then the verdict:

            t/t+
            r/d-
            _/e-
            Wrong.
            Verification: Is the answer correct (Yes/No)? No

        `_` fills a position one side does not have, so a short or long answer gets a `-` row. Why this
        shape (docs/experiments.md, S1-S4): the 0.57 M verifier fails at the steps of a written
        derivation that copy words (restating the list or walking it: it copies the candidate's lines),
        and at comparing two whole answers; it succeeds at what the generator already does, reading
        the i-th word's last letter off the question, and at comparing two tokens that sit one token
        apart. Every row is one lookup and one adjacent comparison, and the verdict is "no `-` row".
        The verdict agrees with the answer checker by construction (the paper's labels).

        `rows="ends"`: six rows, the first three and the last three positions (`end_positions`). A row
        of the default layout reads the i-th word, and the verifier, trained on 2-4 words, decides
        at row 4 of a 5-6-word list that the list has ended (docs/experiments.md); with the ends
        layout no row reads further than the third word from either end of the list."""
        items = self.items(problem.question)
        answer = self.extract_answer(solution)
        given = [("?" if ch == " " else ch) for ch in answer] if answer else []
        return self.row_rationale(problem, solution, given, [w[-1] for w in items], rows=rows)

    def step_result(self, line: str) -> str:
        """The letters so far (`so tg.`) of a walk line, `end.` of the end line: what the answer is
        built from; the words a step names and the letter it writes before them are scratch work."""
        if line.startswith("The answer is"):
            return line
        head, sep, tail = line.rpartition(", so ")
        return f"so {tail}" if sep else line.rpartition(": ")[2]

    @staticmethod
    def _join(lines: list[str]) -> str:
        return "\n".join(lines)
