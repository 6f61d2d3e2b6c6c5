"""The one function that builds a DeepSpeed config (OpenRLHF style).

Static choices (ZeRO stage, buckets, optimizer family) live in `configs/ds_zero{2,3}.json`; every
"auto" value there is filled from the TrainConfig and the world size here, so batch size, learning
rate and precision are stated once, in the job config.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def load_template(zero_stage: int, config_file: str = "") -> dict:
    path = Path(config_file) if config_file else REPO_CONFIGS / f"ds_zero{max(zero_stage, 2)}.json"
    if not path.is_file():
        raise ValueError(f"DeepSpeed config template not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"DeepSpeed config {path} is not valid JSON: {err}") from err


def build_deepspeed_config(cfg, world_size: int, total_steps: int, on_gpu: bool, template: dict | None = None) -> dict:
    """Fill the template's "auto" values from `cfg` (a TrainConfig)."""
    ds = copy.deepcopy(template if template is not None else load_template(cfg.deepspeed.zero_stage, cfg.deepspeed.config_file))
    precision = cfg.deepspeed.precision if cfg.deepspeed.precision != "auto" else ("bf16" if on_gpu else "fp32")
    fill = {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "gradient_clipping": cfg.max_grad_norm,
    }
    for key, value in fill.items():
        if ds.get(key, "auto") == "auto":
            ds[key] = value
    ds["train_batch_size"] = ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"] * world_size
    ds.setdefault("bf16", {})["enabled"] = precision == "bf16"
    zero = ds.setdefault("zero_optimization", {})
    zero["stage"] = cfg.deepspeed.zero_stage
    if cfg.deepspeed.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
    opt = ds.setdefault("optimizer", {"type": "AdamW", "params": {}})["params"]
    opt["lr"] = cfg.lr if opt.get("lr", "auto") == "auto" else opt["lr"]
    opt["weight_decay"] = cfg.weight_decay if opt.get("weight_decay", "auto") == "auto" else opt["weight_decay"]
    if not on_gpu:
        opt["torch_adam"] = True  # fused Adam is a CUDA kernel; on CPU use torch's AdamW
    sched = ds.get("scheduler", {}).get("params")
    if sched is not None:
        auto = {"warmup_max_lr": cfg.lr, "warmup_num_steps": max(1, int(cfg.warmup_ratio * total_steps)),
                "total_num_steps": max(total_steps, 2)}
        for key, value in auto.items():
            if sched.get(key, "auto") == "auto":
                sched[key] = value
    leftover = [k for k, v in _walk(ds) if v == "auto"]
    if leftover:
        raise ValueError(f"DeepSpeed config has 'auto' values this builder does not fill: {leftover}")
    return ds


def _walk(node, prefix=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{prefix}{k}.")
    else:
        yield prefix.rstrip("."), node
