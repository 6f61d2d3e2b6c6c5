"""Prompt formats, rebuilt exactly as in the released GenRM data (genrm-critiques).

Why exact: a verifier trained here must score released data and a model trained on released data
must score ours. The `released` format is the paper's: a three-line instruction header, a blank
line, `Q:`/`A: Let's think step by step.`, the solution, then one of the two verification cues.
`compact` is the same layout without the header; tiny character-level models pay for every
character, and the header carries no information for a model fine-tuned on one format. `chat` puts
the compact layout inside the model's own chat template (the question as the user's turn, the
solution and the verification as the assistant's), for chat-tuned checkpoints; it is built from the
tokenizer, so the template's BOS and turn markers are exactly the model's.

What a verifier reads of a candidate (`verify_input`) is part of the format too: `solution` (the
paper's) or `answer`, only the solution's final-answer line. Why `answer` exists: a tiny verifier
finds the question's words by their distance from the row it is writing, and with the whole
solution in between that distance grows with the list, so rows trained on 2-4 words misread 5-6
(docs/experiments.md, A1-A2). It is recorded with a trained verifier and applied wherever its
prompts are built, so training and scoring can never disagree.
"""

from __future__ import annotations

import dataclasses

ANSWER_CUE = "A: Let's think step by step."
VERDICT_CUE = "Verification: Is the answer correct (Yes/No)?"
COT_CUE = "Verification: Let's verify step by step."
YES, NO = " Yes", " No"
ANSWER_LINE = "The answer is"
VERIFY_INPUTS = ("solution", "answer")


def check_verify_input(value: str, also: tuple[str, ...] = ()) -> None:
    """ValueError unless `value` is one of `VERIFY_INPUTS` (or of `also`, a config's extra choices)."""
    choices = (*also, *VERIFY_INPUTS)
    if value not in choices:
        raise ValueError(f"verify_input must be one of {', '.join(choices)}, got {value!r}")


RELEASED_HEADER = (
    'Solve the math problems and provide step-by-step solutions, ending with "The answer is [Insert Final Answer Here]".\n'
    'When asked "Verification: Is the answer correct (Yes/No)?", respond with " Yes" or " No" based on the answer\'s correctness.\n'
    'When asked "Verification: Let\'s verify step by step.", verify every step of the solution and conclude with '
    '"Verification: Is the answer correct (Yes/No)?" followed by " Yes" or " No".\n\n'
)


def answer_line(solution: str) -> str:
    """The solution's last `The answer is ...` line; a solution without one is read by its last
    non-empty line (what a truncated or malformed candidate ended with)."""
    lines = [line for line in solution.splitlines() if line.strip()]
    answers = [line for line in lines if line.startswith(ANSWER_LINE)]
    return answers[-1] if answers else (lines[-1] if lines else solution)


@dataclasses.dataclass(frozen=True)
class PromptFormat:
    name: str
    header: str
    before: str = ""
    """Text before the header (a chat template's BOS and user-turn opening)."""
    after: str = "\n"
    """Text between the question and the answer cue (a chat template: end of the user's turn and the
    opening of the assistant's)."""
    verify_input: str = "solution"
    """What verification prompts show of a candidate: the whole `solution` or its `answer` line."""

    def __post_init__(self):
        check_verify_input(self.verify_input)

    def shown(self, solution: str) -> str:
        """The part of `solution` a verification prompt shows."""
        return answer_line(solution) if self.verify_input == "answer" else solution

    def generation(self, question: str) -> str:
        """Prompt for solving; the completion is the solution."""
        return f"{self.before}{self.header}Q: {question}{self.after}{ANSWER_CUE}\n"

    def direct(self, question: str, solution: str) -> str:
        """Direct GenRM prompt; the completion is " Yes" or " No"."""
        return f"{self.generation(question)}{self.shown(solution)}\n{VERDICT_CUE}"

    def cot(self, question: str, solution: str) -> str:
        """GenRM-CoT prompt; the completion is a rationale ending in the verdict cue + Yes/No."""
        return f"{self.generation(question)}{self.shown(solution)}\n{COT_CUE}\n"

    def parse(self, prompt: str) -> tuple[str, str, str]:
        """Inverse of `direct`/`cot`: (question, solution, "direct"|"cot")."""
        head = self.before + self.header + "Q: "
        if not prompt.startswith(head):
            raise ValueError(f"prompt does not start with the {self.name!r} header and 'Q: '")
        body = prompt[len(head):]
        question, sep, rest = body.partition(f"{self.after}{ANSWER_CUE}\n")
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
        head = self.before + self.header + "Q: "
        stripped = prompt[len(head):] if prompt.startswith(head) else prompt
        tail = f"{self.after}{ANSWER_CUE}\n"
        if stripped.endswith(tail):
            stripped = stripped[: -len(tail)]
        elif ANSWER_CUE in stripped:
            stripped = stripped.split(f"{self.after}{ANSWER_CUE}")[0].split(f"\n{ANSWER_CUE}")[0]
        return stripped.strip() or prompt


PROMPT_FORMATS = {"released": PromptFormat("released", RELEASED_HEADER), "compact": PromptFormat("compact", "")}
FORMAT_NAMES = ("released", "compact", "chat")
_SLOT = "\x00question\x00"


def chat_format(tokenizer) -> PromptFormat:
    """The compact layout inside `tokenizer`'s chat template: what the template writes before the
    user's message, the message `Q: {question}`, then what it writes to end that turn and open the
    assistant's; the answer cue, the solution and the verification continue the assistant's turn."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError("prompt_format 'chat' needs a tokenizer with a chat template; this model has none "
                         "(use 'compact' or 'released')")
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": f"Q: {_SLOT}"}], tokenize=False,
                                             add_generation_prompt=True)
    before, found, after = rendered.partition(f"Q: {_SLOT}")
    if not found:
        raise ValueError("the tokenizer's chat template does not write the user's message verbatim")
    return PromptFormat("chat", "", before, after)


def get_prompt_format(name: str, tokenizer=None, verify_input: str = "solution") -> PromptFormat:
    """The named format; `chat` is built from the model's tokenizer (its chat template).
    `verify_input`: what its verification prompts show of a candidate (see `PromptFormat`)."""
    if name == "chat":
        fmt = chat_format(tokenizer)
    elif name not in PROMPT_FORMATS:
        raise ValueError(f"unknown prompt format {name!r}; choose one of {', '.join(FORMAT_NAMES)}")
    else:
        fmt = PROMPT_FORMATS[name]
    return fmt if verify_input == fmt.verify_input else dataclasses.replace(fmt, verify_input=verify_input)
