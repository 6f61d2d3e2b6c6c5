"""Inference backends behind one interface, chosen by name (`transformers` or `vllm`).

A backend exposes `tokenizer`, `verdict_probs(prompts) -> [p_yes]` (one forward pass per prompt,
read at the verdict position), `sample_verdicts(prompts, k, ...) -> [[RationaleSample]]` (K
rationales per prompt, each with p(Yes) at its own verdict position) and `sample(prompts, n, ...)
-> [[token ids]]` (plain completions: candidate solutions, greedy evaluation). Prompts are token
ids. Every model the project samples from goes through here: the verifier, the generator's
candidates and the held-out accuracy checks.
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


@dataclasses.dataclass(frozen=True)
class BackendSpec:
    """What a backend needs to load a model (a subset of `VerifierConfig` / `SampleConfig`)."""

    model: str
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 16
    seed: int = 0
    vllm_gpu_memory_utilization: float = 0.5
    vllm_enforce_eager: bool = False


def build_backend(name: str, spec: BackendSpec):
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {sorted(BACKENDS)}")
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)(spec)
