"""The one registry of verifier kinds: how each is trained, how it scores, which model serves it.

Why one table: a verifier kind touches the training objective, the scorer, the reproduction's list
of compared methods and the reward service's rule for which modes one model can answer. Adding a
kind is one row here plus its scorer class (`genrm_rl.verifier.SCORERS`, keyed by `family`) or its
training recipe (`genrm_rl.training.launch`, keyed by `recipe`).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class VerifierKind:
    name: str
    """What the reproduction, its reports and the configs call it."""
    mode: str
    """Scoring mode (`VerifierConfig.mode`, the service's `mode` field)."""
    objective: str | None
    """Training objective (`TrainConfig.objective`); None: used as it is, prompted (LLM-as-a-judge)."""
    recipe: str | None
    """How that objective trains: `sft` (token losses on DeepSpeed ranks), `orm` (scalar head, BCE, same
    ranks) or `dpo` (TRL's DPOTrainer)."""
    family: str
    """Modes of one family are served by one model: a generative verifier answers both `direct` and `cot`."""
    help: str


KINDS: dict[str, VerifierKind] = {k.name: k for k in (
    VerifierKind("genrm_cot", "cot", "genrm_cot", "sft", "generative",
                 "GenRM-CoT: K sampled verification rationales, score = mean p(Yes)"),
    VerifierKind("genrm_direct", "direct", "genrm_direct", "sft", "generative",
                 "GenRM: p(Yes) right after 'Is the answer correct (Yes/No)?'"),
    VerifierKind("orm", "orm", "orm", "orm", "orm", "discriminative ORM: scalar head, class-balanced BCE"),
    VerifierKind("dpo", "dpo", "dpo", "dpo", "dpo", "DPO: implicit reward against the reference model"),
    VerifierKind("llm_judge", "direct", None, None, "generative",
                 "LLM-as-a-judge: the generator asked the same Yes/No question, never trained to verify"),
)}

#: scoring mode -> model family (which modes one loaded model can serve)
MODE_FAMILY: dict[str, str] = {k.mode: k.family for k in KINDS.values()}
#: training objective -> recipe; the generator (SFT on correct solutions) is the one non-verifier objective
OBJECTIVE_RECIPE: dict[str, str] = {**{k.objective: k.recipe for k in KINDS.values() if k.objective},
                                    "generator": "sft"}


def check_choice(value: str, choices, what: str) -> str:
    """`value` if it is one of `choices`, else a ValueError that lists them."""
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")
    return value
