"""The per-rank training loop: one function that runs inside a Ray Train worker, under the
`deepspeed`/`torchrun` launchers, or in this process (world size 1).

Resumability: DeepSpeed checkpoints (model, optimizer, scheduler) are written every
`checkpoint_every` steps with a client state holding the step and the data position
(epoch, micro-batch). A restarted job (same output_dir) loads the latest one and skips the
micro-batches already consumed, so it continues where it stopped, not from step 0.
Multi-node: `output_dir` must be on storage every node sees (NFS, Lustre, a mounted bucket).
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

from genrm_rl.training.data import KINDS, Tokenized


def _dist_info() -> tuple[int, int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def _init_distributed(on_gpu: bool) -> None:
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
    torch.distributed.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def collate(batch: list[Tokenized], pad_id: int, device) -> dict[str, torch.Tensor]:
    """Right-pad a micro-batch. SFT labels are padded with -100; ORM labels are one float each."""
    width = max(len(t.input_ids) for t in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    kinds = torch.tensor([t.kind for t in batch], dtype=torch.long)
    orm = batch[0].kind == KINDS["orm"]
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


class TorchEngine:
    """Plain PyTorch (DDP when world > 1) with the engine surface the loop uses; the benchmark
    baseline against which DeepSpeed's overhead is measured."""

    def __init__(self, model, cfg, total_steps: int, world: int, on_gpu: bool):
        self.module = model
        self.model = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8,
                                           weight_decay=cfg.weight_decay)
        warm = max(1, int(cfg.warmup_ratio * total_steps))
        total = max(total_steps, 2)

        def schedule(step):  # same shape as DeepSpeed's WarmupDecayLR
            return min(1.0, (step + 1) / warm) if step < warm else max(0.0, (total - step) / max(1, total - warm))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.grad_accum, self.max_grad_norm = cfg.grad_accum, cfg.max_grad_norm
        self.micro_steps = 0
        self.global_steps = 0
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu else torch.autocast("cpu", enabled=False)

    def __call__(self, **kwargs):
        with self.autocast:
            return self.model(**kwargs)

    def backward(self, loss):
        (loss / self.grad_accum).backward()

    def is_gradient_accumulation_boundary(self) -> bool:
        return (self.micro_steps + 1) % self.grad_accum == 0

    def step(self):
        if self.is_gradient_accumulation_boundary():
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.global_steps += 1
        self.micro_steps += 1

    def get_lr(self):
        return self.scheduler.get_last_lr()

    def save_checkpoint(self, save_dir, tag, client_state):
        if _dist_info()[0] == 0:
            path = Path(save_dir) / tag
            path.mkdir(parents=True, exist_ok=True)
            torch.save({"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict(), "micro_steps": self.micro_steps,
                        "global_steps": self.global_steps, "client_state": client_state}, path / "state.pt")
            (Path(save_dir) / "latest").write_text(tag)
        if torch.distributed.is_initialized():
            torch.distributed.barrier()

    def load_checkpoint(self, load_dir):
        tag = (Path(load_dir) / "latest").read_text().strip()
        state = torch.load(Path(load_dir) / tag / "state.pt", map_location="cpu", weights_only=False)
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.micro_steps, self.global_steps = state["micro_steps"], state["global_steps"]
        return str(Path(load_dir) / tag), state["client_state"]


def _build_engine(model, cfg, ds_config, total_steps, world, on_gpu):
    if cfg.engine == "torch":
        return TorchEngine(model, cfg, total_steps, world, on_gpu)
    import deepspeed

    engine, *_ = deepspeed.initialize(model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
                                      config=ds_config)
    return engine


def _compute_loss(engine, batch, cfg, pos_weight):
    from genrm_rl.training.losses import joint_sft_loss, orm_loss

    if cfg.objective == "orm":
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
                                                       "prompt_format": cfg.data.prompt_format}, indent=2))
        shutil.rmtree(out_dir, ignore_errors=True)
        tmp.rename(out_dir)


