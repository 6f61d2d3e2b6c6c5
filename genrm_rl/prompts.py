"""Prompt formats, rebuilt exactly as in the released GenRM data (genrm-critiques).

Why exact: a verifier trained here must score released data and a model trained on released data
must score ours. The `released` format is the paper's: a three-line instruction header, a blank
line, `Q:`/`A: Let's think step by step.`, the solution, then one of the two verification cues.
`compact` is the same layout without the header; tiny character-level models pay for every
character, and the header carries no information for a model fine-tuned on one format.
"""

from __future__ import annotations

import dataclasses

ANSWER_CUE = "A: Let's think step by step."
VERDICT_CUE = "Verification: Is the answer correct (Yes/No)?"
COT_CUE = "Verification: Let's verify step by step."
YES, NO = " Yes", " No"

RELEASED_HEADER = (
    'Solve the math problems and provide step-by-step solutions, ending with "The answer is [Insert Final Answer Here]".\n'
    'When asked "Verification: Is the answer correct (Yes/No)?", respond with " Yes" or " No" based on the answer\'s correctness.\n'
    'When asked "Verification: Let\'s verify step by step.", verify every step of the solution and conclude with '
    '"Verification: Is the answer correct (Yes/No)?" followed by " Yes" or " No".\n\n'
)


@dataclasses.dataclass(frozen=True)
class PromptFormat:
    name: str
    header: str

    def generation(self, question: str) -> str:
        """Prompt for solving; the completion is the solution."""
        return f"{self.header}Q: {question}\n{ANSWER_CUE}\n"

    def direct(self, question: str, solution: str) -> str:
        """Direct GenRM prompt; the completion is " Yes" or " No"."""
        return f"{self.generation(question)}{solution}\n{VERDICT_CUE}"

    def cot(self, question: str, solution: str) -> str:
        """GenRM-CoT prompt; the completion is a rationale ending in the verdict cue + Yes/No."""
        return f"{self.generation(question)}{solution}\n{COT_CUE}\n"

    def parse(self, prompt: str) -> tuple[str, str, str]:
        """Inverse of `direct`/`cot`: (question, solution, "direct"|"cot")."""
        if not prompt.startswith(self.header + "Q: "):
            raise ValueError(f"prompt does not start with the {self.name!r} header and 'Q: '")
        body = prompt[len(self.header) + 3:]
        question, sep, rest = body.partition(f"\n{ANSWER_CUE}\n")
        if not sep:
            raise ValueError(f"prompt has no {ANSWER_CUE!r} line")
        if rest.endswith(f"\n{COT_CUE}\n"):
            return question, rest[: -len(COT_CUE) - 2], "cot"
        if rest.endswith(f"\n{VERDICT_CUE}"):
            return question, rest[: -len(VERDICT_CUE) - 1], "direct"
        raise ValueError("prompt ends with neither verification cue")

    def question_of(self, prompt: str) -> str:
        """The question inside a generation prompt (lenient: a prompt in another layout, e.g. a chat
        template, is returned with whatever of this layout it has stripped; never empty)."""
        head = self.header + "Q: "
        stripped = prompt[len(head):] if prompt.startswith(head) else prompt
        if stripped.endswith(f"\n{ANSWER_CUE}\n"):
            stripped = stripped[: -len(ANSWER_CUE) - 2]
        elif ANSWER_CUE in stripped:
            stripped = stripped.split(f"\n{ANSWER_CUE}")[0]
        return stripped.strip() or prompt


PROMPT_FORMATS = {"released": PromptFormat("released", RELEASED_HEADER), "compact": PromptFormat("compact", "")}


def get_prompt_format(name: str) -> PromptFormat:
    if name not in PROMPT_FORMATS:
        raise ValueError(f"unknown prompt format {name!r}; choose one of {sorted(PROMPT_FORMATS)}")
    return PROMPT_FORMATS[name]
