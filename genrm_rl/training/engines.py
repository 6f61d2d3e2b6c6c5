"""Training engines with one surface (forward, backward, step, save/load checkpoint): DeepSpeed,
and plain PyTorch (DDP when world > 1), the baseline DeepSpeed's overhead is measured against.

ZeRO-3 builds the model under DeepSpeed's partitioned init (`enable_zero3_init` before
`from_pretrained`), so no rank holds the full model before it is sharded (what a 7B+ verifier needs).
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import sys
from pathlib import Path

import torch

_DS_CONFIGS = []  # HfDeepSpeedConfig objects must outlive from_pretrained for zero.Init to apply
log = logging.getLogger("genrm_rl.train")


class _NotAWarning(logging.Filter):
    """DeepSpeed's WarmupLR/WarmupDecayLR ask themselves for a rate while being built and warn that
    the schedule "has not started" on every run; nothing is wrong and nothing can be done about it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "before it has started" not in record.getMessage()


@contextlib.contextmanager
def _quiet_deepspeed_setup():
    """DeepSpeed's communication layer `print`s a line per op it loads ("... built successfully",
    once or twice per rank per run): they go to the DEBUG log instead. `print` itself is swapped, not
    sys.stdout, because Ray Train workers route `print` to their logger. DeepSpeed's logger keeps the
    stream it captured at import, so its real warnings still reach the console."""
    from deepspeed.utils import logger as ds_logger

    if not any(isinstance(f, _NotAWarning) for f in ds_logger.filters):
        ds_logger.addFilter(_NotAWarning())
    printed, saved = [], builtins.print

    def keep(*objects, sep=" ", end="\n", file=None, flush=False):
        if file not in (None, sys.stdout):
            return saved(*objects, sep=sep, end=end, file=file, flush=flush)
        printed.append(sep.join(map(str, objects)))

    builtins.print = keep
    try:
        yield
    finally:
        builtins.print = saved
        for line in printed:
            log.debug("deepspeed: %s", line)


def enable_zero3_init(cfg, ds_config) -> bool:
    """Under ZeRO-3, make transformers' `from_pretrained` partition each layer as it is built."""
    if cfg.engine != "deepspeed" or cfg.deepspeed.zero_stage != 3:
        return False
    import deepspeed
    from transformers.integrations import HfDeepSpeedConfig

    # DeepSpeed's own comm layer must wrap the process group first: otherwise its config sees a
    # world of 1 and rejects the batch size (train_batch_size 16 != 8 * 1 * 1; measured, 2 ranks).
    with _quiet_deepspeed_setup():
        deepspeed.init_distributed(dist_backend=torch.distributed.get_backend())
    _DS_CONFIGS.append(HfDeepSpeedConfig(ds_config))
    return True


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
        if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
            path = Path(save_dir) / tag
            path.mkdir(parents=True, exist_ok=True)
            torch.save({"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict(), "micro_steps": self.micro_steps,
                        "global_steps": self.global_steps, "client_state": client_state}, path / "state.pt")
            (Path(save_dir) / "latest").write_text(tag)
        if torch.distributed.is_initialized():
            torch.distributed.barrier()

    def load_checkpoint(self, load_dir, tag=None):
        tag = tag or (Path(load_dir) / "latest").read_text().strip()
        state = torch.load(Path(load_dir) / tag / "state.pt", map_location="cpu", weights_only=False)
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.micro_steps, self.global_steps = state["micro_steps"], state["global_steps"]
        return str(Path(load_dir) / tag), state["client_state"]


def build_engine(model, cfg, ds_config, total_steps, world, on_gpu):
    if cfg.engine == "torch":
        return TorchEngine(model, cfg, total_steps, world, on_gpu)
    import deepspeed

    with _quiet_deepspeed_setup():
        engine, *_ = deepspeed.initialize(model=model,
                                          model_parameters=[p for p in model.parameters() if p.requires_grad],
                                          config=ds_config)
    return engine