def train_worker(payload: dict) -> dict:
    """Entry point of every rank. `payload`: {"cfg": TrainConfig dict, "ds_config": dict,
    "train": [Tokenized], "val": [Tokenized], "pos_weight": float}."""
    from tqdm import tqdm

    from genrm_rl.config import from_dict
    from genrm_rl.modeling import load_tokenizer
    from genrm_rl.training.config import TrainConfig

    cfg = from_dict(TrainConfig, payload["cfg"])
    train, val = payload["train"], payload["val"]
    if not isinstance(train, list):  # a Ray ObjectRef (large datasets travel through the object store)
        import ray

        train, val = ray.get(train), ray.get(val)
    on_gpu = torch.cuda.is_available() and (cfg.ray.use_gpu or cfg.launcher == "local")
    _init_distributed(on_gpu)
    rank, world, local_rank = _dist_info()
    device = torch.device(f"cuda:{local_rank}") if on_gpu else torch.device("cpu")
    if on_gpu:
        torch.cuda.set_device(device)
    elif cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    elif cfg.launcher == "ray":  # Ray reserves CPUs per worker; more threads would oversubscribe them
        torch.set_num_threads(max(1, int(cfg.ray.cpus_per_worker)))
    torch.manual_seed(cfg.seed)

    _record_rank(Path(cfg.output_dir), rank, world, device)
    tokenizer = load_tokenizer(cfg.model, padding_side="right")
    if cfg.objective == "orm":
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(cfg.model, num_labels=1,
                                                                   pad_token_id=tokenizer.pad_token_id)
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(cfg.model)
    model.to(device).train()

    batches_per_epoch = len(epoch_shard(len(train), 0, cfg.seed, rank, world, cfg.micro_batch_size))
    steps_per_epoch = max(1, batches_per_epoch // cfg.grad_accum)
    total_steps = cfg.max_steps or steps_per_epoch * cfg.epochs
    engine = _build_engine(model, cfg, payload["ds_config"], total_steps, world, on_gpu)

    out = Path(cfg.output_dir)
    ckpt_dir = out / "checkpoints"
    step, epoch, micro = 0, 0, 0
    resumed_from = None
    if (ckpt_dir / "latest").is_file():
        path, client = engine.load_checkpoint(str(ckpt_dir))
        if path is not None and client:
            step, epoch, micro = client["step"], client["epoch"], client["micro"]
            resumed_from = step
    writer = None
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tb"))
        with (out / "metrics.jsonl").open("a") as fh:
            fh.write(json.dumps({"event": "start", "step": step, "resumed_from": resumed_from, "world_size": world,
                                 "total_steps": total_steps, "train_examples": len(train)}) + "\n")
        if resumed_from is not None:
            print(f"[train] resumed from checkpoint at step {resumed_from} (epoch {epoch}, micro-batch {micro})",
                  flush=True)

    bar = tqdm(total=total_steps, initial=step, desc=f"train {cfg.objective}", disable=rank != 0, mininterval=5)
    t_last, tokens_since, last = time.time(), 0, {}
    pos_weight = payload.get("pos_weight", 1.0)
    done = step >= total_steps
    while not done:
        batches = epoch_shard(len(train), epoch, cfg.seed, rank, world, cfg.micro_batch_size)
        while micro < len(batches):
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
                row = {"step": step, "epoch": epoch, **metrics, "lr": float(engine.get_lr()[0]),
                       "tokens_per_s": tokens_since / max(now - t_last, 1e-9)}
                t_last, tokens_since = now, 0
                if rank == 0:
                    bar.set_postfix(loss=f"{metrics['loss']:.4f}")
                    with (out / "metrics.jsonl").open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
                    if writer:
                        for k, v in row.items():
                            if isinstance(v, (int, float)) and k != "step":
                                writer.add_scalar(f"train/{k}", v, step)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                engine.save_checkpoint(str(ckpt_dir), tag=f"step-{step}",
                                       client_state={"step": step, "epoch": epoch, "micro": micro})
                if rank == 0:
                    _prune_checkpoints(ckpt_dir, cfg.keep_checkpoints)
            if step >= total_steps:
                done = True
                break
        if not done:
            epoch, micro = epoch + 1, 0
    bar.close()
    if cfg.checkpoint_every and step % cfg.checkpoint_every and resumed_from != step:
        # the final step too, so a later run with a larger max_steps continues from here
        engine.save_checkpoint(str(ckpt_dir), tag=f"step-{step}", client_state={"step": step, "epoch": epoch, "micro": micro})
        if rank == 0:
            _prune_checkpoints(ckpt_dir, cfg.keep_checkpoints)

    val_loss = _validate(engine, val, cfg, tokenizer.pad_token_id, device, pos_weight, rank, world)
    result = {"step": step, "final_loss": last.get("loss"), "val_loss": val_loss, "resumed_from": resumed_from,
              "world_size": world}
    if cfg.export:
        _export(engine, cfg, tokenizer, out / "model", rank)
    if rank == 0:
        with (out / "metrics.jsonl").open("a") as fh:
            fh.write(json.dumps({"event": "end", **result}) + "\n")
        if writer:
            if val_loss is not None:
                writer.add_scalar("val/loss", val_loss, step)
            writer.close()
    return result


def _record_rank(out: Path, rank: int, world: int, device) -> None:
    """Where each rank ran (node, host, pid): placement is checked, not assumed."""
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
         "device": str(device)}))


def _prune_checkpoints(ckpt_dir: Path, keep: int) -> None:
    tags = sorted((p for p in ckpt_dir.glob("step-*") if p.is_dir()), key=lambda p: int(p.name.split("-")[1]))
    for old in tags[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
