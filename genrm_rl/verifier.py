"""The verifier: GenRM (direct), GenRM-CoT and the discriminative ORM behind one scoring interface.

Why one interface: the reward service, the `score` job, RL reward functions and the Best-of-N
evaluator all call `scorer.score([(question, solution), ...]) -> [VerificationResult]` and do not
care which method or backend is behind it.

Rule for CoT samples that never reach a verdict (EOS or `max_new_tokens` first): the verdict cue
is appended to the truncated rationale and p(Yes) is read there, so every item always gets K
votes; `num_forced` counts how often that happened (a high count means `max_new_tokens` is too
small or the verifier is undertrained).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

from genrm_rl.config import option


@dataclasses.dataclass
class VerificationResult:
    """Typed result for one (question, solution) pair."""

    score: float
    """Reward in [0, 1]: p(Yes) (direct), mean p(Yes) over K rationales (CoT), sigmoid (ORM)."""
    votes: list[float]
    """Per-rationale p(Yes) for CoT; a single value otherwise."""
    mode: str
    rationales: list[str] | None = None
    """The sampled rationales (CoT, when requested)."""
    num_forced: int = 0
    """CoT samples that hit EOS/max tokens before the verdict and had the cue appended."""
    prompt_tokens: int = 0
    generated_tokens: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class VerifierConfig:
    """How to build a scorer. Shared by `score`, `serve`, `eval` and the RL reward function."""

    model: str = option("", help="HF model directory (or Hub id) of the verifier")
    mode: Literal["direct", "cot", "orm"] = option("cot", help="direct GenRM, GenRM-CoT, or a scalar-head ORM")
    k: int = option(8, help="CoT: rationales sampled per item (K=32 in the paper)")
    temperature: float = option(1.0, help="CoT: sampling temperature for rationales")
    top_p: float = option(1.0, help="CoT: nucleus sampling mass")
    max_new_tokens: int = option(512, help="CoT: longest rationale in tokens before the verdict is forced")
    backend: Literal["transformers", "vllm"] = option("transformers", help="inference backend")
    batch_size: int = option(16, help="(question, solution) pairs per forward batch (x K for CoT)")
    prompt_format: Literal["released", "compact"] = option("compact", help="released = the paper's header")
    device: str = option("auto", help="auto, cpu or cuda[:i]")
    dtype: str = option("auto", help="auto, float32, bfloat16 or float16")
    seed: int = option(0, help="sampling seed (results are reproducible per batch composition)")
    return_rationales: bool = option(False, help="CoT: include rationale texts in results")
    max_input_chars: int = option(20000, help="reject question+solution longer than this")
    vllm_gpu_memory_utilization: float = option(0.5, help="vLLM: fraction of accelerator memory")
    vllm_enforce_eager: bool = option(False, help="vLLM: disable CUDA graphs (needed on CPU)")

    def __post_init__(self):
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.mode == "orm" and self.backend == "vllm":
            raise ValueError("mode 'orm' runs on the transformers backend only (vLLM has no scalar-head scoring here)")


Item = tuple[str, str]


def validate_items(items: Sequence[Item], max_chars: int) -> None:
    for i, item in enumerate(items):
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(x, str) for x in item)):
            raise ValueError(f"item {i}: expected (question, solution) strings, got {item!r:.80}")
        q, s = item
        if not q.strip() or not s.strip():
            raise ValueError(f"item {i}: question and solution must be non-empty")
        if len(q) + len(s) > max_chars:
            raise ValueError(f"item {i}: {len(q) + len(s)} characters > max_input_chars={max_chars}")


class GenerativeVerifier:
    """GenRM (direct) and GenRM-CoT over a pluggable backend."""

    def __init__(self, cfg: VerifierConfig, backend=None):
        from genrm_rl.backends import build_backend
        from genrm_rl.prompts import get_prompt_format

        self.cfg = cfg
        self.fmt = get_prompt_format(cfg.prompt_format)
        self.backend = backend or build_backend(cfg)
        self.tokenizer = self.backend.tokenizer

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False).input_ids]

    def score(self, items: Sequence[Item], mode: str | None = None, k: int | None = None) -> list[VerificationResult]:
        from genrm_rl.scoring import aggregate_votes

        cfg = self.cfg
        mode = mode or cfg.mode
        k = k or cfg.k
        if mode not in ("direct", "cot"):
            raise ValueError(f"GenerativeVerifier scores mode 'direct' or 'cot', got {mode!r}")
        validate_items(items, cfg.max_input_chars)
        if not items:
            return []
        if mode == "direct":
            prompts = self._encode([self.fmt.direct(q, s) for q, s in items])
            probs = self.backend.verdict_probs(prompts)
            return [VerificationResult(p, [p], "direct", prompt_tokens=len(ids)) for p, ids in zip(probs, prompts, strict=True)]
        prompts = self._encode([self.fmt.cot(q, s) for q, s in items])
        samples = self.backend.sample_verdicts(prompts, k=k, temperature=cfg.temperature, top_p=cfg.top_p,
                                               max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
        results = []
        for ids, group in zip(prompts, samples, strict=True):
            votes = [s.p_yes for s in group]
            results.append(VerificationResult(
                score=aggregate_votes(votes), votes=votes, mode="cot",
                rationales=[s.text for s in group] if cfg.return_rationales else None,
                num_forced=sum(not s.reached_verdict for s in group),
                prompt_tokens=len(ids), generated_tokens=sum(s.num_tokens for s in group),
            ))
        return results


class ORMScorer:
    """Discriminative outcome reward model: a scalar head on the LM, reward = sigmoid(logit)."""

    def __init__(self, cfg: VerifierConfig):
        from genrm_rl.modeling import load_scalar_head_model, load_tokenizer, resolve_device
        from genrm_rl.prompts import get_prompt_format

        self.cfg = cfg
        self.fmt = get_prompt_format(cfg.prompt_format)
        self.device = resolve_device(cfg.device)
        self.tokenizer = load_tokenizer(cfg.model, padding_side="left")
        self.model = load_scalar_head_model(cfg.model, self.device, cfg.dtype, self.tokenizer.pad_token_id)

    def score(self, items: Sequence[Item], mode: str | None = None, k: int | None = None) -> list[VerificationResult]:
        import torch

        from genrm_rl.scoring import orm_probability

        if mode not in (None, "orm"):
            raise ValueError(f"an ORM scorer only scores mode 'orm', got {mode!r}")
        validate_items(items, self.cfg.max_input_chars)
        texts = [orm_input(self.fmt, q, s) for q, s in items]
        out: list[VerificationResult] = []
        bs = self.cfg.batch_size
        for start in range(0, len(texts), bs):
            enc = self.tokenizer(texts[start:start + bs], add_special_tokens=False, padding=True, return_tensors="pt")
            enc = {k_: v.to(self.device) for k_, v in enc.items()}
            with torch.no_grad():
                logits = self.model(**enc).logits[:, 0]
            for p, n in zip(orm_probability(logits).tolist(), enc["attention_mask"].sum(-1).tolist(), strict=True):
                out.append(VerificationResult(p, [p], "orm", prompt_tokens=int(n)))
        return out


def orm_input(fmt, question: str, solution: str) -> str:
    """The ORM sees what the generator saw plus the solution (no verification cue)."""
    return fmt.generation(question) + solution


def build_scorer(cfg: VerifierConfig):
    """The scorer for `cfg.mode` (registry by mode; backends have their own registry)."""
    return SCORERS[cfg.mode](cfg)


SCORERS = {"direct": GenerativeVerifier, "cot": GenerativeVerifier, "orm": ORMScorer}
