"""Training objectives as pure functions (unit-tested on small tensors).

Joint GenRM objective: L = L_verify + λ · L_generate. With `mode="mix"` λ has already been applied
as a data-mixing ratio (the paper's practice) and the loss is the plain token-mean over all
completion tokens. With `mode="loss"` each term is a token-mean over its own examples in the
batch and λ weights the generation term (a batch without one kind contributes 0 for it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token CE per position: logits [B, T, V], labels [B, T] (IGNORE = no loss).

    Returns (loss [B, T-1], mask [B, T-1])."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    mask = shift_labels != IGNORE
    loss = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.clamp(min=0).reshape(-1), reduction="none"
    ).view_as(shift_labels)
    return loss * mask, mask


def joint_sft_loss(logits, labels, kinds, gen_weight: float, mode: str) -> tuple[torch.Tensor, dict[str, float]]:
    """kinds [B]: 0 = verification example, 1 = generation example."""
    loss, mask = token_losses(logits, labels)
    per_kind = {}
    for name, k in (("verify", 0), ("generate", 1)):
        sel = (kinds == k)[:, None] & mask
        n = sel.sum()
        per_kind[name] = (loss * sel).sum() / n.clamp(min=1), int(n)
    if mode == "mix":
        total = loss.sum() / mask.sum().clamp(min=1)
    elif mode == "loss":
        total = per_kind["verify"][0] + gen_weight * per_kind["generate"][0]
    else:
        raise ValueError(f"gen_weight_mode must be 'mix' or 'loss', got {mode!r}")
    metrics = {"loss": float(total.detach()), "tokens": int(mask.sum())}
    for name, (value, n) in per_kind.items():
        if n:
            metrics[f"loss_{name}"] = float(value.detach())
    return total, metrics


def orm_loss(logits: torch.Tensor, labels: torch.Tensor, pos_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Class-balanced BCE on the scalar head: positives weighted by #neg/#pos of the training set."""
    logits = logits.float().view(-1)
    labels = labels.float().view(-1)
    loss = F.binary_cross_entropy_with_logits(logits, labels, pos_weight=torch.tensor(pos_weight, device=logits.device))
    acc = ((logits > 0).float() == labels).float().mean()
    return loss, {"loss": float(loss.detach()), "acc": float(acc), "tokens": 0}
