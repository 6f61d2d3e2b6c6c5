"""Sampling candidate solutions from a generator and labelling them with the task's checker.

Why: Best-of-N needs N candidates per problem, each marked correct or not by the task's answer
checker (never by a verifier). transformers `generate` on CPU/GPU, or vLLM (n=N) where installed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

from genrm_rl.config import option
from genrm_rl.records import Candidate
from genrm_rl.tasks import Problem, get_task


@dataclasses.dataclass
class SampleConfig:
    model: str = option("", help="generator model directory")
    problems: str = option("", help="problems JSONL")
    out: str = option("candidates.jsonl", help="candidates JSONL to write")
    n: int = option(16, help="candidates per problem")
    temperature: float = option(1.0, help="sampling temperature")
    top_p: float = option(1.0, help="nucleus sampling mass")
    max_new_tokens: int = option(256, help="longest solution in tokens")
    batch_size: int = option(16, help="problems per generate call (x n sequences)")
    backend: Literal["transformers", "vllm"] = option("transformers", help="inference backend")
    prompt_format: Literal["released", "compact"] = option("compact", help="prompt layout")
    device: str = option("auto", help="auto, cpu or cuda")
    seed: int = option(0, help="sampling seed")

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0 to draw distinct candidates")


def sample_solutions(cfg: SampleConfig, questions: Sequence[str], progress: bool = True) -> list[list[str]]:
    """`cfg.n` sampled solutions per question."""
    from genrm_rl.prompts import get_prompt_format

    fmt = get_prompt_format(cfg.prompt_format)
    prompts = [fmt.generation(q) for q in questions]
    if cfg.backend == "vllm":
        return _sample_vllm(cfg, prompts)
    return _sample_hf(cfg, prompts, progress)


def _sample_hf(cfg: SampleConfig, prompts: list[str], progress: bool) -> list[list[str]]:
    import torch
    from tqdm import tqdm

    from genrm_rl.modeling import load_causal_lm, load_tokenizer, resolve_device

    device = resolve_device(cfg.device)
    tok = load_tokenizer(cfg.model, padding_side="left")
    model = load_causal_lm(cfg.model, device)
    torch.manual_seed(cfg.seed)
    out: list[list[str]] = []
    for start in tqdm(range(0, len(prompts), cfg.batch_size), desc="sample", disable=not progress, mininterval=2):
        chunk = prompts[start:start + cfg.batch_size]
        enc = tok(chunk, add_special_tokens=False, padding=True, return_tensors="pt").to(device)
        with torch.no_grad():
            gen = model.generate(**enc, do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p,
                                 max_new_tokens=cfg.max_new_tokens, num_return_sequences=cfg.n,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        texts = tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        out += [[t.strip() for t in texts[i * cfg.n:(i + 1) * cfg.n]] for i in range(len(chunk))]
    return out


def _sample_vllm(cfg: SampleConfig, prompts: list[str]) -> list[list[str]]:
    from vllm import LLM, SamplingParams

    from genrm_rl.modeling import resolve_device

    on_cpu = resolve_device(cfg.device) == "cpu"
    llm = LLM(model=cfg.model, dtype="float32" if on_cpu else "auto", seed=cfg.seed, enforce_eager=on_cpu,
              enable_prefix_caching=True)
    params = SamplingParams(n=cfg.n, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_new_tokens,
                            seed=cfg.seed)
    outs = llm.generate(prompts, params)
    return [[c.text.strip() for c in o.outputs] for o in outs]


def label_candidates(problems: Sequence[Problem], solutions: Sequence[Sequence[str]]) -> list[Candidate]:
    """Candidate records with the extracted answer and the checker's verdict."""
    out = []
    for problem, sols in zip(problems, solutions, strict=True):
        task = get_task(problem.task)
        for j, sol in enumerate(sols):
            out.append(Candidate(problem.id, j, problem.question, sol, task.extract_answer(sol),
                                 task.is_correct(problem, sol)))
    return out
