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

How it reads the question (`question_view`) is recorded the same way: `as_asked` (the paper's), or
`aligned`, for questions with a quoted list of words: the list is hidden (`"..."`) and written twice
on lines of `VIEW_WIDTH` slots, padded with `~` in front, first reversed, then as asked:

    Q: Take the last letters of the words in "..." and concatenate them.
    "~ ~ ~ ~ ~ act above about"
    "~ ~ ~ ~ ~ about above act"

Why: every lookup the tiny verifier learns from 2-4-word lists is a lookup by position. Here a
row that reads the k-th word from either end reads the k-th slot before a line's closing quote, at
the same place whatever the list's length, up to `VIEW_WIDTH` words; the verifier still sees every
word and where the list starts (docs/experiments.md, FW1-FW3).

`ends` writes the same two lines with only the words `ends` rationale rows read: the list's first
`ENDS_WIDTH` words (reversed) and its last ones, on lines of `ENDS_WIDTH` slots:

    Q: Take the last letters of the words in "..." and concatenate them.
    "olive thin jar"                   (of "jar thin olive bread nurse spoon")
    "bread nurse spoon"

Why: on `aligned` lines a 5-6-word list puts words in slots that 2-4-word training lists always
padded, and most trained verifiers read a slot by what surrounds it, so whether a training run reads
5-6-word lists right was a draw (docs/experiments.md, "two probes" and EV1). Here every list of 3 or
more words fills the same slots with words, so a row meets nothing on 5-6 words that training did
not show it. What it gives up: the middle of a list of 7 or more words (no `ends` row reads it), so
`parse` gives back only the first and last `ENDS_WIDTH` words of such a list.
"""

from __future__ import annotations

import dataclasses
import re

from genrm_rl.kinds import check_choice

ANSWER_CUE = "A: Let's think step by step."
VERDICT_CUE = "Verification: Is the answer correct (Yes/No)?"
COT_CUE = "Verification: Let's verify step by step."
YES, NO = " Yes", " No"
ANSWER_LINE = "The answer is"
VERIFY_INPUTS = ("solution", "answer")
QUESTION_VIEWS = ("as_asked", "aligned", "ends")
ENDS_WIDTH = 3
"""Slots of an `ends` view's lines: the words nearest each end, all that `ends` rationale rows read."""
VIEW_WIDTH = 8
"""Slots of an `aligned` view's lines; a longer list gets lines as long as itself."""
_QUOTED = re.compile(r'"([^"]*)"')


def check_view_options(question_view: str, rationale_rows: str, viewed_generation: bool) -> None:
    """The checks every config that sets a question view runs (training data and pipeline stages):
    a known view; an `ends` view only with `ends` rationale rows, since any other rows would read words
    it hides; and generation prompts shown through the view only when the view is not the question
    itself."""
    check_choice(question_view, QUESTION_VIEWS, "question_view")
    if question_view == "ends" and rationale_rows != "ends":
        raise ValueError("question_view 'ends' shows only the words at the list's ends, which only "
                         f"rationale_rows 'ends' reads; got rationale_rows {rationale_rows!r}")
    if viewed_generation and question_view == "as_asked":
        raise ValueError("viewed_generation shows generation prompts through question_view, which is 'as_asked' "
                         "(the question itself): set question_view to 'aligned' or 'ends'")


def aligned_view(question: str, ends: bool = False) -> str:
    """`question` with its first quoted list hidden and written on two right-aligned lines (the list
    reversed, then as asked; see the module docstring). `ends`: the first line holds only the list's
    first `ENDS_WIDTH` words (reversed), the second its last ones. A question without a quoted list
    is returned as it is."""
    match = _QUOTED.search(question)
    if not match or not match.group(1).split():
        return question
    items = match.group(1).split()
    width, first, last = (ENDS_WIDTH, items[:ENDS_WIDTH], items[-ENDS_WIDTH:]) if ends else (VIEW_WIDTH, items, items)
    lines = ['"' + " ".join(["~"] * max(width - len(order), 0) + order) + '"' for order in (first[::-1], last)]
    return "\n".join([question[:match.start()] + '"..."' + question[match.end():], *lines])


def unaligned(text: str) -> str:
    """Inverse of `aligned_view` (text that is not an aligned view is returned as it is; an `ends` view
    of 7 or more words gives its first and last `ENDS_WIDTH` words)."""
    head, sep, rest = text.partition('"..."')
    lines = rest.split("\n")
    if not sep or len(lines) != 3 or not all(_QUOTED.fullmatch(line) for line in lines[1:]):
        return text
    first = [w for w in lines[1][1:-1].split() if w != "~"][::-1]
    last = [w for w in lines[2][1:-1].split() if w != "~"]
    items = first + [w for w in last if w not in first] if first != last else last  # an `ends` view
    return f'{head}"{" ".join(items)}"{lines[0]}'


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
    question_view: str = "as_asked"
    """How verification prompts show the question: `as_asked`, `aligned` or `ends` (see the module
    docstring)."""

    def __post_init__(self):
        check_choice(self.verify_input, VERIFY_INPUTS, "verify_input")
        check_choice(self.question_view, QUESTION_VIEWS, "question_view")

    def shown(self, solution: str) -> str:
        """The part of `solution` a verification prompt shows."""
        return answer_line(solution) if self.verify_input == "answer" else solution

    def generation(self, question: str) -> str:
        """Prompt for solving; the completion is the solution."""
        return f"{self.before}{self.header}Q: {question}{self.after}{ANSWER_CUE}\n"

    def viewed(self, question: str) -> str:
        """The question as this format's `question_view` shows it."""
        return question if self.question_view == "as_asked" else \
            aligned_view(question, ends=self.question_view == "ends")

    def verification_head(self, question: str, solution: str) -> str:
        """What every verifier reads before its cue: the question as this format views it, the
        answer cue and what it shows of the solution (an ORM reads exactly this)."""
        return f"{self.generation(self.viewed(question))}{self.shown(solution)}"

    def direct(self, question: str, solution: str) -> str:
        """Direct GenRM prompt; the completion is " Yes" or " No"."""
        return f"{self.verification_head(question, solution)}\n{VERDICT_CUE}"

    def cot(self, question: str, solution: str) -> str:
        """GenRM-CoT prompt; the completion is a rationale ending in the verdict cue + Yes/No."""
        return f"{self.verification_head(question, solution)}\n{COT_CUE}\n"

    def parse(self, prompt: str) -> tuple[str, str, str]:
        """Inverse of `direct`/`cot`: (question, solution, "direct"|"cot")."""
        head = self.before + self.header + "Q: "
        if not prompt.startswith(head):
            raise ValueError(f"prompt does not start with the {self.name!r} header and 'Q: '")
        body = prompt[len(head):]
        question, sep, rest = body.partition(f"{self.after}{ANSWER_CUE}\n")
        if not sep:
            raise ValueError(f"prompt has no {ANSWER_CUE!r} line")
        if self.question_view != "as_asked":
            question = unaligned(question)
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


def get_prompt_format(name: str, tokenizer=None, verify_input: str = "solution",
                      question_view: str = "as_asked") -> PromptFormat:
    """The named format; `chat` is built from the model's tokenizer (its chat template).
    `verify_input`, `question_view`: what its verification prompts show of a candidate and how they
    show the question (see `PromptFormat`)."""
    if name == "chat":
        fmt = chat_format(tokenizer)
    elif name not in PROMPT_FORMATS:
        raise ValueError(f"unknown prompt format {name!r}; choose one of {', '.join(FORMAT_NAMES)}")
    else:
        fmt = PROMPT_FORMATS[name]
    if (verify_input, question_view) == (fmt.verify_input, fmt.question_view):
        return fmt
    return dataclasses.replace(fmt, verify_input=verify_input, question_view=question_view)
