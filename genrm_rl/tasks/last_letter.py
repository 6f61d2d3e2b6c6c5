"""Last-letter concatenation (Wei et al. 2022; the GenRM paper's first algorithmic task)."""

from __future__ import annotations

import random

from genrm_rl.tasks.base import Problem, Task, word_list


class LastLetterTask(Task):
    name = "last_letter"
    lengths = {"train": (2, 4), "val": (2, 4), "test": (5, 6), "mixed": (2, 6)}

    def question(self, items):
        return f'Take the last letters of the words in "{" ".join(items)}" and concatenate them.'

    def target(self, items):
        return "".join(w[-1] for w in items)

    def steps(self, items, letters=None):
        letters = letters if letters is not None else [w[-1] for w in items]
        lines = [f"{w} ends in {c}." for w, c in zip(items, letters, strict=True)]
        joined = "".join(letters)
        lines.append(f"{'+'.join(letters)} = {joined}.")
        lines.append(f"The answer is {joined}.")
        return lines

    def corrupt(self, problem: Problem, rng: random.Random) -> tuple[str, int]:
        words = self.items(problem.question)
        letters = [w[-1] for w in words]
        n = len(words)
        kind = rng.choice(["letter", "skip", "swap_word", "concat", "answer"])
        if kind == "letter":
            i = rng.randrange(n)
            letters[i] = rng.choice([c for c in "abcdefghijklmnopqrstuvwxyz" if c != letters[i]])
            return "\n".join(self.steps(words, letters)), i + 1
        if kind == "skip":  # a step is dropped; the wrong line is where the skipped word should be
            i = rng.randrange(n)
            kept = words[:i] + words[i + 1:]
            return "\n".join(self.steps(kept)), i + 1
        if kind == "swap_word":  # a step uses some other word
            i = rng.randrange(n)
            other = rng.choice([w for w in word_list() if w[-1] != words[i][-1]])
            return "\n".join(self.steps(words[:i] + [other] + words[i + 1:])), i + 1
        lines = self.steps(words)
        joined = "".join(letters)
        wrong = joined
        while wrong == joined:
            chars = list(joined)
            j = rng.randrange(len(chars))
            chars[j] = rng.choice("abcdefghijklmnopqrstuvwxyz")
            if rng.random() < 0.5 and len(chars) > 1:
                chars = chars[:-1]
            wrong = "".join(chars)
        if kind == "concat":
            lines[n] = f"{'+'.join(letters)} = {wrong}."
            lines[n + 1] = f"The answer is {wrong}."
            return "\n".join(lines), n + 1
        lines[n + 1] = f"The answer is {wrong}."
        return "\n".join(lines), n + 2
