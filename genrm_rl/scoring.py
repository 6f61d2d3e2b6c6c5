"""Scoring maths as pure functions, unit-tested on hand-built logits.

GenRM's reward is the probability of " Yes" at the verdict position. We normalise over the two
verdict tokens, p(Yes) / (p(Yes) + p(No)), so that probability mass on other tokens (which a
fine-tuned verifier rarely puts there) cannot shrink every score. GenRM-CoT averages that number
over K sampled rationales. The ORM's reward is sigmoid of its scalar head. The DPO baseline's is
sigmoid of the implicit reward beta * [log pi(y|x) - log pi_ref(y|x)].
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch

from genrm_rl.prompts import NO, YES


@dataclasses.dataclass(frozen=True)
class VerdictTokens:
    """How to read a verdict with a given tokenizer.

    After the cue, the completions " Yes" and " No" may share leading tokens (a char-level
    tokenizer shares " "). Those `prefix_ids` are appended to the prompt; the first tokens where
    the two differ (`yes_id`, `no_id`) are the ones compared."""

    prefix_ids: tuple[int, ...]
    yes_id: int
    no_id: int


def verdict_tokens(tokenizer) -> VerdictTokens:
    yes = tokenizer(YES, add_special_tokens=False).input_ids
    no = tokenizer(NO, add_special_tokens=False).input_ids
    n = 0
    while n < min(len(yes), len(no)) and yes[n] == no[n]:
        n += 1
    if n >= len(yes) or n >= len(no):
        raise ValueError(f"tokenizer cannot tell {YES!r} from {NO!r}: {yes} vs {no}")
    return VerdictTokens(tuple(yes[:n]), yes[n], no[n])


def yes_probability(logits: torch.Tensor, yes_id: int, no_id: int) -> torch.Tensor:
    """p(Yes) / (p(Yes) + p(No)) from next-token logits of shape [..., vocab]."""
    pair = logits[..., [yes_id, no_id]].float()
    return torch.softmax(pair, dim=-1)[..., 0]


def yes_probability_from_logprobs(logp_yes: float, logp_no: float) -> float:
    """Same normalisation from two log-probabilities (what vLLM returns)."""
    m = max(logp_yes, logp_no)
    a, b = math.exp(logp_yes - m), math.exp(logp_no - m)
    return a / (a + b)


def aggregate_votes(votes: Sequence[float]) -> float:
    """GenRM-CoT score: the mean of per-rationale p(Yes)."""
    if not votes:
        raise ValueError("cannot aggregate zero votes")
    return float(sum(votes) / len(votes))


def orm_probability(logit: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(logit.float())


def completion_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """Sum of log p(token) over the completion tokens of each row.

    logits [B, T, V] from a forward over input_ids [B, T]; completion_mask [B, T] marks the tokens
    whose probability counts (the prediction of token t comes from position t-1)."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    token_logp = logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return (token_logp * completion_mask[:, 1:].to(token_logp.dtype)).sum(-1)


def dpo_reward(policy_logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """The DPO verifier's score in (0, 1): sigmoid(beta * (log pi - log pi_ref)), in float64 so that
    large implicit rewards still rank instead of all rounding to 1."""
    return torch.sigmoid(beta * (policy_logp.double() - ref_logp.double()))


def sample_next_token(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Sample ids [batch] from logits [batch, vocab] with temperature and nucleus (top-p) filtering."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        cum = sorted_probs.cumsum(dim=-1)
        sorted_probs[(cum - sorted_probs) > top_p] = 0.0  # keep the smallest set with mass >= top_p
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
