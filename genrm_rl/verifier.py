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
    mode: Literal["direct", "cot", "orm", "dpo"] = option(
        "cot", help="direct GenRM, GenRM-CoT, a scalar-head ORM, or a DPO-trained model's implicit reward")
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
    ref_model: str = option("", help="dpo: reference model ('' = the one recorded in the model's genrm_rl.json)")
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
        if self.mode in ("orm", "dpo") and self.backend == "vllm":
            raise ValueError(f"mode {self.mode!r} runs on the transformers backend only (it needs no sampling)")


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


class DPOScorer:
    """The DPO baseline: score = sigmoid(beta * [log pi(solution | question) - log pi_ref(...)]).

    The solution is scored as the completion DPO trained on: the generator prompt, then the solution
    and EOS. beta and the reference model come from the `genrm_rl.json` written at training."""

    def __init__(self, cfg: VerifierConfig):
        import json
        from pathlib import Path

        from genrm_rl.modeling import load_causal_lm, load_tokenizer, resolve_device
        from genrm_rl.prompts import get_prompt_format

        meta_file = Path(cfg.model) / "genrm_rl.json"
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        ref = cfg.ref_model or meta.get("ref_model", "")
        if not ref:
            raise ValueError(f"mode 'dpo' needs the reference model: set ref_model (no 'ref_model' in {meta_file})")
        self.cfg, self.beta = cfg, float(meta.get("beta", 0.1))
        self.fmt = get_prompt_format(cfg.prompt_format)
        self.device = resolve_device(cfg.device)
        self.tokenizer = load_tokenizer(cfg.model, padding_side="right")
        self.policy = load_causal_lm(cfg.model, self.device, cfg.dtype)
        self.ref = load_causal_lm(ref, self.device, cfg.dtype)

    def score(self, items: Sequence[Item], mode: str | None = None, k: int | None = None) -> list[VerificationResult]:
        import torch

        from genrm_rl.scoring import completion_logprobs, dpo_reward

        if mode not in (None, "dpo"):
            raise ValueError(f"a DPO scorer only scores mode 'dpo', got {mode!r}")
        validate_items(items, self.cfg.max_input_chars)
        tok, out = self.tokenizer, []
        eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
        for start in range(0, len(items), self.cfg.batch_size):
            rows = []
            for q, s in items[start:start + self.cfg.batch_size]:
                prompt = tok(self.fmt.generation(q), add_special_tokens=False).input_ids
                rows.append((prompt, tok(s, add_special_tokens=False).input_ids + eos))
            width = max(len(p) + len(c) for p, c in rows)
            ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
            mask, completion = torch.zeros_like(ids), torch.zeros_like(ids)
            for i, (p, c) in enumerate(rows):
                ids[i, : len(p) + len(c)] = torch.tensor(p + c)
                mask[i, : len(p) + len(c)] = 1
                completion[i, len(p): len(p) + len(c)] = 1
            ids, mask, completion = ids.to(self.device), mask.to(self.device), completion.to(self.device)
            with torch.no_grad():
                logp = completion_logprobs(self.policy(input_ids=ids, attention_mask=mask).logits, ids, completion)
                ref_logp = completion_logprobs(self.ref(input_ids=ids, attention_mask=mask).logits, ids, completion)
            for score, (p, c) in zip(dpo_reward(logp, ref_logp, self.beta).tolist(), rows, strict=True):
                out.append(VerificationResult(score, [score], "dpo", prompt_tokens=len(p) + len(c)))
        return out


def orm_input(fmt, question: str, solution: str) -> str:
    """The ORM sees what the generator saw plus the solution (no verification cue)."""
    return fmt.generation(question) + solution


def build_scorer(cfg: VerifierConfig):
    """The scorer for `cfg.mode` (registry by mode; backends have their own registry)."""
    return SCORERS[cfg.mode](cfg)


SCORERS = {"direct": GenerativeVerifier, "cot": GenerativeVerifier, "orm": ORMScorer, "dpo": DPOScorer}
