"""`genrm-rl rl` / `python -m jobs.rl_grpo`: policy RL with TRL (GRPO, its PPO-style clipped
variants, RLOO) rewarded by the GenRM reward service.

    genrm-rl rl --config configs/rl_grpo.yaml policy=runs/quickstart/generator/model \
        reward.verifier.model=runs/quickstart/genrm_cot/model
    accelerate launch --config_file configs/accelerate_zero2.yaml -m jobs.rl_grpo --config ... reward.url=http://HOST:8000

TRL owns the algorithm; this job owns the plumbing: a task dataset, the GenRM reward (an async
reward function calling the service over HTTP or through its Ray handle, with retries, failing the
step with a clear error rather than training on garbage), the task checker's reward mixed in by
weight (always logged: it is ground-truth accuracy), per-step reward-call latency, and held-out
greedy accuracy before and after training.

PPO with a learned critic: TRL has no value-model PPO trainer. Use OpenRLHF's PPO and point its
remote reward at this service (see README).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Literal

from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from genrm_rl.config import dump_yaml, option
from genrm_rl.runtime import training_bar
from genrm_rl.verifier import VerifierConfig

log = logging.getLogger("genrm_rl.rl")


@dataclasses.dataclass
class RewardSource:
    url: str = option("", help="HTTP URL of a running reward service ('' = Ray: connect or start one)")
    token: str = option("", help="bearer token for the HTTP service")
    connect_router: str = option("", help="name of a router already running on the Ray cluster (genrm-rl serve)")
    verifier: VerifierConfig = option(VerifierConfig, help="verifier of the in-process service (when no url/router)")
    num_replicas: int = option(1, help="in-process service: replicas")
    replica_cpus: float = option(1.0, help="in-process service: CPUs per replica")
    weight: float = option(1.0, help="weight of the GenRM reward (0 = rule reward only, no service)")
    rule_weight: float = option(0.0, help="weight of the rule-based correctness reward (always logged)")
    timeout_s: float = option(600.0, help="per reward call")
    retries: int = option(3, help="HTTP retries before the step fails")


@dataclasses.dataclass
class RLConfig:
    policy: str = option("", help="initial policy (HF model dir), e.g. the SFT generator")
    output_dir: str = option("runs/rl", help="trainer outputs, metrics and the final policy")
    task: str = option("last_letter", help="task providing prompts and ground truth")
    train_split: str = option("train", help="split of the training prompts")
    num_train_problems: int = option(512, help="training prompts")
    eval_split: str = option("test", help="split for held-out ground-truth accuracy")
    num_eval_problems: int = option(64, help="held-out problems, evaluated before and after training")
    eval_samples: int = option(8, help="samples per held-out problem (at `temperature`) for the sampled accuracy, "
                                       "besides the greedy one; 0 = greedy only")
    seed: int = option(0, help="seed")
    prompt_format: Literal["released", "compact", "chat"] = option("compact", help="prompt layout")
    trainer: Literal["grpo", "rloo"] = option("grpo", help="TRL trainer")
    loss_type: str = option("dapo", help="GRPO loss: grpo, dapo, dr_grpo, bnpo, cispo, sapo, luspo")
    num_generations: int = option(8, help="completions per prompt (the group)")
    num_iterations: int = option(1, help="PPO-style epochs per generation batch (clipped ratio when > 1)")
    epsilon: float = option(0.2, help="clipping range")
    beta: float = option(0.0, help="KL coefficient to the reference policy (0 = no reference model)")
    learning_rate: float = option(1e-5, help="policy learning rate")
    max_steps: int = option(20, help="optimizer steps")
    per_device_train_batch_size: int = option(8, help="completions per device per step")
    gradient_accumulation_steps: int = option(1, help="gradient accumulation")
    max_completion_length: int = option(96, help="longest sampled completion (tokens)")
    temperature: float = option(1.0, help="sampling temperature")
    use_vllm: bool = option(False, help="generate with vLLM (GPU nodes)")
    vllm_mode: Literal["colocate", "server"] = option("colocate", help="vLLM colocated or as a server")
    logging_steps: int = option(1, help="log every N steps")
    report_to: list[str] = option(["tensorboard"], help="TRL/transformers loggers")
    reward: RewardSource = option(RewardSource, help="where rewards come from")

    def __post_init__(self):
        if not self.policy:
            raise ValueError("policy is required (an HF model directory)")
        if self.reward.weight == 0 and self.reward.rule_weight == 0:
            raise ValueError("reward.weight and reward.rule_weight are both 0: nothing to optimise")
        if self.reward.weight > 0 and not (self.reward.url or self.reward.connect_router or self.reward.verifier.model):
            raise ValueError("GenRM reward needs reward.url, reward.connect_router or reward.verifier.model")
        if self.eval_samples < 0:
            raise ValueError(f"eval_samples must be >= 0, got {self.eval_samples}")
        if self.num_eval_problems < 1:
            raise ValueError(f"num_eval_problems must be >= 1 (the held-out accuracy before and after), "
                             f"got {self.num_eval_problems}")
        if self.logging_steps < 1:
            raise ValueError(f"logging_steps must be >= 1, got {self.logging_steps}")
        if self.num_generations < 2:
            raise ValueError("num_generations must be >= 2 (advantages are relative within a group)")


class RewardLatencyCallback(TrainerCallback):
    """Adds the GenRM reward-call latency of the last step to TRL's logs."""

    def __init__(self, reward_fn):
        self.reward_fn = reward_fn

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and self.reward_fn.last_latency_s is not None:
            latency = round(self.reward_fn.last_latency_s, 4)
            logs["genrm/reward_call_latency_s"] = latency
            # Trainer.log appends a copy of `logs` to the history before callbacks run
            if state.log_history and "train_runtime" not in logs:
                state.log_history[-1]["genrm/reward_call_latency_s"] = latency


