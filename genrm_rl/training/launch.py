"""Driver side of training: build the data once, then start the ranks.

`launcher: ray` starts `ray.num_workers` DeepSpeed ranks as Ray Train workers (TorchTrainer +
ScalingConfig), so the same job runs on this machine or across many GPU nodes by changing the
config; Ray creates the process group (gloo on CPU, NCCL on GPU) and DeepSpeed joins it.
`launcher: local` runs this process as a rank (world size 1, or whatever `deepspeed`/`torchrun`
set in the environment), which is how a GPU box without Ray trains.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path

from genrm_rl.config import dump_yaml, to_dict
from genrm_rl.training.config import TrainConfig

log = logging.getLogger("genrm_rl.train")


def prepare_data(cfg: TrainConfig):
    """Examples -> tokens -> (train, val, stats, pos_weight). Deterministic for a given config."""
    from genrm_rl.modeling import load_tokenizer
    from genrm_rl.training.data import build_examples, split_val, tokenize_examples

    tokenizer = load_tokenizer(cfg.model, padding_side="right")
    examples, stats = build_examples(cfg.objective, cfg.data, cfg.gen_weight, cfg.gen_weight_mode,
                                     tokenizer.eos_token or "", tokenizer)
    tokens, stats.too_long = tokenize_examples(examples, tokenizer, cfg.data.max_length)
    if not tokens:
        raise ValueError(f"no training examples for objective {cfg.objective!r} ({stats.as_dict()})")
    train, val = split_val(tokens, cfg.data.val_fraction, cfg.seed)
    pos_weight = 1.0
    if cfg.recipe == "orm":
        pos = sum(t.labels[0] for t in train)
        neg = len(train) - pos
        if pos == 0 or neg == 0:
            raise ValueError(f"ORM training needs both correct and incorrect candidates (got {pos} / {neg})")
        pos_weight = neg / pos
    return train, val, stats, pos_weight


def run_training(cfg: TrainConfig) -> dict:
    """Train and export; returns the rank-0 result (step, losses, resumed_from, world_size)."""
    # Workers do not share the driver's working directory (Ray Train chdirs): send absolute paths.
    local_model = Path(cfg.model).expanduser()
    cfg = dataclasses.replace(cfg, output_dir=str(Path(cfg.output_dir).expanduser().resolve()),
                              model=str(local_model.resolve()) if local_model.exists() else cfg.model)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    dump_yaml(cfg, out / "config.yaml")
    t0 = time.time()
    result = _run_dpo(cfg) if cfg.recipe == "dpo" else _run_sft(cfg)
    result["seconds"] = round(time.time() - t0, 1)
    (out / "result.json").write_text(json.dumps(result, indent=2))
    return result


def _run_sft(cfg: TrainConfig) -> dict:
    """The DeepSpeed (or plain PyTorch) SFT/ORM objectives: data once here, then the ranks."""
    from genrm_rl.training.ds_config import build_deepspeed_config, load_template

    out = Path(cfg.output_dir)
    train, val, stats, pos_weight = prepare_data(cfg)
    log.info("data for %s: %d train / %d val examples %s", cfg.objective, len(train), len(val), stats.as_dict())
    (out / "data_stats.json").write_text(json.dumps({**stats.as_dict(), "train": len(train), "val": len(val)}, indent=2))
    template = load_template(cfg.deepspeed.zero_stage, cfg.deepspeed.config_file) if cfg.engine == "deepspeed" else {}
    payload = {"cfg": to_dict(cfg), "train": train, "val": val, "pos_weight": pos_weight}

    if cfg.launcher == "local":
        import torch

        from genrm_rl.training.worker import _dist_info, epoch_shard, train_worker

        world = _dist_info()[1]
        total = _total_steps(cfg, len(train), world, epoch_shard)
        payload["ds_config"] = build_deepspeed_config(cfg, world, total, torch.cuda.is_available(), template) \
            if cfg.engine == "deepspeed" else {}
        return train_worker(payload)
    return _run_ray(cfg, payload, template, len(train))


def _run_dpo(cfg: TrainConfig) -> dict:
    from genrm_rl.modeling import load_tokenizer
    from genrm_rl.training.dpo import preference_pairs, train_dpo

    rows, stats = preference_pairs(cfg, load_tokenizer(cfg.model))
    if not rows:
        raise ValueError(f"no preference pairs for DPO: a question needs a correct and an incorrect solution ({stats})")
    log.info("DPO data: %s", stats)
    (Path(cfg.output_dir) / "data_stats.json").write_text(json.dumps(stats, indent=2))
    if cfg.launcher == "local":
        return train_dpo(to_dict(cfg), rows, stats)
    import ray

    from genrm_rl.runtime import ensure_ray

    ensure_ray(cfg.ray.address)
    task = ray.remote(train_dpo).options(num_cpus=cfg.ray.cpus_per_worker, num_gpus=1 if cfg.ray.use_gpu else 0)
    return ray.get(task.remote(to_dict(cfg), rows, stats))


def _total_steps(cfg: TrainConfig, n_train: int, world: int, epoch_shard) -> int:
    batches = len(epoch_shard(n_train, 0, cfg.seed, 0, world, cfg.micro_batch_size))
    return cfg.max_steps or max(1, batches // cfg.grad_accum) * cfg.epochs


def run_name(cfg: TrainConfig) -> str:
    """Ray Train's run name: stable for one output_dir, so re-running the same job finds its
    checkpoints in storage and resumes."""
    import hashlib

    digest = hashlib.sha1(str(Path(cfg.output_dir).resolve()).encode()).hexdigest()[:10]
    return f"genrm-{cfg.objective}-{digest}"


def _run_ray(cfg: TrainConfig, payload: dict, template: dict, n_train: int) -> dict:
    import ray
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from genrm_rl.runtime import ensure_ray
    from genrm_rl.training.ds_config import build_deepspeed_config
    from genrm_rl.training.worker import epoch_shard, train_worker

    ensure_ray(cfg.ray.address)
    if not (cfg.ray.address or os.environ.get("RAY_ADDRESS")):
        # Ray Train's preemption watcher follows node drains (spot instances, autoscaler downscaling),
        # which a one-machine cluster never has; on every run it only logged a core-worker ERROR
        # about its restart policy. Clusters keep it; RAY_TRAIN_ENABLE_PREEMPTION_WATCHER overrides.
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    world = cfg.ray.num_workers
    total = _total_steps(cfg, n_train, world, epoch_shard)
    payload["ds_config"] = build_deepspeed_config(cfg, world, total, cfg.ray.use_gpu, template) \
        if cfg.engine == "deepspeed" else {}
    # Big token lists go through the object store once instead of being pickled per worker.
    payload["train"], payload["val"] = ray.put(payload["train"]), ray.put(payload["val"])
    resources = {"CPU": cfg.ray.cpus_per_worker}
    if cfg.ray.use_gpu:
        resources["GPU"] = 1
    storage = cfg.ray.storage_path or str((Path(cfg.output_dir) / "ray").resolve())
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=payload,
        torch_config=TorchConfig(backend="nccl" if cfg.ray.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=world, use_gpu=cfg.ray.use_gpu, resources_per_worker=resources,
                                     placement_strategy=cfg.ray.placement_strategy),
        run_config=RunConfig(name=run_name(cfg), storage_path=storage,
                             failure_config=FailureConfig(max_failures=cfg.ray.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=max(1, cfg.keep_checkpoints)),
                             # Ray Train's INFO lines (resources requested, worker group started, each
                             # checkpoint) stay off the console (its system logs in the Ray session
                             # directory keep them); its warnings and our own progress stay on it.
                             logging_config=LoggingConfig(log_level="WARNING")),
    )
    result = trainer.fit()
    model = Path(cfg.output_dir) / "model"
    if cfg.export and result.checkpoint is not None and not (model / "config.json").is_file():
        # rank 0 ran on a node whose disk this driver does not see: take the export from storage
        with result.checkpoint.as_directory() as path:
            shutil.copytree(Path(path) / "model", model)
    final = result.metrics or {}
    if not final.get("final"):
        raise RuntimeError(f"training under Ray finished without its final report (last metrics: {final})")
    return {k: final[k] for k in ("step", "final_loss", "val_loss", "resumed_from", "world_size")}
