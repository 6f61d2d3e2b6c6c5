"""GSM8K: answer extraction and checking only (problems and solutions come from released files)."""

from __future__ import annotations

import re

from genrm_rl.tasks.base import Problem, Task

_NUMBER = r"-?\$?\s*-?[0-9][0-9,]*(?:\.[0-9]+)?"
_PATTERNS = [
    re.compile(r"####\s*(" + _NUMBER + ")"),
    re.compile(r"[Tt]he (?:final )?answer is[:\s]*\**\s*(" + _NUMBER + ")"),
]


def normalize_number(text: str) -> str | None:
    cleaned = text.replace("$", "").replace(",", "").replace(" ", "").rstrip(".")
    try:
        value = float(cleaned)
    except ValueError:
        return None
    return str(int(value)) if value == int(value) else repr(value)


class GSM8KTask(Task):
    name = "gsm8k"
    lengths = {}

    def make_problems(self, split, num, seed=0):
        raise ValueError("gsm8k problems are not generated; load them with genrm_rl.critiques")

    def extract_answer(self, solution: str) -> str | None:
        """Last "#### 81" or "The answer is $81." in the text, normalised ("1,234.0" -> "1234")."""
        for pattern in _PATTERNS:
            found = pattern.findall(solution)
            if found:
                return normalize_number(found[-1])
        return None

    def is_correct(self, problem: Problem, solution: str) -> bool:
        answer = self.extract_answer(solution)
        return answer is not None and answer == normalize_number(problem.target)
