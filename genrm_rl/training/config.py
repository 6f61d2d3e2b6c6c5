"""Config of the training job (`genrm-rl train`, `python -m jobs.train_genrm`)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from genrm_rl.config import option
from genrm_rl.training.data import TrainDataConfig


def worker_threads(cpus_per_worker: float) -> int:
    """CPU threads of a Ray Train worker that reserved `cpus_per_worker` CPUs (more would oversubscribe them)."""
    return max(1, int(cpus_per_worker))


@dataclasses.dataclass
class RayScaling:
    address: str = option("", help="Ray cluster address ('' = RAY_ADDRESS or a local cluster)")
    num_workers: int = option(2, help="DeepSpeed ranks = Ray Train workers")
    use_gpu: bool = option(False, help="one GPU per worker (NCCL, bf16)")
    cpus_per_worker: float = option(1.0, help="CPUs reserved per worker (fractions allowed)")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = option(
        "PACK", help="STRICT_SPREAD puts every worker on a different node")
    max_failures: int = option(0, help="restart the worker group this many times after a crash (resumes)")
    storage_path: str = option("", help="where Ray Train keeps checkpoints: a local path every node can reach or a "
                                        "cloud URI (s3://..., gs://...; '' = <output_dir>/ray)")

    def __post_init__(self):
        if self.num_workers < 1:
            raise ValueError(f"ray.num_workers must be >= 1, got {self.num_workers}")
        if self.cpus_per_worker <= 0:
            raise ValueError(f"ray.cpus_per_worker must be > 0, got {self.cpus_per_worker}")


@dataclasses.dataclass
class DeepSpeedOptions:
    zero_stage: int = option(2, help="ZeRO stage: 2 or 3 (template configs/ds_zero{stage}.json)")
    config_file: str = option("", help="DeepSpeed JSON template ('' = configs/ds_zero{stage}.json)")
    offload_optimizer: bool = option(False, help="ZeRO offload of optimizer states to CPU")
    precision: Literal["auto", "fp32", "bf16"] = option("auto", help="auto = bf16 on GPU, fp32 on CPU")

    def __post_init__(self):
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"deepspeed.zero_stage must be 0-3, got {self.zero_stage}")


@dataclasses.dataclass
class TrainConfig:
    objective: str = option(
        "genrm_cot", help="genrm_cot / genrm_direct (+ λ generation), orm or dpo baseline, or generator (genrm_rl.kinds)")
    model: str = option("", help="initial model directory (HF format)")
    output_dir: str = option("runs/train", help="checkpoints, metrics and the exported model/ go here")
    data: TrainDataConfig = option(TrainDataConfig, help="training data")
    gen_weight: float = option(1 / 3, help="λ of L_verify + λ L_generate (1/3 algorithmic, 1/4 GSM8K)")
    gen_weight_mode: Literal["mix", "loss"] = option("mix", help="λ as data-mixing ratio or as loss weight")
    epochs: int = option(1, help="passes over the data (ignored when max_steps > 0)")
    max_steps: int = option(0, help="optimizer steps (0 = derive from epochs)")
    micro_batch_size: int = option(16, help="examples per worker per forward pass")
    grad_accum: int = option(1, help="micro-batches per optimizer step")
    lr: float = option(1e-3, help="peak learning rate")
    weight_decay: float = option(0.0, help="AdamW weight decay")
    warmup_ratio: float = option(0.05, help="fraction of steps with linear warmup")
    max_grad_norm: float = option(1.0, help="gradient clipping")
    seed: int = option(0, help="data order and init seed")
    checkpoint_every: int = option(0, help="save a resumable checkpoint every N steps (0 = never)")
    keep_checkpoints: int = option(2, help="how many recent checkpoints to keep")
    export_every: int = option(0, help="also export a HF model to <output_dir>/snapshots/step-N every N steps "
                                       "(0 = only the final model); e.g. to pick a policy by measured accuracy")
    log_every: int = option(10, help="log metrics every N steps")
    launcher: Literal["ray", "local"] = option(
        "ray", help="ray: Ray Train workers; local: this process is one rank (also under `deepspeed`/`torchrun`)")
    engine: Literal["deepspeed", "torch"] = option("deepspeed", help="DeepSpeed engine or plain PyTorch (baseline)")
    ray: RayScaling = option(RayScaling, help="Ray Train scaling")
    deepspeed: DeepSpeedOptions = option(DeepSpeedOptions, help="DeepSpeed options")
    tensorboard: bool = option(True, help="write TensorBoard events to <output_dir>/tb")
    torch_threads: int = option(0, help="CPU threads per worker (0 = CPUs reserved per worker)")
    export: bool = option(True, help="export the final model as a HF directory <output_dir>/model")
    dpo_beta: float = option(0.1, help="dpo: β of the DPO loss and of the implicit reward the verifier scores with")

    def __post_init__(self):
        from genrm_rl.kinds import OBJECTIVE_RECIPE, check_choice

        check_choice(self.objective, OBJECTIVE_RECIPE, "objective")
        if not self.model:
            raise ValueError("model is required: an HF model directory to start from")
        if self.micro_batch_size < 1 or self.grad_accum < 1:
            raise ValueError("micro_batch_size and grad_accum must be >= 1")
        if self.epochs < 1 and self.max_steps < 1:
            raise ValueError("set epochs >= 1 or max_steps >= 1")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.gen_weight < 0:
            raise ValueError(f"gen_weight (λ) must be >= 0, got {self.gen_weight}")
        if self.recipe == "dpo" and (self.launcher == "ray" and self.ray.num_workers != 1):
            raise ValueError("objective 'dpo' trains with TRL's DPOTrainer as one Ray task: set ray.num_workers=1 "
                             "(several GPUs: launcher=local under `accelerate launch`)")
        if self.dpo_beta <= 0:
            raise ValueError(f"dpo_beta must be > 0, got {self.dpo_beta}")
        if self.engine == "torch" and self.deepspeed.zero_stage == 3:
            raise ValueError("engine 'torch' has no ZeRO-3; use engine 'deepspeed'")

    @property
    def recipe(self) -> str:
        """sft, orm or dpo: how `objective` trains (genrm_rl.kinds)."""
        from genrm_rl.kinds import OBJECTIVE_RECIPE

        return OBJECTIVE_RECIPE[self.objective]
