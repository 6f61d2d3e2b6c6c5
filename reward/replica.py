"""One verifier replica: a Ray actor that owns a scorer (model + backend) and scores batches."""

from __future__ import annotations

import os


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
        self.calls += 1
        return [r.to_dict() for r in self.scorer.score([tuple(x) for x in items], mode=mode, k=k)]

    def info(self) -> dict:
        return {"pid": os.getpid(), "calls": self.calls, "mode": self.cfg.mode, "model": self.cfg.model}
