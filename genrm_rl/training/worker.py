"""The per-rank training loop: one function that runs inside a Ray Train worker, under the
`deepspeed`/`torchrun` launchers, or in this process (world size 1).

Resumability: DeepSpeed checkpoints (model, optimizer, scheduler) are written every
`checkpoint_every` steps with a client state holding the step and the data position
(epoch, micro-batch), through `genrm_rl.training.checkpoint` (Ray Train's reported checkpoints,
complete or absent). A restarted worker group or a re-run of the job loads the newest one and
skips the micro-batches already consumed, so it continues where it stopped, not from step 0.
Multi-node: checkpoints and the final model travel through Ray Train's `storage_path`; rank 0's
metrics.jsonl and TensorBoard files are written to its `output_dir`.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from pathlib import Path

import torch

from genrm_rl.runtime import free_port
from genrm_rl.training.config import worker_threads
from genrm_rl.training.data import EXAMPLE_KINDS, Tokenized


def _dist_info() -> tuple[int, int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def init_distributed(on_gpu: bool) -> None:
    """Ray Train has already created the process group; `deepspeed`/`torchrun` set env vars only;
    a single process started without a launcher gets a private rendezvous, so no MASTER_ADDR/PORT
    is left in os.environ for processes it starts later."""
    if torch.distributed.is_initialized():
        return
    backend = "nccl" if on_gpu else "gloo"
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        torch.distributed.init_process_group(backend)
        return
    os.environ.setdefault("LOCAL_RANK", "0")  # DeepSpeed's engine reads it from the environment
    torch.distributed.init_process_group(backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)


def collate(batch: list[Tokenized], pad_id: int, device) -> dict[str, torch.Tensor]:
    """Right-pad a micro-batch. SFT labels are padded with -100; ORM labels are one float each."""
    width = max(len(t.input_ids) for t in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    kinds = torch.tensor([t.kind for t in batch], dtype=torch.long)
    orm = batch[0].kind == EXAMPLE_KINDS["orm"]
    labels = torch.tensor([float(t.labels[0]) for t in batch]) if orm else torch.full((len(batch), width), -100, dtype=torch.long)
    for i, t in enumerate(batch):
        n = len(t.input_ids)
        ids[i, :n] = torch.tensor(t.input_ids)
        mask[i, :n] = 1
        if not orm:
            labels[i, :n] = torch.tensor(t.labels)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device), "kinds": kinds.to(device)}


def epoch_shard(n: int, epoch: int, seed: int, rank: int, world: int, micro_bs: int) -> list[list[int]]:
    """This rank's micro-batches for `epoch`: the same permutation on every rank, padded by
    wrapping so every rank gets the same number of batches, then strided by rank."""
    order = list(range(n))
    random.Random(f"epoch/{seed}/{epoch}").shuffle(order)
    per_round = world * micro_bs
    rounds = max(1, math.ceil(n / per_round))
    order = (order * (rounds * per_round // max(n, 1) + 1))[: rounds * per_round]
    mine = order[rank::world]
    return [mine[i:i + micro_bs] for i in range(0, len(mine), micro_bs)]


def _compute_loss(engine, batch, cfg, pos_weight):
    from genrm_rl.training.losses import joint_sft_loss, orm_loss

    if cfg.recipe == "orm":
        logits = engine(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return orm_loss(logits, batch["labels"], pos_weight)
    logits = engine(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return joint_sft_loss(logits, batch["labels"], batch["kinds"], cfg.gen_weight, cfg.gen_weight_mode)


@torch.no_grad()
def _validate(engine, val, cfg, pad_id, device, pos_weight, rank, world) -> float | None:
    if not val:
        return None
    engine.module.eval() if hasattr(engine, "module") else None
    total, count = 0.0, 0
    mine = val[rank::world]
    for i in range(0, len(mine), cfg.micro_batch_size):
        batch = collate(mine[i:i + cfg.micro_batch_size], pad_id, device)
        loss, _ = _compute_loss(engine, batch, cfg, pos_weight)
        total += float(loss) * len(batch["input_ids"])
        count += len(batch["input_ids"])
    stats = torch.tensor([total, count], dtype=torch.float64)
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(stats)
    engine.module.train() if hasattr(engine, "module") else None
    return float(stats[0] / max(stats[1], 1))


def _export(engine, cfg, tokenizer, out_dir: Path, rank: int) -> None:
    """Write a HF model directory (safetensors). ZeRO-3 gathers the sharded weights first."""
    module = engine.module
    state_dict = None
    if cfg.engine == "deepspeed" and cfg.deepspeed.zero_stage == 3:
        state_dict = engine._zero3_consolidated_16bit_state_dict()  # collective: every rank calls it
    if rank == 0:
        tmp = out_dir.with_name(out_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        module.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "genrm_rl.json").write_text(json.dumps({"objective": cfg.objective,
                                                       "prompt_format": cfg.data.prompt_format,
                                                       "verify_input": cfg.data.verify_input,
                                                       "question_view": cfg.data.question_view}, indent=2))
        shutil.rmtree(out_dir, ignore_errors=True)
        tmp.rename(out_dir)


def _setup_rank(cfg) -> tuple[int, int, torch.device, bool]:
    """Join the process group, pick the device and the CPU threads: (rank, world, device, on_gpu)."""
    on_gpu = torch.cuda.is_available() and (cfg.ray.use_gpu or cfg.launcher == "local")
    init_distributed(on_gpu)
    rank, world, local_rank = _dist_info()
    device = torch.device(f"cuda:{local_rank}") if on_gpu else torch.device("cpu")
    if on_gpu:
        torch.cuda.set_device(device)
    elif cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    elif cfg.launcher == "ray":  # Ray reserves CPUs per worker; more threads would oversubscribe them
        torch.set_num_threads(worker_threads(cfg.ray.cpus_per_worker))
    torch.manual_seed(cfg.seed)
    return rank, world, device, on_gpu


def _load_model(cfg, tokenizer, device):
    """The causal LM, or for the ORM the same body with a 1-unit score head."""
    if cfg.recipe == "orm":
        from genrm_rl.modeling import scalar_head_from_pretrained

        model = scalar_head_from_pretrained(cfg.model, pad_token_id=tokenizer.pad_token_id)
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(cfg.model)
    return model.to(device).train()


class _RankZeroLog:
    """metrics.jsonl, TensorBoard and console lines, written by rank 0 only."""

    def __init__(self, cfg, rank: int):
        self.out = Path(cfg.output_dir)
        self.enabled = rank == 0
        self.writer = None
        if self.enabled:
            self.out.mkdir(parents=True, exist_ok=True)
            if cfg.tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.out / "tb"))

    def record(self, row: dict) -> None:
        if not self.enabled:
            return
        with (self.out / "metrics.jsonl").open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        if self.writer and "event" not in row:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.writer.add_scalar(f"train/{k}", v, row["step"])

    def close(self, step: int, val_loss: float | None) -> None:
        if self.writer:
            if val_loss is not None:
                self.writer.add_scalar("val/loss", val_loss, step)
            self.writer.close()


def _train_loop(engine, cfg, train, tokenizer, device, position: dict, total_steps: int, rank: int, world: int,
                log: _RankZeroLog, pos_weight: float, checkpointer) -> dict:
    """Optimizer steps from `position` ({"step", "epoch", "micro"}) to `total_steps`; returns the last
    step's metrics. Checkpoints every `checkpoint_every` steps carry the position, so a resumed run
    skips exactly the micro-batches already consumed."""
    from genrm_rl.runtime import training_bar

    step, epoch, micro = position["step"], position["epoch"], position["micro"]
    name = Path(cfg.output_dir).name  # the pipeline trains genrm_cot twice (λ and λ = 0): the bar says which
    label = cfg.objective if name == cfg.objective else f"{name} ({cfg.objective})"
    bar = training_bar(total_steps, f"train {label}", initial=step, disable=rank != 0)
    t_last, tokens_since, last = time.time(), 0, {}
    while step < total_steps:
        batches = epoch_shard(len(train), epoch, cfg.seed, rank, world, cfg.micro_batch_size)
        while micro < len(batches) and step < total_steps:
            batch = collate([train[i] for i in batches[micro]], tokenizer.pad_token_id, device)
            loss, metrics = _compute_loss(engine, batch, cfg, pos_weight)
            engine.backward(loss)
            boundary = engine.is_gradient_accumulation_boundary()
            engine.step()
            micro += 1
            tokens_since += int(batch["attention_mask"].sum()) * world
            if not boundary:
                continue
            step += 1
            bar.update(1)
            last = metrics
            if step % cfg.log_every == 0 or step == total_steps:
                now = time.time()
                log.record({"step": step, "epoch": epoch, **metrics, "lr": float(engine.get_lr()[0]),
                            "tokens_per_s": tokens_since / max(now - t_last, 1e-9)})
                t_last, tokens_since = now, 0
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", refresh=False)  # shown at the next refresh (mininterval)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < total_steps:
                checkpointer.save(engine, {"step": step, "epoch": epoch, "micro": micro}, {"loss": metrics["loss"]})
            if cfg.export_every and step % cfg.export_every == 0:
                _export(engine, cfg, tokenizer, Path(cfg.output_dir) / "snapshots" / f"step-{step}", rank)
        if step < total_steps:
            epoch, micro = epoch + 1, 0
    bar.close()
    position.update(step=step, epoch=epoch, micro=micro)
    return last


def train_worker(payload: dict) -> dict:
    """Entry point of every rank. `payload`: {"cfg": TrainConfig dict, "ds_config": dict,
    "train": [Tokenized], "val": [Tokenized], "pos_weight": float}."""
    from genrm_rl.config import from_dict
    from genrm_rl.modeling import load_tokenizer, quiet_weight_bars
    from genrm_rl.training.checkpoint import Checkpointer
    from genrm_rl.training.config import TrainConfig
    from genrm_rl.training.engines import build_engine, enable_zero3_init

    cfg = from_dict(TrainConfig, payload["cfg"])
    train, val = payload["train"], payload["val"]
    if not isinstance(train, list):  # a Ray ObjectRef (large datasets travel through the object store)
        import ray

        train, val = ray.get(train), ray.get(val)
    rank, world, device, on_gpu = _setup_rank(cfg)
    out = Path(cfg.output_dir)
    quiet_weight_bars()
    if cfg.launcher == "ray":
        _quiet_ray_train_reports()
    tokenizer = load_tokenizer(cfg.model, padding_side="right")
    enable_zero3_init(cfg, payload["ds_config"])
    model = _load_model(cfg, tokenizer, device)
    _record_rank(out, rank, world, device, **_params_held(model))
    batches_per_epoch = len(epoch_shard(len(train), 0, cfg.seed, rank, world, cfg.micro_batch_size))
    total_steps = cfg.max_steps or max(1, batches_per_epoch // cfg.grad_accum) * cfg.epochs
    engine = build_engine(model, cfg, payload["ds_config"], total_steps, world, on_gpu)

    under_ray = cfg.launcher == "ray"
    checkpointer = Checkpointer(out, cfg.keep_checkpoints, rank, under_ray)
    client = checkpointer.restore(engine)
    position = {k: client[k] for k in ("step", "epoch", "micro")} if client else {"step": 0, "epoch": 0, "micro": 0}
    resumed_from = position["step"] if client else None
    log = _RankZeroLog(cfg, rank)
    log.record({"event": "start", "step": position["step"], "resumed_from": resumed_from, "world_size": world,
                "total_steps": total_steps, "train_examples": len(train)})
    if resumed_from is not None and rank == 0:
        print(f"[train] resumed from checkpoint at step {resumed_from} (epoch {position['epoch']}, "
              f"micro-batch {position['micro']})", flush=True)

    pos_weight = payload.get("pos_weight", 1.0)
    last = _train_loop(engine, cfg, train, tokenizer, device, position, total_steps, rank, world, log, pos_weight,
                       checkpointer)
    val_loss = _validate(engine, val, cfg, tokenizer.pad_token_id, device, pos_weight, rank, world)
    result = {"step": position["step"], "final_loss": last.get("loss"), "val_loss": val_loss,
              "resumed_from": resumed_from, "world_size": world}
    _finish(engine, cfg, tokenizer, checkpointer, position, result, resumed_from, rank)
    log.record({"event": "end", **result})
    log.close(position["step"], val_loss)
    return result


def _quiet_ray_train_reports() -> None:
    """Ray Train logs every `report` (each checkpoint: its path and metrics) at INFO through a logger
    named after its source file, which RunConfig's LoggingConfig(log_level="WARNING") does not reach
    (Ray 2.60); metrics.jsonl and the checkpoint directories hold what those lines said."""
    import logging

    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray layout: its lines stay on the console, nothing else changes
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def rerun_name(restored: str | None) -> str | None:
    """`step-000000010` -> `step-000000010-r1` -> `step-000000010-r2`: the checkpoint name of a re-run
    that resumed at its final step (every rank restored the same checkpoint, so all agree)."""
    if not restored:
        return None
    base, sep, n = restored.rpartition("-r")
    return f"{base}-r{int(n) + 1}" if sep and n.isdigit() else f"{restored}-r1"


def _finish(engine, cfg, tokenizer, checkpointer, position: dict, result: dict, resumed_from, rank: int) -> None:
    """Export the model and checkpoint the final step, so a later run with a larger max_steps
    continues from here. Under Ray the export also travels inside the final checkpoint: the driver
    copies it from storage when `output_dir` is not on a file system it shares with rank 0."""
    import tempfile

    out = Path(cfg.output_dir)
    if checkpointer.under_ray:
        with tempfile.TemporaryDirectory(prefix="genrm-export-") as tmp:
            export = Path(tmp) / "model"
            if cfg.export:
                _export(engine, cfg, tokenizer, export, rank)  # a collective under ZeRO-3
                if rank == 0:
                    shutil.copytree(export, out / "model.tmp", dirs_exist_ok=True)
                    shutil.rmtree(out / "model", ignore_errors=True)
                    (out / "model.tmp").rename(out / "model")
            # A re-run of a finished job trains nothing and reports its final checkpoint again. Under
            # the restored checkpoint's own name, two entries would name one directory and retention
            # would delete it while the newer entry still pointed at it (the next run found a corrupted
            # run: measured, re-running twice); a re-run therefore gets a name of its own.
            name = rerun_name(checkpointer.restored_name) if resumed_from == position["step"] else None
            checkpointer.save(engine, dict(position), {"final": True, **result},
                              extra=(lambda d: shutil.copytree(export, d / "model")) if cfg.export else None, name=name)
        return
    if cfg.checkpoint_every and resumed_from != position["step"]:
        checkpointer.save(engine, dict(position), {})
    if cfg.export:
        _export(engine, cfg, tokenizer, out / "model", rank)


def _params_held(model) -> dict:
    """What one rank holds right after `from_pretrained`: whole tensors, and ZeRO-3 partitions (a
    parameter built under partitioned init is an empty tensor plus this rank's `ds_tensor` slice)."""
    params = list(model.parameters())
    return {"params_total": sum(getattr(p, "ds_numel", p.numel()) for p in params),
            "params_whole_at_load": sum(p.numel() for p in params),
            "params_partition_at_load": sum(p.ds_tensor.numel() for p in params if hasattr(p, "ds_tensor"))}


def _record_rank(out: Path, rank: int, world: int, device, **extra) -> None:
    """Where each rank ran (node, host, pid) and what it held: placement is checked, not assumed."""
    import socket

    node_id = None
    try:
        import ray

        if ray.is_initialized():
            node_id = ray.get_runtime_context().get_node_id()
    except ImportError:
        pass
    (out / "ranks").mkdir(parents=True, exist_ok=True)
    (out / "ranks" / f"rank{rank}.json").write_text(json.dumps(
        {"rank": rank, "world_size": world, "node_id": node_id, "host": socket.gethostname(), "pid": os.getpid(),
         "device": str(device), **extra}))
