"""The DPO verifier baseline: TRL's DPOTrainer on (correct, incorrect) solution pairs.

Why it is here: the paper compares GenRM with a DPO-trained verifier, whose score is the implicit
reward beta * [log pi(y|x) - log pi_ref(y|x)] of a solution y to question x. It trains on the same
labelled candidates as the other verifiers (`TrainDataConfig`): every incorrect solution is paired
with a correct one for the same question. TRL's trainer is used as-is (one process; several GPUs
go through `accelerate launch`); with `launcher: ray` it runs as one Ray task, so the driver of a
cluster job stays light. The exported directory records its reference model for `DPOScorer`.
"""

from __future__ import annotations

import collections
import json
import time
from pathlib import Path


def preference_pairs(cfg, tokenizer=None) -> tuple[list[dict], dict]:
    """{"question", "prompt", "chosen", "rejected"} rows from the labelled candidates of `cfg.data`,
    and counts."""
    import random

    from genrm_rl.prompts import get_prompt_format
    from genrm_rl.training.data import _labelled_candidates

    fmt = get_prompt_format(cfg.data.prompt_format, tokenizer)
    candidates, _stats = _labelled_candidates(cfg.data)
    by_question: dict[str, dict[bool, list[str]]] = collections.defaultdict(lambda: {True: [], False: []})
    for question, solution, correct, _rationale in candidates:
        by_question[question][correct].append(solution)
    rng = random.Random(cfg.seed)
    rows, no_correct = [], 0
    for question, groups in by_question.items():
        if not groups[False]:
            continue
        if not groups[True]:
            no_correct += 1  # nothing to prefer: such a question teaches DPO nothing
            continue
        for i, rejected in enumerate(groups[False]):
            chosen = groups[True][i % len(groups[True])]
            rows.append({"question": question, "prompt": fmt.generation(question), "chosen": chosen,
                         "rejected": rejected})
    rng.shuffle(rows)
    return rows, {"pairs": len(rows), "questions": len(by_question), "skipped_no_correct": no_correct}


def train_dpo(cfg_dict: dict, rows: list[dict], stats: dict) -> dict:
    """Train with TRL DPOTrainer on `rows` (from `preference_pairs`, built by the driver) and export
    `<output_dir>/model`; returns a result dict."""
    import datasets
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from genrm_rl.config import from_dict
    from genrm_rl.modeling import load_tokenizer, quiet_weight_bars
    from genrm_rl.runtime import training_bar
    from genrm_rl.training.config import TrainConfig

    cfg = from_dict(TrainConfig, cfg_dict)
    out = Path(cfg.output_dir)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    on_gpu = torch.cuda.is_available()
    tokenizer = load_tokenizer(cfg.model, padding_side="right")
    metrics_file = out / "metrics.jsonl"
    # The console shows what the other training stages show: one progress bar with the loss (at most
    # every 5 s), not the Trainer's dict per log step and a bar per dataset map over in-memory rows.
    quiet_weight_bars()
    datasets.disable_progress_bars()

    class JsonlMetrics(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            with open(metrics_file, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": state.global_step, **(logs or {})}) + "\n")

    class Progress(TrainerCallback):
        bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = training_bar(state.max_steps, f"train {out.name}", initial=state.global_step)

        def on_step_end(self, args, state, control, **kwargs):
            self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.bar is not None and isinstance((logs or {}).get("loss"), (int, float)):
                self.bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)

        def on_train_end(self, args, state, control, **kwargs):
            self.bar.close()

    args = DPOConfig(
        output_dir=str(out / "trainer"), beta=cfg.dpo_beta, learning_rate=cfg.lr, max_steps=cfg.max_steps,
        num_train_epochs=cfg.epochs, per_device_train_batch_size=cfg.micro_batch_size,
        gradient_accumulation_steps=cfg.grad_accum, warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm, max_length=cfg.data.max_length, logging_steps=cfg.log_every,
        save_strategy="no", report_to=[], seed=cfg.seed, use_cpu=not on_gpu, bf16=on_gpu, disable_tqdm=True,
    )
    dataset = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    trainer = DPOTrainer(model=cfg.model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         callbacks=[JsonlMetrics(), Progress()])
    trainer.remove_callback(PrinterCallback)  # what disable_tqdm puts in the bar's place: print(logs)
    t0 = time.time()
    trainer.train()
    seconds = time.time() - t0
    model_dir = out / "model"
    trainer.save_model(str(model_dir))
    tokenizer.save_pretrained(str(model_dir))
    (model_dir / "genrm_rl.json").write_text(json.dumps({
        "objective": "dpo", "prompt_format": cfg.data.prompt_format, "ref_model": cfg.model, "beta": cfg.dpo_beta,
    }, indent=2))
    history = [h for h in trainer.state.log_history if "loss" in h]
    last = history[-1] if history else {}
    return {"step": trainer.state.global_step, "world_size": 1, "train_seconds": round(seconds, 1), **stats,
            "final_loss": last.get("loss"), "final_reward_margin": last.get("rewards/margins"),
            "final_reward_accuracy": last.get("rewards/accuracies")}
