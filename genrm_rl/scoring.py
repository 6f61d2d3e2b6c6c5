"""Scoring maths as pure functions, unit-tested on hand-built logits.

GenRM's reward is the probability of " Yes" at the verdict position. We normalise over the two
verdict tokens, p(Yes) / (p(Yes) + p(No)), so that probability mass on other tokens (which a
fine-tuned verifier rarely puts there) cannot shrink every score. GenRM-CoT averages that number
over K sampled rationales. The ORM's reward is sigmoid of its scalar head. The DPO baseline's is
sigmoid of the implicit reward beta * [log pi(y|x) - log pi_ref(y|x)].
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import struct
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


def vote_interval(votes: Sequence[float], z: float, sd_floor: float) -> tuple[float, float, float]:
    """(mean, low, high): mean p(Yes) +- z standard errors, the vote spread floored at `sd_floor` so a
    few identical votes do not claim certainty."""
    m = len(votes)
    mean = sum(votes) / m
    var = sum((v - mean) ** 2 for v in votes) / (m - 1) if m > 1 else 0.25
    half = z * math.sqrt(max(var, sd_floor**2) / m)
    return mean, mean - half, mean + half


def adaptive_stops(votes: Sequence[Sequence[float]], groups: Sequence[int], rule: str, k_min: int, k_max: int,
                   z: float = 2.0, sd_floor: float = 0.1, tol: float = 0.0) -> list[bool]:
    """Which items need no more rationales (adaptive K). `rule`:
    - "mean": the interval of an item's mean p(Yes) lies wholly on one side of 0.5 (its verdict is decided);
    - "rank": it overlaps no other item of its group (same question: a Best-of-N set or a GRPO group),
      so its place in the group's ranking is decided; two items whose intervals together span at most
      `tol` are tied, their order within the tolerance (without it, a group's candidates that share an
      answer, all near p(Yes) = 1, never separate: measured, 99% of fixed-K's rationales);
    - "top": Best-of-N needs only its group's best: an item stops once another item's interval lies
      wholly above its own (it cannot be picked), or once it is above or tied (`tol`) with every other
      item (it is the pick, or as good as the pick);
    - "none": only at k_max.
    An item stops at k_max whatever the rule, and never before k_min."""
    n = [len(v) for v in votes]
    if rule == "none":
        return [m >= k_max for m in n]
    bounds = [vote_interval(v, z, sd_floor) for v in votes]
    stop = []
    for i, (_mean, lo, hi) in enumerate(bounds):
        if n[i] >= k_max:
            stop.append(True)
        elif n[i] < k_min:
            stop.append(False)
        elif rule == "mean":
            stop.append(lo > 0.5 or hi < 0.5)
        elif rule in ("rank", "top"):
            # an identical candidate draws identical votes (seeded by its text): it is the same item
            others = [bounds[j] for j in range(len(votes)) if groups[j] == groups[i] and votes[j] != votes[i]]
            below = [hi < o_lo for _, o_lo, _ in others]
            above_or_tied = [lo > o_hi or max(hi, o_hi) - min(lo, o_lo) <= tol for _, o_lo, o_hi in others]
            if rule == "rank":  # below, above or tied with each other item
                stop.append(all(b or a for b, a in zip(below, above_or_tied, strict=True)))
            else:  # beaten by some item, or above or tied with all
                stop.append(any(below) or all(above_or_tied))
        else:
            raise ValueError(f"adaptive rule must be none, mean, rank or top, got {rule!r}")
    return stop


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


def sample_seed(seed: int, prompt_ids: Sequence[int], index: int) -> int:
    """The seed of sample `index` of a prompt: a hash of the run's seed, the prompt's token ids and the
    index. A sample then depends on what is scored, never on which batch or replica scored it, so
    re-runs reproduce and the first K samples of a K'>K run are exactly a K run's."""
    h = hashlib.blake2b(digest_size=8)
    h.update(struct.pack("<qq", seed, index))
    h.update(struct.pack(f"<{len(prompt_ids)}q", *prompt_ids))
    return int.from_bytes(h.digest(), "little") >> 1  # torch seeds are < 2**63


def row_generators(seeds: Sequence[int], device) -> list[torch.Generator]:
    return [torch.Generator(device=device).manual_seed(s) for s in seeds]


def sample_rows(logits: torch.Tensor, temperature: float, top_p: float,
                generators: Sequence[torch.Generator]) -> torch.Tensor:
    """One token id per row of logits [rows, vocab]: temperature, nucleus (top-p) filtering, then the
    Gumbel-max trick with row r's noise drawn from generators[r] alone, so a row's draw does not
    depend on the rows beside it. temperature 0 is greedy."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    scaled = logits.float() / temperature
    if top_p < 1.0:
        probs = torch.softmax(scaled, dim=-1)
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = (sorted_probs.cumsum(dim=-1) - sorted_probs) > top_p  # keep the smallest set with mass >= top_p
        scaled = scaled.masked_fill(torch.zeros_like(outside).scatter_(-1, order, outside), float("-inf"))
    vocab = logits.shape[-1]
    uniform = torch.stack([torch.rand(vocab, generator=g, device=logits.device) for g in generators])
    gumbel = -torch.log(-torch.log(uniform.clamp(min=1e-12, max=1 - 1e-7)))
    return (scaled + gumbel).argmax(dim=-1)
