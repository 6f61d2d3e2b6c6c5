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
from genrm_rl.prompts import VERDICT_CUE


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
    mode: str = option("cot", help="direct (GenRM), cot (GenRM-CoT), orm (scalar-head ORM) or dpo (a DPO-trained "
                                   "model's implicit reward); see genrm_rl.kinds")
    k: int = option(8, help="CoT: rationales sampled per item (K=32 in the paper); with `adaptive`, the most")
    adaptive: Literal["none", "mean", "rank", "top"] = option(
        "none", help="CoT adaptive K: sample k_round rationales at a time and stop an item once its mean p(Yes) is "
                     "decided (mean: its interval is on one side of 0.5; rank: it no longer overlaps another "
                     "candidate for the same question, as in a GRPO group; top: it can no longer change which "
                     "candidate of its question scores highest, all Best-of-N needs)")
    k_min: int = option(4, help="adaptive K: rationales every item gets")
    k_round: int = option(4, help="adaptive K: rationales per round")
    adaptive_z: float = option(2.0, help="adaptive K: interval half-width in standard errors of the mean vote")
    adaptive_tol: float = option(0.25, help="adaptive K, rank and top rules: two candidates whose intervals together span at most "
                                            "this are tied (their order does not need more rationales)")
    temperature: float = option(1.0, help="CoT: sampling temperature for rationales")
    top_p: float = option(1.0, help="CoT: nucleus sampling mass")
    max_new_tokens: int = option(512, help="CoT: longest rationale in tokens before the verdict is forced")
    backend: Literal["transformers", "vllm"] = option("transformers", help="inference backend")
    batch_size: int = option(16, help="(question, solution) pairs per forward batch (x K for CoT)")
    prompt_format: Literal["auto", "released", "compact", "chat"] = option(
        "auto", help="auto = what training recorded in the model's genrm_rl.json (else compact); released = the "
                     "paper's header")
    verify_input: Literal["auto", "solution", "answer"] = option(
        "auto", help="what the verifier reads of a candidate: auto = what training recorded in the model's "
                     "genrm_rl.json (else solution); solution = all of it (the paper); answer = its final-answer "
                     "line only (see genrm_rl.prompts)")
    device: str = option("auto", help="auto, cpu or cuda[:i]")
    dtype: str = option("auto", help="auto, float32, bfloat16 or float16")
    seed: int = option(0, help="sampling seed (results are reproducible per batch composition)")
    return_rationales: bool = option(False, help="CoT: include rationale texts in results")
    max_input_chars: int = option(20000, help="reject question+solution longer than this")
    ref_model: str = option("", help="dpo: reference model ('' = the one recorded in the model's genrm_rl.json)")
    vllm_gpu_memory_utilization: float = option(0.5, help="vLLM: fraction of accelerator memory")
    vllm_enforce_eager: bool = option(False, help="vLLM: disable CUDA graphs (needed on CPU)")

    def __post_init__(self):
        from genrm_rl.kinds import MODE_FAMILY, check_choice

        check_choice(self.mode, MODE_FAMILY, "verifier mode")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.k_min < 1 or self.k_round < 1 or self.adaptive_z <= 0 or self.adaptive_tol < 0:
            raise ValueError(f"need k_min >= 1, k_round >= 1, adaptive_z > 0 and adaptive_tol >= 0, got {self.k_min}, "
                             f"{self.k_round}, {self.adaptive_z}, {self.adaptive_tol}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        from genrm_rl.prompts import VERIFY_INPUTS

        check_choice(self.verify_input, ("auto", *VERIFY_INPUTS), "verify_input")
        if MODE_FAMILY[self.mode] != "generative" and self.backend == "vllm":
            raise ValueError(f"mode {self.mode!r} runs on the transformers backend only (it needs no sampling)")


Item = tuple[str, str]


class ItemError(ValueError):
    """A (question, solution) input no verifier can take. `limit` is True when it breaks a size limit
    (the service answers 413) rather than being malformed (422)."""

    def __init__(self, message: str, limit: bool = False):
        super().__init__(message)
        self.limit = limit


def check_items(items, max_chars: int, max_items: int | None = None,
                chars_setting: str = "max_input_chars") -> list[Item]:
    """(question, solution) pairs from pairs or {"question", "solution"} mappings: non-empty strings
    within `max_chars` together. The one input check of every scorer and of the reward service."""
    if not isinstance(items, (list, tuple)):
        raise ItemError(f"'items' must be a list, got {type(items).__name__}")
    if max_items is not None and len(items) > max_items:
        raise ItemError(f"{len(items)} items > max_items={max_items}; split the request", limit=True)
    out = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            missing = [f for f in ("question", "solution") if f not in item]
            if missing:
                raise ItemError(f"items[{i}]: missing field(s) {missing}")
            q, s = item["question"], item["solution"]
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            q, s = item
        else:
            raise ItemError(f"items[{i}]: expected {{'question', 'solution'}} or a (question, solution) pair, "
                            f"got {type(item).__name__}")
        for name, value in (("question", q), ("solution", s)):
            if not isinstance(value, str):
                raise ItemError(f"items[{i}].{name}: expected a string, got {type(value).__name__}")
            if not value.strip():
                raise ItemError(f"items[{i}].{name}: empty string")
        if len(q) + len(s) > max_chars:
            raise ItemError(f"items[{i}]: {len(q) + len(s)} characters > {chars_setting}={max_chars}", limit=True)
        out.append((q, s))
    return out


def recorded_training(model: str) -> dict:
    """What training wrote to `<model>/genrm_rl.json` (objective, prompt_format, ...); {} if nothing."""
    import json
    from pathlib import Path

    path = Path(model) / "genrm_rl.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def resolve_prompt_format(cfg) -> str:
    """`cfg.prompt_format`, where `auto` means the format the model was trained with; a format that
    differs from the recorded one is used as asked, with a warning (a verifier scored in a layout it
    never saw gives quietly wrong scores)."""
    import logging

    recorded = recorded_training(cfg.model).get("prompt_format")
    if cfg.prompt_format == "auto":
        return recorded or "compact"
    if recorded and recorded != cfg.prompt_format:
        logging.getLogger("genrm_rl.verifier").warning(
            "%s was trained with prompt_format %r but is scored with %r", cfg.model, recorded, cfg.prompt_format)
    return cfg.prompt_format


def resolve_verify_input(cfg) -> str:
    """`cfg.verify_input`, where `auto` means what the model was trained to read; another choice is
    used as asked, with a warning, as for the prompt format."""
    import logging

    recorded = recorded_training(cfg.model).get("verify_input")
    if cfg.verify_input == "auto":
        return recorded or "solution"
    if (recorded or "solution") != cfg.verify_input:
        logging.getLogger("genrm_rl.verifier").warning(
            "%s was trained to read the candidate's %s but is scored on its %s", cfg.model, recorded or "solution",
            cfg.verify_input)
    return cfg.verify_input


def verifier_prompt_format(cfg, tokenizer):
    """The prompt format a trained verifier is scored with: its layout, what it reads of a candidate
    and how it reads the question (always as it was trained: a view is not a scoring choice)."""
    from genrm_rl.prompts import get_prompt_format

    view = recorded_training(cfg.model).get("question_view", "as_asked")
    return get_prompt_format(resolve_prompt_format(cfg), tokenizer, resolve_verify_input(cfg), view)


def backend_spec(cfg):
    """The backend-loading fields of a `VerifierConfig` or `SampleConfig`."""
    from genrm_rl.backends import BackendSpec

    return BackendSpec(model=cfg.model, device=cfg.device, dtype=cfg.dtype, batch_size=cfg.batch_size, seed=cfg.seed,
                       vllm_gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
                       vllm_enforce_eager=cfg.vllm_enforce_eager)


def context_errors(lengths: Sequence[int], extra: int, limit: int | None) -> list[str | None]:
    """Per item, why it does not fit the model's context (None if it does): `lengths` are prompt
    tokens, `extra` the tokens scoring adds (rationale, cue, verdict)."""
    if not limit:
        return [None] * len(lengths)
    return [None if n + extra <= limit else
            f"items[{i}]: {n} prompt tokens + {extra} for verification > the model's context of {limit} tokens"
            for i, n in enumerate(lengths)]


def model_context(model: str) -> int | None:
    """The longest sequence the model's config allows (max_position_embeddings), if it says."""
    from transformers import AutoConfig

    return getattr(AutoConfig.from_pretrained(model), "max_position_embeddings", None)


class GenerativeVerifier:
    """GenRM (direct) and GenRM-CoT over a pluggable backend."""

    def __init__(self, cfg: VerifierConfig, backend=None):
        from genrm_rl.backends import build_backend

        self.cfg = cfg
        self.backend = backend or build_backend(cfg.backend, backend_spec(cfg))
        self.tokenizer = self.backend.tokenizer
        self.fmt = verifier_prompt_format(cfg, self.tokenizer)

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        from genrm_rl.modeling import encode

        return encode(self.tokenizer, texts)

    def _prompts(self, items: Sequence[Item], mode: str) -> list[list[int]]:
        build = self.fmt.direct if mode == "direct" else self.fmt.cot
        return self._encode([build(q, s) for q, s in items])

    def _adaptive(self, items: Sequence[Item], prompts: list[list[int]], k: int) -> list:
        """Rationales in rounds until each item's mean vote is decided (`cfg.adaptive`), at most k."""
        from genrm_rl.scoring import adaptive_stops

        cfg, groups = self.cfg, _question_groups(items)

        def decide(samples):
            votes = [[s.p_yes for s in group] for group in samples]
            return adaptive_stops(votes, groups, cfg.adaptive, min(cfg.k_min, k), k, cfg.adaptive_z, tol=cfg.adaptive_tol)

        return self.backend.verdict_rounds(prompts, k, cfg.k_round, cfg.temperature, cfg.top_p, cfg.max_new_tokens,
                                           cfg.seed, decide)

    def too_long(self, items: Sequence[Item], mode: str | None = None, k: int | None = None) -> list[str | None]:
        """Per item, None or why its prompt plus what scoring appends does not fit the model's context."""
        from genrm_rl.scoring import verdict_tokens

        mode = mode or self.cfg.mode
        items = check_items(items, self.cfg.max_input_chars)
        if not hasattr(self, "_context"):
            self._context = model_context(self.cfg.model)
            verdict = len(verdict_tokens(self.tokenizer).prefix_ids) + 1
            cue = len(self.tokenizer("\n" + VERDICT_CUE, add_special_tokens=False).input_ids)
            self._extra = {"direct": verdict, "cot": self.cfg.max_new_tokens + cue + verdict}
        return context_errors([len(p) for p in self._prompts(items, mode)], self._extra[mode], self._context)

    def score(self, items: Sequence[Item], mode: str | None = None, k: int | None = None) -> list[VerificationResult]:
        from genrm_rl.scoring import aggregate_votes

        cfg = self.cfg
        mode = mode or cfg.mode
        k = k or cfg.k
        if mode not in ("direct", "cot"):
            raise ValueError(f"GenerativeVerifier scores mode 'direct' or 'cot', got {mode!r}")
        items = check_items(items, cfg.max_input_chars)
        if not items:
            return []
        prompts = self._prompts(items, mode)
        if mode == "direct":
            probs = self.backend.verdict_probs(prompts)
            return [VerificationResult(p, [p], "direct", prompt_tokens=len(ids)) for p, ids in zip(probs, prompts, strict=True)]
        if cfg.adaptive == "none":
            samples = self.backend.sample_verdicts(prompts, k=k, temperature=cfg.temperature, top_p=cfg.top_p,
                                                   max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
        else:
            samples = self._adaptive(items, prompts, k)
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


def _question_groups(items: Sequence[Item]) -> list[int]:
    index: dict[str, int] = {}
    return [index.setdefault(q, len(index)) for q, _ in items]


class ORMScorer:
    """Discriminative outcome reward model: a scalar head on the LM, reward = sigmoid(logit)."""

    def __init__(self, cfg: VerifierConfig):
        from genrm_rl.modeling import load_scalar_head_model, load_tokenizer, resolve_device

        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.tokenizer = load_tokenizer(cfg.model, padding_side="left")
        self.fmt = verifier_prompt_format(cfg, self.tokenizer)
        self.model = load_scalar_head_model(cfg.model, self.device, cfg.dtype, self.tokenizer.pad_token_id)
        self.context = getattr(self.model.config, "max_position_embeddings", None)

    def too_long(self, items: Sequence[Item], mode: str | None = None, k: int | None = None) -> list[str | None]:
        from genrm_rl.modeling import encode

        items = check_items(items, self.cfg.max_input_chars)
        lengths = [len(x) for x in encode(self.tokenizer, [orm_input(self.fmt, q, s) for q, s in items])]
        return context_errors(lengths, 0, self.context)

    def score(self, items: Sequence[Item], mode: str | None = None, k: int | None = None) -> list[VerificationResult]:
        import torch

        from genrm_rl.backends.hf import left_pad
        from genrm_rl.modeling import encode
        from genrm_rl.scoring import orm_probability

        if mode not in (None, "orm"):
            raise ValueError(f"an ORM scorer only scores mode 'orm', got {mode!r}")
        items = check_items(items, self.cfg.max_input_chars)
        texts = [orm_input(self.fmt, q, s) for q, s in items]
        out: list[VerificationResult] = []
        bs = self.cfg.batch_size
        ids_all = encode(self.tokenizer, texts)
        for start in range(0, len(texts), bs):
            ids, mask = left_pad(ids_all[start:start + bs], self.tokenizer.pad_token_id, self.device)
            with torch.no_grad():
                logits = self.model(input_ids=ids, attention_mask=mask).logits[:, 0]
            for p, n in zip(orm_probability(logits).tolist(), mask.sum(-1).tolist(), strict=True):
                out.append(VerificationResult(p, [p], "orm", prompt_tokens=int(n)))
        return out


class DPOScorer:
    """The DPO baseline: score = sigmoid(beta * [log pi(solution | question) - log pi_ref(...)]).

    The solution is scored as the completion DPO trained on: the generator prompt, then the solution
    and EOS. beta and the reference model come from the `genrm_rl.json` written at training."""

    def __init__(self, cfg: VerifierConfig):
        from genrm_rl.modeling import load_causal_lm, load_tokenizer, resolve_device
        from genrm_rl.prompts import get_prompt_format

        meta = recorded_training(cfg.model)
        ref = cfg.ref_model or meta.get("ref_model", "")
        if not ref:
            raise ValueError(f"mode 'dpo' needs the reference model: set ref_model (none recorded in "
                             f"{cfg.model}/genrm_rl.json)")
        self.cfg, self.beta = cfg, float(meta.get("beta", 0.1))
        self.device = resolve_device(cfg.device)
        self.tokenizer = load_tokenizer(cfg.model, padding_side="right")
        self.fmt = get_prompt_format(resolve_prompt_format(cfg), self.tokenizer)
        self.policy = load_causal_lm(cfg.model, self.device, cfg.dtype)
        self.ref = load_causal_lm(ref, self.device, cfg.dtype)
        self.context = getattr(self.policy.config, "max_position_embeddings", None)

    def too_long(self, items: Sequence[Item], mode: str | None = None, k: int | None = None) -> list[str | None]:
        from genrm_rl.modeling import encode

        items = check_items(items, self.cfg.max_input_chars)
        prompts = encode(self.tokenizer, [self.fmt.generation(q) for q, _ in items])
        solutions = self.tokenizer([s for _, s in items], add_special_tokens=False).input_ids
        return context_errors([len(p) + len(c) for p, c in zip(prompts, solutions, strict=True)], 1, self.context)

    def score(self, items: Sequence[Item], mode: str | None = None, k: int | None = None) -> list[VerificationResult]:
        import torch

        from genrm_rl.modeling import encode
        from genrm_rl.scoring import completion_logprobs, dpo_reward

        if mode not in (None, "dpo"):
            raise ValueError(f"a DPO scorer only scores mode 'dpo', got {mode!r}")
        items = check_items(items, self.cfg.max_input_chars)
        tok, out = self.tokenizer, []
        eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
        for start in range(0, len(items), self.cfg.batch_size):
            rows = []
            for q, s in items[start:start + self.cfg.batch_size]:
                prompt = encode(tok, [self.fmt.generation(q)])[0]
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
    """The ORM sees what the generator saw plus the solution, or what `fmt` shows of it (no
    verification cue)."""
    return fmt.verification_head(question, solution)


def score_candidates(scorer, cands, chunk_size: int, progress: bool = True, desc: str = "score"):
    """Score records in chunks with a progress bar; returns Score records in input order.

    A candidate whose solution is empty (a generator that stopped at once) is not a solution: it
    scores 0.0 without a verifier call, which is also what keeps it away from the reward service,
    whose protocol rejects empty text as bad input."""
    from tqdm import tqdm

    from genrm_rl.records import Score

    out = []
    with tqdm(total=len(cands), desc=desc, disable=not progress, mininterval=2, unit="cand") as bar:
        for start in range(0, len(cands), chunk_size):
            chunk = cands[start:start + chunk_size]
            real = [c for c in chunk if c.solution.strip()]
            results = iter(scorer.score([(c.question, c.solution) for c in real]) if real else [])
            for c in chunk:
                if not c.solution.strip():
                    out.append(Score(c.problem_id, c.candidate_id, 0.0, None, None))
                    continue
                r = next(results)
                out.append(Score(c.problem_id, c.candidate_id, r.score, r.votes if r.mode == "cot" else None,
                                 r.rationales))
            bar.update(len(chunk))
    return out


def build_scorer(cfg: VerifierConfig):
    """The scorer for `cfg.mode`: one class per model family (`genrm_rl.kinds`); backends have their own
    registry."""
    from genrm_rl.kinds import MODE_FAMILY

    return SCORERS[MODE_FAMILY[cfg.mode]](cfg)


SCORERS = {"generative": GenerativeVerifier, "orm": ORMScorer, "dpo": DPOScorer}