class CompactProgress(ProgressCallback):
    """transformers' progress bar, but one short line every `every` steps (reward, accuracy, KL,
    reward-call latency) instead of the whole metrics dict after every step; the full metrics still go
    to `report_to` and to `rl_summary.json`."""

    KEYS = (("reward", "reward"), ("rewards/correct/mean", "correct"), ("rewards/genrm/mean", "genrm"),
            ("kl", "kl"), ("genrm/reward_call_latency_s", "reward call s"))

    def __init__(self, every: int = 10):
        super().__init__()
        self.every = every

    def on_train_begin(self, args, state, control, **kwargs):
        # the bar of every training stage (redrawn every 5 s), not transformers' one redraw per step
        if state.is_world_process_zero:
            self.training_bar = training_bar(state.max_steps, "train rl")
        self.current_step = 0

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or self.training_bar is None or not logs:
            return
        if "train_runtime" in logs:
            self.training_bar.write(f"trained {state.global_step} steps in {logs['train_runtime']:.0f} s")
        elif state.global_step % self.every == 0:  # other logs of the same step (e.g. TRL's) carry none of KEYS
            parts = [f"{label} {logs[key]:.3f}" for key, label in self.KEYS if isinstance(logs.get(key), int | float)]
            if parts:
                self.training_bar.write(f"step {state.global_step}: " + ", ".join(parts))


def genrm_reward(cfg: RLConfig, out: Path, fmt, service=None):
    """The GenRM reward function and the service this job started for it (None if it connected to one).
    `fmt` is the policy's prompt layout, so the adapter can find the question inside a prompt."""
    from reward.trl import AsyncGenRMReward

    common = dict(timeout=cfg.reward.timeout_s, prompt_format=fmt, log_path=str(out / "reward_calls.jsonl"))
    if cfg.reward.url:
        return AsyncGenRMReward(url=cfg.reward.url, token=cfg.reward.token, retries=cfg.reward.retries, **common), None
    owned = None
    router = service.router if service is not None else None
    if router is None and cfg.reward.connect_router:
        from reward.service import connect

        router = connect(cfg.reward.connect_router).router
    if router is None:
        from reward.service import serve_verifier

        owned = serve_verifier(cfg.reward.verifier, num_replicas=cfg.reward.num_replicas,
                               replica_cpus=cfg.reward.replica_cpus, router_name="rl_reward_router",
                               request_timeout_s=cfg.reward.timeout_s)
        router = owned.router
    return AsyncGenRMReward(router=router, **common), owned


def build_trainer(cfg: RLConfig, policy, tokenizer, dataset, reward_funcs, weights, callbacks, device: str):
    """TRL's GRPOTrainer or RLOOTrainer with the job's settings."""
    common = dict(
        output_dir=str(Path(cfg.output_dir) / "trainer"), learning_rate=cfg.learning_rate, max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size, num_generations=cfg.num_generations,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature, num_iterations=cfg.num_iterations, epsilon=cfg.epsilon, beta=cfg.beta,
        reward_weights=weights, logging_steps=cfg.logging_steps, report_to=cfg.report_to, save_strategy="no",
        seed=cfg.seed, use_vllm=cfg.use_vllm, vllm_mode=cfg.vllm_mode, use_cpu=device == "cpu",
        bf16=device != "cpu", disable_tqdm=False,
    )
    if cfg.trainer == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        args, trainer_cls = GRPOConfig(loss_type=cfg.loss_type, **common), GRPOTrainer
    else:
        from trl import RLOOConfig, RLOOTrainer

        args, trainer_cls = RLOOConfig(**common), RLOOTrainer
    trainer = trainer_cls(model=policy, reward_funcs=reward_funcs, args=args, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=callbacks)
    trainer.remove_callback(ProgressCallback)
    # a console line about every 10 steps, on a step that has logs (a multiple of logging_steps)
    trainer.add_callback(CompactProgress(every=cfg.logging_steps * max(1, round(10 / cfg.logging_steps))))
    return trainer


