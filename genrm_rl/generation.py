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
    prompt_format: Literal["released", "compact", "chat"] = option("compact", help="prompt layout")
    device: str = option("auto", help="auto, cpu or cuda")
    seed: int = option(0, help="sampling seed")

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0 to draw distinct candidates")


def sample_solutions(cfg: SampleConfig, questions: Sequence[str], progress: bool = True) -> list[list[str]]:
    """`cfg.n` sampled solutions per question, through the configured backend. With the transformers
    backend, candidate j of a question is the same whatever else is sampled with it."""
    from tqdm import tqdm

    from genrm_rl.backends import BackendSpec, build_backend
    from genrm_rl.modeling import encode
    from genrm_rl.prompts import get_prompt_format

    backend = build_backend(cfg.backend, BackendSpec(model=cfg.model, device=cfg.device, batch_size=cfg.batch_size,
                                                      seed=cfg.seed))
    tok = backend.tokenizer
    fmt = get_prompt_format(cfg.prompt_format, tok)
    prompts = encode(tok, [fmt.generation(q) for q in questions])
    chunk = cfg.batch_size * 4
    out: list[list[str]] = []
    for start in tqdm(range(0, len(prompts), chunk), desc="sample", disable=not progress, mininterval=2):
        for ids in backend.sample(prompts[start:start + chunk], cfg.n, cfg.temperature, cfg.top_p,
                                  cfg.max_new_tokens, cfg.seed):
            out.append([tok.decode(x, skip_special_tokens=True).strip() for x in ids])
    return out


def label_candidates(problems: Sequence[Problem], solutions: Sequence[Sequence[str]]) -> list[Candidate]:
    """Candidate records with the extracted answer and the checker's verdict."""
    out = []
    for problem, sols in zip(problems, solutions, strict=True):
        task = get_task(problem.task)
        for j, sol in enumerate(sols):
            out.append(Candidate(problem.id, j, problem.question, sol, task.extract_answer(sol),
                                 task.is_correct(problem, sol)))
    return out


def planted_candidates(problems: Sequence[Problem], per_problem: int, rng) -> list[Candidate]:
    """The reference solution plus `per_problem - 1` planted near-miss errors for each problem, in a
    shuffled order: a candidate set whose labels are known without any policy (verifier checks)."""
    out = []
    for problem in problems:
        task = get_task(problem.task)
        sols = [task.solve(problem)] + [task.corrupt(problem, rng)[0] for _ in range(per_problem - 1)]
        rng.shuffle(sols)
        out += label_candidates([problem], [sols])
    return out


def solve_rates(model, tokenizer, problems, fmt, max_new_tokens: int, n: int = 1, temperature: float = 0.0,
                seed: int = 0, batch_size: int = 32) -> list[float]:
    """Per problem, the fraction of `n` completions that a model in memory gets right (its task's
    checker); temperature 0 decodes greedily (then n = 1). Sampled accuracy is what RL and Best-of-N act
    on: a policy can be right greedily on every problem and still wrong in most of its samples."""
    from genrm_rl.backends.hf import TransformersBackend
    from genrm_rl.modeling import encode

    if temperature <= 0:
        n = 1
    was_training = model.training
    model.eval()
    backend = TransformersBackend.from_model(model, tokenizer, batch_size)
    prompts = encode(tokenizer, [fmt.generation(p.question) for p in problems])
    samples = backend.sample(prompts, n, temperature, 1.0, max_new_tokens, seed)
    model.train(was_training)
    return [sum(get_task(p.task).is_correct(p, tokenizer.decode(ids, skip_special_tokens=True)) for ids in rows) / n
            for p, rows in zip(problems, samples, strict=True)]


def accuracy(model, tokenizer, problems, fmt, max_new_tokens: int, n: int = 1, temperature: float = 0.0,
             seed: int = 0, batch_size: int = 32) -> float:
    """Mean of `solve_rates` over the problems."""
    rates = solve_rates(model, tokenizer, problems, fmt, max_new_tokens, n, temperature, seed, batch_size)
    return sum(rates) / max(len(rates), 1)


def greedy_accuracy(model, tokenizer, problems, fmt, max_new_tokens: int, batch_size: int = 32) -> float:
    """Fraction of `problems` a model in memory solves with greedy decoding."""
    return accuracy(model, tokenizer, problems, fmt, max_new_tokens, batch_size=batch_size)
