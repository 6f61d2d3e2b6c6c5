"""Inference backends behind one interface, chosen by `VerifierConfig.backend`.

A backend exposes `tokenizer`, `verdict_probs(prompts) -> [p_yes]` (one forward pass per prompt,
read at the verdict position) and `sample_verdicts(prompts, k, ...) -> [[RationaleSample]]`
(K rationales per prompt, each with p(Yes) at its own verdict position). Prompts are token ids.
"""

from __future__ import annotations

import dataclasses
import importlib

BACKENDS = {
    "transformers": "genrm_rl.backends.hf:TransformersBackend",
    "vllm": "genrm_rl.backends.vllm_backend:VLLMBackend",
}


@dataclasses.dataclass
class RationaleSample:
    text: str
    p_yes: float
    reached_verdict: bool
    """False when the cue had to be appended (EOS or max_new_tokens came first)."""
    num_tokens: int
    """Sampled tokens (forced cue tokens excluded)."""
    token_ids: list[int] = dataclasses.field(default_factory=list)
    """Rationale tokens up to the verdict position (p_yes is read right after them)."""


def build_backend(cfg):
    if cfg.backend not in BACKENDS:
        raise ValueError(f"unknown backend {cfg.backend!r}; choose one of {sorted(BACKENDS)}")
    module, _, name = BACKENDS[cfg.backend].partition(":")
    return getattr(importlib.import_module(module), name)(cfg)
