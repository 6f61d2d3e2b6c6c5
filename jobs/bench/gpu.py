"""GPU benchmark with a Gemma-2B-shaped model (random weights; speed does not depend on them).

    genrm-rl bench gpu out=gemma2b.json                       # on a GPU node (no Ray needed)
    genrm-rl bench gpu shape=tiny device=cpu dtype=float32    # smoke run anywhere (= python -m jobs.bench gpu)

Measures (1) GenRM-CoT scoring decode tokens/s at batch 1 and at 512 rows (64 prompts x K=8) with
the project's cached sampling loop, against the memory-bandwidth bound at batch 1
(weight bytes / 3.35 TB/s, H100 SXM HBM3), and against transformers `generate` one request at a
time; (2) joint-loss SFT tokens/s under DeepSpeed ZeRO-2 (bf16, 1 GPU) and its model-FLOPs
utilisation, counting 6 * params * tokens against 989 TFLOP/s dense bf16.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Literal

from genrm_rl.config import option

SHAPES = {
    # Gemma-2B: 18 layers, d=2048, 8 heads x 256, MQA (1 KV head), MLP 16384, vocab 256000.
    "gemma2b": dict(hidden_size=2048, num_hidden_layers=18, num_attention_heads=8, num_key_value_heads=1,
                    head_dim=256, intermediate_size=16384, vocab_size=256000),
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                 head_dim=64, intermediate_size=256, vocab_size=None),
}
HBM_BYTES_PER_S = 3.35e12
PEAK_BF16_FLOPS = 989e12


@dataclasses.dataclass
class GpuBenchConfig:
    shape: Literal["gemma2b", "tiny"] = option("gemma2b", help="model shape (tiny: a CPU smoke run)")
    device: str = option("cuda", help="cuda or cpu")
    dtype: str = option("bfloat16", help="bfloat16, float16 or float32")
    new_tokens: int = option(128, help="decoded tokens per row")
    prompts: int = option(64, help="prompts in the batched decode (x k rows)")
    k: int = option(8, help="rationales per prompt in the batched decode")
    train_steps: int = option(10, help="timed DeepSpeed steps (after 2 warm-up steps)")
    micro_batch: int = option(8, help="training micro-batch")
    seq_len: int = option(1024, help="training sequence length")
    out: str = option("", help="also write the JSON result here")

    def __post_init__(self):
        for name in ("new_tokens", "prompts", "k", "train_steps", "micro_batch", "seq_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def build_model(shape: str, path: Path) -> Path:
    from transformers import AutoModelForCausalLM, GemmaConfig

    from genrm_rl.tiny import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    spec = dict(SHAPES[shape])
    spec["vocab_size"] = spec["vocab_size"] or len(tok)
    config = GemmaConfig(**spec, max_position_embeddings=4096, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def bench_decode(path: Path, device: str, dtype: str, new_tokens: int, prompts: int, k: int) -> dict:
    import torch

    from genrm_rl.backends import BackendSpec
    from genrm_rl.backends.hf import TransformersBackend

    backend = TransformersBackend(BackendSpec(model=str(path), device=device, dtype=dtype, batch_size=prompts))
    params = sum(p.numel() for p in backend.model.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in backend.model.parameters())
    prompt = backend.tokenizer("Q: Take the last letters of the words in \"hawk marble fact\".\nA:",
                               add_special_tokens=False).input_ids
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    out = {"params": params, "weight_bytes": weight_bytes}
    for name, n_prompts, kk in (("batch1", 1, 1), (f"batch{prompts * k}", prompts, k)):
        backend.sample_verdicts([prompt] * n_prompts, k=kk, temperature=1.0, top_p=1.0, max_new_tokens=4, seed=0)
        sync()
        t0 = time.perf_counter()
        res = backend.sample_verdicts([prompt] * n_prompts, k=kk, temperature=1.0, top_p=1.0,
                                      max_new_tokens=new_tokens, seed=1)
        sync()
        dt = time.perf_counter() - t0
        toks = sum(s.num_tokens for g in res for s in g)
        out[name] = {"rows": n_prompts * kk, "tokens_per_s": toks / dt, "seconds": dt}
    # a random model rarely stops early, so every row decodes ~new_tokens tokens
    out["bandwidth_bound_batch1_tokens_per_s"] = HBM_BYTES_PER_S / weight_bytes
    out["batch1_fraction_of_bound"] = out["batch1"]["tokens_per_s"] / out["bandwidth_bound_batch1_tokens_per_s"]
    enc = backend.tokenizer(["x"], return_tensors="pt").to(backend.device)
    backend.model.generate(**enc, max_new_tokens=4, do_sample=True)
    sync()
    t0 = time.perf_counter()
    gen = backend.model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=True,
                                 num_return_sequences=k, pad_token_id=backend.tokenizer.pad_token_id)
    sync()
    out["naive_generate_one_request_k"] = {"tokens_per_s": (gen.shape[1] - enc["input_ids"].shape[1]) * k
                                           / (time.perf_counter() - t0)}
    return out


def bench_train(path: Path, device: str, steps: int, micro_batch: int, seq_len: int) -> dict:
    import torch

    from genrm_rl.config import from_dict
    from genrm_rl.training.config import TrainConfig
    from genrm_rl.training.ds_config import build_deepspeed_config

    cfg = from_dict(TrainConfig, {"model": str(path), "micro_batch_size": micro_batch, "launcher": "local"})
    on_gpu = device.startswith("cuda")
    import deepspeed
    from transformers import AutoModelForCausalLM

    from genrm_rl.training.worker import init_distributed

    init_distributed(on_gpu)
    model = AutoModelForCausalLM.from_pretrained(path).to(device)
    model.gradient_checkpointing_enable()
    ds = build_deepspeed_config(cfg, world_size=1, total_steps=steps + 2, on_gpu=on_gpu)
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=ds)
    params = sum(p.numel() for p in model.parameters())
    ids = torch.randint(5, model.config.vocab_size, (micro_batch, seq_len), device=device)
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    for i in range(steps + 2):
        if i == 2:
            sync()
            t0 = time.perf_counter()
        loss = engine(input_ids=ids, labels=ids).loss
        engine.backward(loss)
        engine.step()
    sync()
    dt = time.perf_counter() - t0
    tps = steps * micro_batch * seq_len / dt
    return {"params": params, "tokens_per_s": tps, "mfu": 6 * params * tps / PEAK_BF16_FLOPS if on_gpu else None,
            "micro_batch": micro_batch, "seq_len": seq_len, "zero_stage": 2}


def run_gpu_bench(cfg: GpuBenchConfig) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = build_model(cfg.shape, Path(tmp) / "model")
        result = {"shape": cfg.shape, "device": cfg.device,
                  "decode": bench_decode(path, cfg.device, cfg.dtype, cfg.new_tokens, cfg.prompts, cfg.k),
                  "train": bench_train(path, cfg.device, cfg.train_steps, cfg.micro_batch, cfg.seq_len)}
    if cfg.out:
        Path(cfg.out).write_text(json.dumps(result, indent=2))
    return result