def run_rl(cfg: RLConfig, service=None) -> dict:
    """Evaluate, train with TRL, evaluate again; returns a summary dict (also written to disk)."""
    import torch
    from datasets import Dataset

    from genrm_rl.bon import bootstrap_ci
    from genrm_rl.generation import accuracy, solve_rates
    from genrm_rl.modeling import load_causal_lm, load_tokenizer
    from genrm_rl.prompts import get_prompt_format
    from genrm_rl.tasks import get_task
    from reward.trl import correctness_reward

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    dump_yaml(cfg, out / "rl_config.yaml")
    (out / "reward_calls.jsonl").unlink(missing_ok=True)
    fmt = get_prompt_format(cfg.prompt_format, load_tokenizer(cfg.policy))
    task = get_task(cfg.task)
    train_problems = task.make_problems(cfg.train_split, cfg.num_train_problems, cfg.seed)
    eval_problems = task.make_problems(cfg.eval_split, cfg.num_eval_problems, cfg.seed + 1)
    dataset = Dataset.from_list([{"prompt": fmt.generation(p.question), "question": p.question, "target": p.target}
                                 for p in train_problems])
    tokenizer = load_tokenizer(cfg.policy, padding_side="left")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    policy = load_causal_lm(cfg.policy, device, "float32" if device == "cpu" else "auto")

    def evaluate(model, when: str) -> dict:
        got = {"greedy": accuracy(model, tokenizer, eval_problems, fmt, cfg.max_completion_length)}
        if cfg.eval_samples:
            got["sampled_rates"] = solve_rates(model, tokenizer, eval_problems, fmt, cfg.max_completion_length,
                                               n=cfg.eval_samples, temperature=cfg.temperature, seed=cfg.seed + 2)
            got["sampled"] = sum(got["sampled_rates"]) / len(eval_problems)
        log.info("held-out %s accuracy %s RL: greedy %.3f%s", cfg.eval_split, when, got["greedy"],
                 f", sampled {got['sampled']:.3f}" if "sampled" in got else "")
        return got

    acc_before = evaluate(policy, "before")

    genrm, owned = genrm_reward(cfg, out, fmt, service) if cfg.reward.weight > 0 else (None, None)
    reward_funcs = ([genrm] if genrm else []) + [correctness_reward(cfg.task)]  # logged even at weight 0
    weights = ([cfg.reward.weight] if genrm else []) + [cfg.reward.rule_weight]
    callbacks = [RewardLatencyCallback(genrm)] if genrm else []
    trainer = build_trainer(cfg, policy, tokenizer, dataset, reward_funcs, weights, callbacks, device)
    t0 = time.time()
    try:
        trainer.train()
    finally:
        if owned is not None:
            owned.shutdown()
    seconds = time.time() - t0
    trainer.save_model(str(out / "policy"))
    tokenizer.save_pretrained(str(out / "policy"))
    acc_after = evaluate(trainer.model, "after")
    history = [h for h in trainer.state.log_history if "loss" in h or "reward" in h]
    summary = {"trainer": cfg.trainer, "loss_type": cfg.loss_type if cfg.trainer == "grpo" else None,
               "steps": cfg.max_steps, "train_seconds": round(seconds, 1),
               "heldout_accuracy_before": acc_before["greedy"], "heldout_accuracy_after": acc_after["greedy"],
               "heldout_sampled_accuracy_before": acc_before.get("sampled"),
               "heldout_sampled_accuracy_after": acc_after.get("sampled"),
               # paired over held-out problems: the gain RL made in sampled accuracy, 90% bootstrap interval
               "heldout_sampled_gain_ci": bootstrap_ci(acc_after["sampled_rates"], paired_with=acc_before["sampled_rates"])
               if cfg.eval_samples else None,
               "heldout_sampled_rates_before": acc_before.get("sampled_rates"),
               "heldout_sampled_rates_after": acc_after.get("sampled_rates"),
               "reward_weights": {"genrm": cfg.reward.weight if genrm else None, "correct": cfg.reward.rule_weight},
               "log_history": history}
    (out / "rl_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv=None, prog="python -m jobs.rl_grpo") -> int:
    from genrm_rl.config import parse_cli
    from jobs._common import setup_logging

    cfg = parse_cli(RLConfig, argv, prog, "Policy RL (TRL GRPO/RLOO) with GenRM rewards.")
    setup_logging()
    summary = run_rl(cfg)
    print(json.dumps({k: v for k, v in summary.items() if k != "log_history" and "_rates_" not in k}, indent=2))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
