"""One verifier replica: a Ray actor that owns a scorer (model + backend) and scores batches.

`info` runs in its own concurrency group, so the router's health check is answered while a long
batch is being scored (a busy replica is not a dead one).
"""

from __future__ import annotations

import os

import ray


class VerifierReplica:
    """Created with `ray.remote(VerifierReplica).options(num_cpus=..., num_gpus=...)`."""

    def __init__(self, verifier_cfg: dict, torch_threads: int = 0):
        from genrm_rl.config import from_dict
        from genrm_rl.verifier import VerifierConfig, build_scorer

        if torch_threads:
            import torch

            torch.set_num_threads(torch_threads)
        self.cfg = from_dict(VerifierConfig, verifier_cfg)
        self.scorer = build_scorer(self.cfg)
        self.calls = 0

    def score(self, items: list[tuple[str, str]], mode: str | None, k: int | None) -> list[dict]:
        """One result dict per item, or {"error", "status": 413} for an item that does not fit the
        model's context: one bad item must not fail the other requests batched with it."""
        self.calls += 1
        items = [tuple(x) for x in items]
        errors = self.scorer.too_long(items, mode, k)
        results = iter(self.scorer.score([x for x, e in zip(items, errors, strict=True) if e is None], mode=mode, k=k))
        return [{"error": e.split(": ", 1)[1], "status": 413} if e else next(results).to_dict() for e in errors]

    @ray.method(concurrency_group="health")
    def info(self) -> dict:
        return {"pid": os.getpid(), "calls": self.calls, "mode": self.cfg.mode, "model": self.cfg.model}
