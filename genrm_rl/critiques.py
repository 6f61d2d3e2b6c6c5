"""Loaders for the released GenRM data (genrm-critiques, GSM8K) in its original files.

Two formats (see the data README):
- `{inputs, targets, question_id, model_output_id}` (rm_* direct pairs, critiques_* CoT pairs),
  one .jsonl inside each .zip, read straight from the archive;
- raw `data_collection` .jsonl.gz records with the reference-guided rationale in `verifier_output`.
The paper keeps a raw rationale only when its verdict agrees with the answer checker
(`correctness`); `load_rationales` applies that filter and counts what it drops and why.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

from genrm_rl.prompts import VERDICT_CUE, get_prompt_format

RELEASED_FIELDS = ("inputs", "targets", "question_id", "model_output_id")
RAW_FIELDS = ("question", "question_id", "model_output", "model_output_id", "target", "correctness", "verifier_output")
# Verdict after the released cue, allowing the markdown/HTML emphasis models add around it
# ("**...? No**", "...? <b>Yes</b>"). Other wordings of the question are not verdicts.
VERDICT_RE = re.compile(r"Is the answer correct \(Yes/No\)\?[\s*]*(?:<b>\s*)?(Yes|No)\b")


def parse_verdict(text: str) -> bool | None:
    """The last "Is the answer correct (Yes/No)? Yes|No" in `text`, or None if there is none."""
    found = VERDICT_RE.findall(text)
    return None if not found else found[-1] == "Yes"


def _records(path: str | Path, fields: tuple[str, ...]) -> Iterator[dict]:
    from genrm_rl.records import iter_jsonl

    for _lineno, obj in iter_jsonl(path, fields):
        yield obj


@dataclasses.dataclass
class VerificationExample:
    """One (question, solution) with its label and, for CoT data, a rationale ending in the verdict."""

    question: str
    solution: str
    correct: bool
    rationale: str | None = None
    question_id: int | None = None


def load_released(path: str | Path) -> list[VerificationExample]:
    """rm_* (direct: target " Yes"/" No") or critiques_* (CoT rationale) pairs from a release .zip."""
    fmt = get_prompt_format("released")
    out = []
    for obj in _records(path, RELEASED_FIELDS):
        question, solution, kind = fmt.parse(obj["inputs"])
        target = obj["targets"]
        if kind == "direct":
            if target not in (" Yes", " No"):
                raise ValueError(f"{path}: direct target must be ' Yes' or ' No', got {target!r}")
            out.append(VerificationExample(question, solution, target == " Yes", None, obj["question_id"]))
        else:
            verdict = parse_verdict(target)
            if verdict is None:
                raise ValueError(f"{path}: CoT target without a verdict (question_id {obj['question_id']})")
            out.append(VerificationExample(question, solution, verdict, target, obj["question_id"]))
    return out


@dataclasses.dataclass
class FilterStats:
    total: int = 0
    kept: int = 0
    no_verdict: int = 0
    disagrees: int = 0

    def summary(self) -> str:
        return (f"{self.kept}/{self.total} rationales kept; dropped {self.no_verdict} without a verdict, "
                f"{self.disagrees} whose verdict disagrees with correctness")


def clean_rationale(text: str, verdict: bool) -> str:
    """Cut a raw rationale at its verdict and end it exactly as the released CoT targets do."""
    match = list(VERDICT_RE.finditer(text))[-1]
    body = text[: match.start()]
    body = re.sub(r"[\s*]*(?:<b>)?\s*Verification:[\s*]*$", "", body).rstrip()
    return f"{body}\n\n{VERDICT_CUE} {'Yes' if verdict else 'No'}"


def load_rationales(path: str | Path, keep_disagreeing: bool = False) -> tuple[list[VerificationExample], FilterStats]:
    """Raw data_collection rationales, filtered as in the paper (verdict must match correctness)."""
    stats = FilterStats()
    out = []
    for obj in _records(path, RAW_FIELDS):
        stats.total += 1
        verdict = parse_verdict(obj["verifier_output"])
        correct = bool(obj["correctness"])
        if verdict is None:
            stats.no_verdict += 1
            continue
        if verdict != correct and not keep_disagreeing:
            stats.disagrees += 1
            continue
        stats.kept += 1
        out.append(VerificationExample(obj["question"], obj["model_output"], correct,
                                       clean_rationale(obj["verifier_output"], verdict), obj["question_id"]))
    return out, stats
