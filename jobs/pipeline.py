"""The end-to-end reproduction's stages (`genrm-rl reproduce`, the README's main job).

    problems -> SFT generator (HF snapshots as it learns) -> policy = the first snapshot whose
    sampled accuracy on dev problems reaches `policy_accuracy` -> N candidates per problem from the
    policy, labelled by the task's checker -> verifiers started from the final generator and
    trained on 2-4-word data only: GenRM-CoT (λ and λ = 0; resumed while a dev check finds its
    verdicts not yet separating right from wrong), GenRM, ORM (DeepSpeed ranks on Ray Train), DPO
    (TRL); LLM-as-a-judge untrained -> every candidate scored through the Ray reward
    service -> Best-of-N reports (`jobs.paper_report`).

Why a policy snapshot and a stronger verifier: Best-of-N helps where the policy is usually wrong
but sometimes right (the paper's generator: 5% first sample, ~45% Best-of-32), and a reward model
is judged on the policy it will reward. The policy is picked by a measured accuracy, not by a
step count, because a tiny model learns the task in a phase change whose step varies with the seed.

Every stage writes its outputs under `output_dir` and is skipped when they already exist, so an
interrupted run continues where it stopped (training stages also resume from checkpoints). A
stage reused although its settings have changed since (training, sampling, scoring, data) is named
in a warning, with what changed; delete its output to redo it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Literal

from genrm_rl.config import dump_yaml, from_dict, option
from genrm_rl.kinds import KINDS, check_choice
from genrm_rl.prompts import check_view_options
from genrm_rl.records import write_json
from genrm_rl.tiny import TinyModelSpec
from jobs.paper_report import PAIR

log = logging.getLogger("genrm_rl.reproduce")


@dataclasses.dataclass
class StageConfig:
    """Training settings of one pipeline stage (a subset of TrainConfig)."""

    max_steps: int = option(300, help="optimizer steps")
    lr: float = option(2e-3, help="peak learning rate")
    micro_batch_size: int = option(16, help="examples per worker per step")
    num_problems: int = option(2000, help="train problems generated for this stage")
    split: str = option("train", help="task split of those problems")
    negatives_per_problem: int = option(1, help="planted-error candidates per problem (verifiers)")
    foreign_negatives_per_problem: int = option(0, help="another problem's solution as a wrong candidate, per "
                                                        "problem (verifiers; see TrainDataConfig)")
    long_negatives_per_problem: int = option(0, help="the reference with extra answer letters as a wrong "
                                                     "candidate, per problem (verifiers; see TrainDataConfig)")
    verify_input: Literal["solution", "answer"] = option(
        "solution", help="what the trained verifiers read of a candidate: the whole solution (the paper) or its "
                         "final-answer line (see genrm_rl.prompts)")
    question_view: Literal["as_asked", "aligned", "ends"] = option(
        "as_asked", help="how the trained verifiers read the question: as asked (the paper), its quoted list on "
                         "two right-aligned lines (aligned), or only the three words at each end of it (ends; "
                         "needs rationale_rows: ends) (see genrm_rl.prompts)")
    mask_long_answer_verdicts: bool = option(False, help="GenRM-CoT: no verdict loss on answers longer than the "
                                                         "right one (see TrainDataConfig)")
    viewed_generation: bool = option(False, help="GenRM objectives: the λ term's generation prompts show the "
                                                 "question through question_view (see TrainDataConfig)")
    gen_weight: float = option(1 / 3, help="λ (GenRM objectives)")
    rationale_rows: Literal["all", "ends", "spelled", "matched"] = option(
        "all", help="oracle rationale rows of the verifiers' data (see TrainDataConfig)")
    warmup_ratio: float = option(0.05, help="warmup fraction")

    def __post_init__(self):
        if min(self.negatives_per_problem, self.foreign_negatives_per_problem, self.long_negatives_per_problem) < 0:
            raise ValueError("negatives_per_problem, foreign_negatives_per_problem and long_negatives_per_problem "
                             "must be >= 0")
        check_view_options(self.question_view, self.rationale_rows, self.viewed_generation)


@dataclasses.dataclass
class ReproduceConfig:
    task: str = option("last_letter", help="last_letter or word_sort")
    output_dir: str = option("runs/quickstart", help="everything is written here")
    seeds: list[int] = option([], help="run each of these seeds (output_dir/seed-S) and report mean ± sd; "
                                       "[] = the one `seed`")
    base_model: str = option("", help="HF model dir to start from ('' = build a tiny random model)")
    tiny: TinyModelSpec = option(TinyModelSpec, help="shape of the tiny base model")
    seed: int = option(0, help="seed of the data, the models' init and every sample")
    num_test_problems: int = option(48, help="test problems (5-6 words, out of distribution)")
    num_val_problems: int = option(48, help="held-out 2-4 word problems (in distribution)")
    n: int = option(16, help="policy candidates per problem (N max)")
    sample_temperature: float = option(1.0, help="policy sampling temperature")
    max_solution_tokens: int = option(96, help="longest candidate solution")
    generator: StageConfig = option(StageConfig, help="generator SFT")
    generator_min_accuracy: float = option(0.05, help="greedy accuracy on dev problems the final generator must reach")
    generator_dev_split: str = option(
        "train", help="task split of the dev problems that gate the generator: 'train' (2-4 words) or the "
                      "generator's own 'mixed' (2-6 words), so a generator that cannot yet walk 5-6-word lists "
                      "trains on (docs/experiments.md, GX); the policy is always chosen on 2-4 words")
    generator_extra_steps: int = option(1000, help="steps added (resuming) each time it falls short")
    generator_max_extensions: int = option(2, help="how many times training may be extended")
    snapshot_every: int = option(100, help="export a generator snapshot every N steps (policy candidates)")
    policy_accuracy: float = option(0.5, help="the policy is the first generator snapshot whose sampled accuracy on "
                                              "dev problems (train split, never the evaluation sets) reaches this")
    policy_dev_problems: int = option(32, help="dev problems for the policy's accuracy")
    policy_dev_samples: int = option(4, help="samples per dev problem for the policy's accuracy")
    verifier_train_problems: int = option(1000, help="train problems the policy samples candidates for")
    verifier_samples_per_problem: int = option(4, help="policy samples per problem (verifier training data)")
    verifiers: list[str] = option(["genrm_cot", "genrm_direct", "orm"],
                                  help="verifiers to train and compare: " + ", ".join(KINDS))
    verifier_init: Literal["generator", "policy", "base"] = option(
        "generator", help="what verifiers are fine-tuned from: the final generator, the policy snapshot, or the base")
    verifier_stage: StageConfig = option(StageConfig, help="verifier training (all objectives)")
    balance: bool = option(True, help="balance correct and incorrect verifier training solutions (planted errors)")
    cot_lambda_ablation: bool = option(True, help="also train GenRM-CoT with λ = 0 (no generation data)")
    cot_pair: bool = option(
        False, help="also report genrm_cot_pair: the two GenRM-CoTs (λ and λ = 0) as one verifier, each candidate's "
                    "votes pooled (2 x cot_k); no extra training or scoring (docs/experiments.md, EN2)")
    dpo_lr: float = option(5e-4, help="DPO baseline learning rate (the other verifier_stage settings are shared)")
    dpo_beta: float = option(0.1, help="DPO baseline β")
    dpo_steps: int = option(0, help="DPO baseline steps (0 = verifier_stage.max_steps)")
    cot_steps: int = option(0, help="GenRM-CoT steps, both λ values (0 = verifier_stage.max_steps); its verdict "
                                    "follows the rationale only after ~2x the other verifiers' steps (experiments.md)")
    cot_min_separation: float = option(
        0.0, help="GenRM-CoT training gate (both λ values): on dev problems (train split, never the evaluation sets), "
                  "each the reference + 3 planted errors, mean p(Yes) of the right candidates minus the wrong ones "
                  "must reach this, else training resumes for cot_extra_steps (0 = no gate)")
    cot_extra_steps: int = option(2400, help="GenRM-CoT steps added (resuming) each time it falls short of the gate")
    cot_max_extensions: int = option(1, help="how many times GenRM-CoT training may be extended")
    cot_check_problems: int = option(64, help="dev problems of the GenRM-CoT gate")
    cot_check_k: int = option(4, help="rationales per candidate in the GenRM-CoT gate's check")
    cot_k: int = option(8, help="GenRM-CoT rationales per candidate (K)")
    cot_k_curve: list[int] = option([1, 2, 4, 8], help="K values reported: Best-of-n_max with k of the cot_k "
                                                       "votes, averaged over every choice of k")
    cot_temperature: float = option(1.0, help="GenRM-CoT sampling temperature")
    cot_max_new_tokens: int = option(160, help="longest rationale before the verdict is forced")
    prompt_format: Literal["released", "compact", "chat"] = option("compact", help="prompt layout")
    oracle_set: bool = option(False, help="also score 1 correct + (n_oracle - 1) planted errors per test problem")
    n_oracle: int = option(4, help="oracle set size per problem")
    bootstrap_samples: int = option(2000, help="bootstrap resamples of the problems for 90% intervals")
    num_workers: int = option(2, help="DeepSpeed ranks (Ray Train workers) per training stage")
    train_launcher: Literal["ray", "local"] = option(
        "ray", help="how a training stage starts: ray = its ranks as Ray Train workers (any number of nodes); "
                    "local = one rank in this process, no Ray Train (num_workers must be 1; the same weights "
                    "in 5% less stage time on a 2-core CPU, measured on paper_cpu)")
    use_gpu: bool = option(False, help="train and score on GPUs")
    cpus_per_worker: float = option(1.0, help="CPUs per training worker")
    zero_stage: int = option(2, help="DeepSpeed ZeRO stage")
    num_replicas: int = option(2, help="reward-service replicas used for scoring")
    replica_cpus: float = option(1.0, help="CPUs per reward-service replica")
    score_batch_size: int = option(16, help="candidates per verifier forward batch")
    ray_address: str = option("", help="Ray cluster ('' = RAY_ADDRESS or local)")

    def __post_init__(self):
        from genrm_rl.tasks import check_long_negatives, check_rationale_rows, get_task

        task = get_task(self.task)
        if not task.lengths:
            raise ValueError(f"task {self.task!r} has no generator; reproduce supports last_letter and word_sort")
        for name in self.verifiers:
            check_choice(name, KINDS, "verifier")
        if self.n < 1 or self.num_test_problems < 1 or self.num_val_problems < 1:
            raise ValueError("n, num_test_problems and num_val_problems must be >= 1")
        if self.n_oracle < 2:
            raise ValueError("n_oracle must be >= 2 (one correct candidate and at least one wrong one)")
        if not 0 < self.policy_accuracy <= 1:
            raise ValueError(f"policy_accuracy must be in (0, 1], got {self.policy_accuracy}")
        if self.snapshot_every < 1:
            raise ValueError(f"snapshot_every must be >= 1, got {self.snapshot_every}")
        if not 0 <= self.cot_min_separation < 1:
            raise ValueError(f"cot_min_separation must be in [0, 1) (0 = no gate), got {self.cot_min_separation}")
        if self.cot_pair and not (self.cot_lambda_ablation and "genrm_cot" in self.verifiers):
            raise ValueError("cot_pair pools the two GenRM-CoTs: it needs genrm_cot in verifiers and "
                             "cot_lambda_ablation=true")
        if self.cot_extra_steps < 1 or self.cot_max_extensions < 0 or self.cot_check_problems < 1 or self.cot_check_k < 1:
            raise ValueError("need cot_extra_steps >= 1, cot_max_extensions >= 0, cot_check_problems >= 1 and "
                             f"cot_check_k >= 1, got {self.cot_extra_steps}, {self.cot_max_extensions}, "
                             f"{self.cot_check_problems}, {self.cot_check_k}")
        if not self.cot_k_curve or any(k < 1 or k > self.cot_k for k in self.cot_k_curve):
            raise ValueError(f"cot_k_curve values must be in 1..cot_k={self.cot_k}, got {self.cot_k_curve}")
        for what, split in (("generator.split", self.generator.split), ("verifier_stage.split", self.verifier_stage.split),
                            ("generator_dev_split", self.generator_dev_split)):
            if split not in task.lengths:
                raise ValueError(f"{what} {split!r} not in task {self.task!r} splits {sorted(task.lengths)}")
        check_long_negatives(self.task, self.verifier_stage.long_negatives_per_problem,
                             "verifier_stage.long_negatives_per_problem")
        check_rationale_rows(self.task, self.verifier_stage.rationale_rows, "verifier_stage.rationale_rows")
        if self.train_launcher == "local" and self.num_workers != 1:
            raise ValueError(f"train_launcher 'local' trains one rank in this process: set num_workers=1 "
                             f"(got {self.num_workers}) or train_launcher=ray")
        if self.verifier_stage.split != "train":
            raise ValueError("verifier_stage.split must be 'train' (2-4 words): the verifiers' OOD test is 5-6 words")


@dataclasses.dataclass(frozen=True)
class Verifier:
    """One compared verifier: its kind, the λ it trains with, and its name in the reports."""

    name: str
    kind: str
    gen_weight: float | None = None

    @property
    def mode(self) -> str:
        return KINDS[self.kind].mode


def compared_verifiers(cfg: ReproduceConfig) -> list[Verifier]:
    out = [Verifier(name, name) for name in cfg.verifiers]
    if cfg.cot_lambda_ablation and "genrm_cot" in cfg.verifiers:
        out.insert(cfg.verifiers.index("genrm_cot") + 1, Verifier("genrm_cot_lambda0", "genrm_cot", 0.0))
    return out


# Paths differ between a saved stage config (absolute) and a fresh one (as given) without meaning
# anything, and the launcher of one rank gives the same weights either way (measured bitwise);
# everything else that differs changes what the stage would train.
_UNCOMPARED_KEYS = {"model", "output_dir", "data.candidates_files", "data.exclude_problems", "ray.address",
                    "ray.storage_path", "launcher"}


def settings_drift(saved: dict, now: dict, prefix: str = "") -> list[str]:
    """`key: saved -> now` for every setting (dotted key) that differs, paths and the launcher excepted."""
    changed = []
    for key in sorted(set(saved) | set(now)):
        dotted, a, b = f"{prefix}{key}", saved.get(key), now.get(key)
        if dotted in _UNCOMPARED_KEYS:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            changed += settings_drift(a, b, f"{dotted}.")
        elif a != b:
            changed.append(f"{dotted}: {a!r} -> {b!r}")
    return changed


def _threads_spelt_out(train_cfg: dict) -> dict:
    """A Ray Train worker with `torch_threads: 0` runs as many threads as it has CPUs; a one-rank stage
    trained in this process states that number (`train_launcher: local`). Compared as the same."""
    if train_cfg.get("launcher") == "ray" and not train_cfg.get("torch_threads") and isinstance(train_cfg.get("ray"), dict):
        from genrm_rl.training.config import worker_threads

        return {**train_cfg, "torch_threads": worker_threads(train_cfg["ray"].get("cpus_per_worker") or 1)}
    return train_cfg


def _with_defaults(saved: dict) -> dict:
    """A training stage's saved config with the defaults of options added since it was written: a new
    option defaults to the old behaviour, so a key the file lacks is not a change (it was reported as
    `None -> default` on every reused stage). A file this code cannot read is compared as it is."""
    from genrm_rl.config import from_dict, to_dict
    from genrm_rl.training.config import TrainConfig

    try:
        return to_dict(from_dict(TrainConfig, saved))
    except ValueError:
        return saved


class Pipeline:
    def __init__(self, cfg: ReproduceConfig):
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.timings: dict[str, float] = {}
        # every stage's time survives resumed runs, so a report shows the whole pipeline's cost
        self.ledger_file = self.out / "stage_seconds.json"
        self.ledger: dict[str, float] = json.loads(self.ledger_file.read_text()) if self.ledger_file.is_file() else {}
        self.generator_checks: list[dict] = []
        self.verifier_checks: dict[str, list[dict]] = {}
        self.policy: dict = {}
        self.extending: set[str] = set()

    # ---- helpers ------------------------------------------------------------------------------
    def _stage(self, name: str, done: Path, fn, settings: dict | None = None, saved: Path | None = None):
        """Run `fn` unless its output `done` exists. `settings` (what the output depends on, besides
        the stages before it) are saved beside it, and a reused output made with other settings is
        named in a warning. A training stage passes the `config.yaml` it writes itself as `saved`."""
        record = saved or done.with_name(done.name.split(".")[0] + ".settings.json")
        if done.exists():
            log.info("[%s] done already (%s), skipping", name, done)
            if settings is not None and record.is_file():
                from genrm_rl.config import read_yaml

                before = _with_defaults(read_yaml(record)) if saved else json.loads(record.read_text())
                now = json.loads(json.dumps(settings))
                if saved:
                    before, now = _threads_spelt_out(before), _threads_spelt_out(now)
                changed = settings_drift(before, now)
                if changed:  # a reused stage is skipped whatever the config says now: say so, loudly
                    made, redo = ("trained", "retrain") if saved else ("made", "redo")
                    log.warning("[%s] reusing %s, %s with other settings (%s); delete it to %s", name,
                                record.parent if saved else done, made, "; ".join(changed), redo)
            return
        t0 = time.time()
        log.info("[%s] starting", name)
        fn()
        if settings is not None and not saved:
            write_json(record, settings, indent=1)
        spent = round(time.time() - t0, 1)
        if name in self.extending:  # a finished stage resumed for more steps: its cost is both runs
            spent = round(spent + self.ledger.get(name, 0.0), 1)
            self.extending.discard(name)
        self.timings[name] = self.ledger[name] = spent
        write_json(self.ledger_file, self.ledger, indent=1)
        log.info("[%s] finished in %.1fs", name, spent)

    def _train_cfg(self, objective: str, init: str, stage: StageConfig, out: Path, candidates: list[str],
                   gen_weight: float | None = None, export_every: int = 0, max_steps: int | None = None):
        from genrm_rl.training.config import TrainConfig, worker_threads

        cfg = self.cfg
        recipe = KINDS[objective].recipe if objective in KINDS else "sft"
        steps = max_steps or ((cfg.dpo_steps or stage.max_steps) if recipe == "dpo" else
                              (cfg.cot_steps or stage.max_steps) if objective == "genrm_cot" else stage.max_steps)
        return from_dict(TrainConfig, {
            "objective": objective, "model": init, "output_dir": str(out),
            "data": {"task": cfg.task, "num_problems": stage.num_problems, "split": stage.split, "seed": cfg.seed,
                     "negatives_per_problem": stage.negatives_per_problem, "prompt_format": cfg.prompt_format,
                     "foreign_negatives_per_problem": stage.foreign_negatives_per_problem if objective != "generator" else 0,
                     "rationale_rows": stage.rationale_rows,
                     "long_negatives_per_problem": stage.long_negatives_per_problem if objective != "generator" else 0,
                     "verify_input": stage.verify_input, "question_view": stage.question_view,
                     "mask_long_answer_verdicts": stage.mask_long_answer_verdicts and objective == "genrm_cot",
                     "viewed_generation": stage.viewed_generation and objective.startswith("genrm"),
                     "candidates_files": candidates, "balance": cfg.balance and objective != "generator",
                     "val_fraction": 0.02, "exclude_problems": [str(self.out / "data/val_problems.jsonl"),
                                                                str(self.out / "data/test_problems.jsonl")]},
            "gen_weight": (stage.gen_weight if gen_weight is None else gen_weight) if objective.startswith("genrm") else 0.0,
            "max_steps": steps, "lr": cfg.dpo_lr if recipe == "dpo" else stage.lr,
            "micro_batch_size": stage.micro_batch_size, "dpo_beta": cfg.dpo_beta,
            "warmup_ratio": stage.warmup_ratio, "log_every": 25, "checkpoint_every": max(steps // 4, 50),
            "export_every": export_every, "seed": cfg.seed, "launcher": cfg.train_launcher,
            # in this process, as many threads as a Ray Train worker gets: the same float kernels, the same weights
            "torch_threads": worker_threads(cfg.cpus_per_worker) if cfg.train_launcher == "local" else 0,
            # TRL's DPOTrainer runs as one Ray task
            "ray": {"address": cfg.ray_address, "num_workers": 1 if recipe == "dpo" else cfg.num_workers,
                    "use_gpu": cfg.use_gpu, "cpus_per_worker": cfg.cpus_per_worker},
            "deepspeed": {"zero_stage": cfg.zero_stage},
        })

    @property
    def device(self) -> str:
        return "cuda" if self.cfg.use_gpu else "cpu"

    # ---- stages -------------------------------------------------------------------------------
    def make_data(self) -> None:
        from genrm_rl.records import read_records, write_records
        from genrm_rl.tasks import Problem, get_task

        task = get_task(self.cfg.task)
        write_records(self.out / "data/val_problems.jsonl",
                      task.make_problems("val", self.cfg.num_val_problems, self.cfg.seed + 2000))
        write_records(self.out / "data/test_problems.jsonl",
                      task.make_problems("test", self.cfg.num_test_problems, self.cfg.seed + 1000))
        held_out = {p.question for p in read_records(self.out / "data/val_problems.jsonl", Problem)}
        train = [p for p in task.make_problems("train", self.cfg.verifier_train_problems, self.cfg.seed + 3000)
                 if p.question not in held_out]
        write_records(self.out / "data/train_problems.jsonl", train)

    def base_model(self) -> str:
        if self.cfg.base_model:
            return self.cfg.base_model
        path = self.out / "base"
        if not (path / "config.json").is_file():
            from genrm_rl.tiny import make_tiny_model

            make_tiny_model(path, dataclasses.replace(self.cfg.tiny, seed=self.cfg.tiny.seed + self.cfg.seed))
        return str(path)

    def train(self, objective: str, init: str, stage: StageConfig, name: str, candidates: list[str] = (),
              gen_weight: float | None = None, export_every: int = 0, max_steps: int | None = None) -> str:
        from genrm_rl.config import to_dict
        from genrm_rl.training.launch import run_training

        out = self.out / name
        cfg = self._train_cfg(objective, init, stage, out, list(candidates), gen_weight, export_every, max_steps)
        self._stage(f"train {name}", out / "model" / "config.json", lambda: run_training(cfg), to_dict(cfg),
                    saved=out / "config.yaml")
        return str(out / "model")

    def _dev_problems(self, split: str = "train"):
        from genrm_rl.tasks import get_task

        return get_task(self.cfg.task).make_problems(split, self.cfg.policy_dev_problems, self.cfg.seed + 4000)

    def _gated(self, name: str, steps: int, extra_steps: int, max_extensions: int, train, check) -> tuple[str, list]:
        """`train(steps) -> model`, then `check(model) -> (passed, record)`; while it has not passed,
        resume the same stage for `extra_steps` more, at most `max_extensions` times.

        Each check is appended to `name/quality_checks.json.partial` as it is made, so a run killed during
        an extension picks the gate up where it stopped. (Started again from `steps`, a re-run resumed
        past each smaller step count, re-exported the same model and checked it under those counts.)
        The list then moves to `name/quality_checks.json`, whose presence means the gate has decided."""
        stage = self.out / name
        checks_file, partial, final = stage / "quality_checks.json", stage / "quality_checks.json.partial", stage / "model"
        if checks_file.is_file() and (final / "config.json").is_file():
            return str(final), json.loads(checks_file.read_text())
        checks = json.loads(partial.read_text()) if partial.is_file() else []
        if checks:
            steps = checks[-1]["steps"] + extra_steps
            log.info("%s: %d gate check(s) made before this run, resuming to %d steps", name, len(checks), steps)
        while not (checks and (checks[-1]["passed"] or len(checks) > max_extensions)):
            model = train(steps)
            passed, record = check(model)
            if not passed and len(checks) < max_extensions:
                (final / "config.json").unlink()  # re-run the stage, resuming from its last checkpoint
                self.extending.add(f"train {name}")
                log.info("%s short of its bar: resuming to %d steps", name, steps + extra_steps)
            checks.append({"steps": steps, **record, "passed": passed})
            write_json(partial, checks)
            steps += extra_steps
        write_json(checks_file, checks)
        partial.unlink()
        return str(final), checks

    def train_generator(self, base: str) -> str:
        """SFT the generator; if it has not learned the task yet, resume for more steps.

        A tiny model learns to walk the word list in a sudden phase change whose step varies with the
        seed, so a fixed step budget is either wasteful or sometimes too short. Greedy accuracy on dev
        problems from `generator_dev_split` (never the evaluation sets) decides; every extension is logged."""
        from genrm_rl.generation import greedy_accuracy
        from genrm_rl.modeling import load_causal_lm, load_tokenizer
        from genrm_rl.prompts import get_prompt_format

        cfg = self.cfg

        def train(steps):
            return self.train("generator", base, dataclasses.replace(cfg.generator, max_steps=steps), "generator",
                              export_every=cfg.snapshot_every)

        def check(model):  # built here, so a run whose gate has already decided skips it
            fmt = get_prompt_format(cfg.prompt_format, load_tokenizer(base))
            dev = self._dev_problems(cfg.generator_dev_split)
            acc = greedy_accuracy(load_causal_lm(model, self.device), load_tokenizer(model), dev, fmt,
                                  cfg.max_solution_tokens)
            log.info("generator: greedy dev accuracy %.3f on %s problems (bar %.2f)", acc, cfg.generator_dev_split,
                     cfg.generator_min_accuracy)
            return acc >= cfg.generator_min_accuracy, {"dev_greedy_accuracy": acc, "dev_split": cfg.generator_dev_split}

        model, self.generator_checks = self._gated("generator", cfg.generator.max_steps, cfg.generator_extra_steps,
                                                   cfg.generator_max_extensions, train, check)
        return model

    def select_policy(self, generator: str) -> str:
        """The first snapshot (in training order) whose sampled dev accuracy reaches `policy_accuracy`,
        else the final generator; copied to `output_dir/policy` (the RL job starts from it too)."""
        from genrm_rl.generation import SampleConfig, sample_solutions
        from genrm_rl.tasks import get_task

        path, record = self.out / "policy", self.out / "policy.json"

        def run():
            cfg, task, dev = self.cfg, get_task(self.cfg.task), self._dev_problems()
            snapshots = sorted((self.out / "generator" / "snapshots").glob("step-*"), key=lambda p: int(p.name[5:]))
            checks, chosen = [], generator
            for snap in [*snapshots, Path(generator)]:
                scfg = SampleConfig(model=str(snap), n=cfg.policy_dev_samples, temperature=cfg.sample_temperature,
                                    max_new_tokens=cfg.max_solution_tokens, batch_size=16,
                                    prompt_format=cfg.prompt_format, seed=cfg.seed + 5, device=self.device)
                sols = sample_solutions(scfg, [p.question for p in dev], progress=False)
                acc = sum(task.is_correct(p, s) for p, ss in zip(dev, sols, strict=True) for s in ss) / (
                    len(dev) * cfg.policy_dev_samples)
                checks.append({"model": str(snap), "dev_sampled_accuracy": acc})
                log.info("policy candidate %s: sampled dev accuracy %.3f", snap.name, acc)
                if acc >= cfg.policy_accuracy:
                    chosen = str(snap)
                    break
            shutil.rmtree(path, ignore_errors=True)
            shutil.copytree(chosen, path)
            write_json(record, {"chosen": chosen, "target": cfg.policy_accuracy, "checks": checks}, indent=1)

        cfg = self.cfg
        self._stage("select policy", record, run, {
            "policy_accuracy": cfg.policy_accuracy, "policy_dev_problems": cfg.policy_dev_problems,
            "policy_dev_samples": cfg.policy_dev_samples, "temperature": cfg.sample_temperature,
            "max_new_tokens": cfg.max_solution_tokens, "prompt_format": cfg.prompt_format, "seed": cfg.seed})
        self.policy = json.loads(record.read_text())
        return str(path)

    def sample(self, policy: str, split: str, n: int) -> Path:
        from genrm_rl.generation import SampleConfig, label_candidates, sample_solutions
        from genrm_rl.records import read_records, write_records
        from genrm_rl.tasks import Problem

        path = self.out / f"data/{split}_candidates.jsonl"

        def run():
            problems = read_records(self.out / f"data/{split}_problems.jsonl", Problem)
            scfg = SampleConfig(model=policy, n=n, temperature=self.cfg.sample_temperature,
                                max_new_tokens=self.cfg.max_solution_tokens, batch_size=16,
                                prompt_format=self.cfg.prompt_format, seed=self.cfg.seed, device=self.device)
            write_records(path, label_candidates(problems, sample_solutions(scfg, [p.question for p in problems])))

        self._stage(f"sample {split} candidates", path, run, {
            "n": n, "temperature": self.cfg.sample_temperature, "max_new_tokens": self.cfg.max_solution_tokens,
            "prompt_format": self.cfg.prompt_format, "seed": self.cfg.seed})
        return path

    def oracle_candidates(self) -> Path:
        """Correct solution + planted errors for each test problem: verifier OOD generalization
        measured independently of how well the policy does on longer problems."""
        import random

        from genrm_rl.generation import planted_candidates
        from genrm_rl.records import read_records, write_records
        from genrm_rl.tasks import Problem

        path = self.out / "data/oracle_candidates.jsonl"

        def run():
            problems = read_records(self.out / "data/test_problems.jsonl", Problem)
            write_records(path, planted_candidates(problems, self.cfg.n_oracle, random.Random(self.cfg.seed)))

        self._stage("oracle candidates", path, run, {"n_oracle": self.cfg.n_oracle, "seed": self.cfg.seed})
        return path

    def train_verifiers(self, init: str, generator: str, train_cands: Path) -> dict[str, str]:
        """Model directory of every compared verifier; the LLM-as-a-judge is the generator itself."""
        out = {}
        for v in compared_verifiers(self.cfg):
            objective = KINDS[v.kind].objective
            if objective is None:
                out[v.name] = generator
            elif objective == "genrm_cot" and self.cfg.cot_min_separation > 0:
                out[v.name] = self.train_cot(init, v, train_cands)
            else:
                out[v.name] = self.train(objective, init, self.cfg.verifier_stage, v.name, [str(train_cands)],
                                         v.gen_weight)
        return out

    def train_cot(self, init: str, verifier: Verifier, train_cands: Path) -> str:
        """Train a GenRM-CoT verifier; if its verdicts do not yet separate right from wrong, resume.

        Its row marks (does this row of the rationale match?) are learned in a phase change whose step
        moves with the training run's draw; a run that has not learned them by `cot_steps` ranks badly
        in distribution (docs/experiments.md, D1 and G2). As for the generator, a measurement on dev
        problems from the train split (never the evaluation sets) decides; every extension is logged."""
        cfg, name = self.cfg, verifier.name

        def train(steps):
            return self.train("genrm_cot", init, cfg.verifier_stage, name, [str(train_cands)], verifier.gen_weight,
                              max_steps=steps)

        def check(model):
            found = self.check_verifier(model)
            log.info("%s: dev separation %.3f (p(Yes) right %.3f, wrong %.3f; bar %.2f), within-problem %.3f", name,
                     found["separation"], found["mean_correct"], found["mean_wrong"], cfg.cot_min_separation,
                     found["within_problem"])
            return found["separation"] >= cfg.cot_min_separation, found

        model, self.verifier_checks[name] = self._gated(name, cfg.cot_steps or cfg.verifier_stage.max_steps,
                                                        cfg.cot_extra_steps, cfg.cot_max_extensions, train, check)
        return model

    def check_verifier(self, model: str) -> dict:
        """The gate's measurement: a GenRM-CoT's scores on the reference + 3 planted errors of each dev
        problem (`genrm_rl.bon.separation`), scored in-process like the generator's greedy check."""
        import random

        from genrm_rl import bon
        from genrm_rl.generation import planted_candidates
        from genrm_rl.tasks import get_task
        from genrm_rl.verifier import VerifierConfig, build_scorer

        cfg = self.cfg
        dev = get_task(cfg.task).make_problems("train", cfg.cot_check_problems, cfg.seed + 4000)
        cands = planted_candidates(dev, 4, random.Random(cfg.seed + 4000))
        scorer = build_scorer(VerifierConfig(
            model=model, mode="cot", k=cfg.cot_check_k, temperature=cfg.cot_temperature,
            max_new_tokens=cfg.cot_max_new_tokens, batch_size=cfg.score_batch_size, prompt_format=cfg.prompt_format,
            seed=cfg.seed, device=self.device))
        scores = [r.score for r in scorer.score([(c.question, c.solution) for c in cands])]
        return bon.separation(scores, [c.correct for c in cands], [c.problem_id for c in cands])

    def score(self, verifier: Verifier, model: str, splits: list[str]) -> dict[str, Path]:
        """Score each split's candidates through one Ray reward service (in-process handle), started
        only if a split is not scored yet and shared by the verifier's splits: a start costs ~5 s on
        two cores (two replica processes importing torch and transformers), a split 1-15 s."""
        from genrm_rl.records import Candidate, read_records, write_records
        from genrm_rl.verifier import VerifierConfig, score_candidates
        from reward.service import serve_verifier

        cfg, service = self.cfg, None

        def client():
            nonlocal service
            if service is None:
                vcfg = VerifierConfig(model=model, mode=verifier.mode, k=cfg.cot_k, temperature=cfg.cot_temperature,
                                      max_new_tokens=cfg.cot_max_new_tokens, batch_size=cfg.score_batch_size,
                                      prompt_format=cfg.prompt_format, seed=cfg.seed, device=self.device)
                service = serve_verifier(
                    vcfg, num_replicas=cfg.num_replicas, replica_cpus=cfg.replica_cpus,
                    replica_gpus=1.0 if cfg.use_gpu else 0.0, max_batch_size=cfg.score_batch_size, max_items=100_000,
                    router_name=f"reproduce_{verifier.name}", ray_address=cfg.ray_address, request_timeout_s=3600.0)
            return service.client()

        def run(split: str, path: Path):
            cands = read_records(self.out / f"data/{split}_candidates.jsonl", Candidate)
            scores = score_candidates(_ClientScorer(client()), cands, chunk_size=cfg.score_batch_size * 4,
                                      desc=f"score {split} {verifier.name}")
            write_records(path, scores)

        paths = {split: self.out / f"scores/{split}_{verifier.name}.jsonl" for split in splits}
        try:
            for split, path in paths.items():
                # batch sizes and replica counts are left out: the scores do not depend on them (measured:
                # batch 64 instead of 16 moves every vote's p(Yes) by < 1e-6)
                self._stage(f"score {split} {verifier.name}", path, functools.partial(run, split, path), {
                    "mode": verifier.mode, "k": cfg.cot_k, "temperature": cfg.cot_temperature,
                    "max_new_tokens": cfg.cot_max_new_tokens, "prompt_format": cfg.prompt_format, "seed": cfg.seed})
        finally:
            if service is not None:
                service.shutdown()
        return paths

    def pool(self, stem: str, name: str, paths: list[Path]) -> Path:
        """`name`'s score file for `stem`: the runs in `paths` as one verifier (`pooled_scores`). Rewritten
        on every run (it takes well under a second), so it can never be older than the scores it pools."""
        from genrm_rl.evaluation import pooled_scores
        from genrm_rl.records import Score, read_records, write_records

        out = self.out / f"scores/{stem}_{name}.jsonl"
        write_records(out, pooled_scores([read_records(p, Score) for p in paths]))
        return out

    def run(self) -> dict:
        """The whole pipeline for one seed. Ray starts when a stage first needs it (a Ray Train
        launcher, a reward service) and, if this run started it, stops at the end: an idle local
        cluster beside an in-process training rank cost it 8-24% of its tokens/s on a 2-core CPU
        (docs/experiments.md, "an idle Ray cluster slows training")."""
        import ray

        started_ray = not ray.is_initialized()
        try:
            return self._run()
        finally:
            if started_ray and ray.is_initialized():
                ray.shutdown()

    def _run(self) -> dict:
        from genrm_rl.runtime import numerics_fingerprint
        from jobs.paper_report import evaluate_sets, write_report

        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        dump_yaml(cfg, self.out / "reproduce_config.yaml")
        t_start = time.time()
        self._stage("make data", self.out / "data/test_problems.jsonl", self.make_data, {
            "task": cfg.task, "num_val_problems": cfg.num_val_problems, "num_test_problems": cfg.num_test_problems,
            "verifier_train_problems": cfg.verifier_train_problems, "seed": cfg.seed})
        base = self.base_model()
        generator = self.train_generator(base)
        policy = self.select_policy(generator)
        # The paper's verifier data: the policy's own samples on training problems, labelled by the
        # answer checker, plus the task's planted errors (balanced to as many wrong as right).
        train_cands = self.sample(policy, "train", cfg.verifier_samples_per_problem)
        self.sample(policy, "val", cfg.n)
        self.sample(policy, "test", cfg.n)
        sets = [("indist", "val", cfg.n), ("ood", "test", cfg.n)]
        if cfg.oracle_set:
            self.oracle_candidates()
            sets.append(("ood_oracle", "oracle", cfg.n_oracle))
        init = {"generator": generator, "policy": policy, "base": base}[cfg.verifier_init]
        models = self.train_verifiers(init, generator, train_cands)
        verifiers = compared_verifiers(cfg)
        scored = {v.name: self.score(v, models[v.name], [stem for _, stem, _ in sets]) for v in verifiers}
        scores = {key: {v.name: str(scored[v.name][stem]) for v in verifiers} for key, stem, _ in sets}
        if cfg.cot_pair:  # the GenRM-CoTs compared_verifiers trains: the report's and its λ ablation
            cots = [v.name for v in verifiers if v.kind == "genrm_cot"]
            for key, stem, _ in sets:
                scores[key][PAIR] = str(self.pool(stem, PAIR, [scored[name][stem] for name in cots]))
        reports = evaluate_sets(cfg, self.out, sets, scores)
        summary = {
            "task": cfg.task, "seed": cfg.seed, "output_dir": str(self.out),
            "minutes": round((time.time() - t_start) / 60, 1),
            "stage_seconds": self.timings, "stage_seconds_all_runs": self.ledger,
            "stage_minutes_total": round(sum(self.ledger.values()) / 60, 1),
            "generator_checks": self.generator_checks, "verifier_checks": self.verifier_checks,
            "policy": self.policy, "numerics": numerics_fingerprint(),
            **reports,
        }
        write_json(self.out / "summary.json", summary, indent=2)
        write_report(summary, self.out / "report.md")
        return summary


class _ClientScorer:
    """Adapts the service client to the `score(items) -> results` surface `score_candidates` uses."""

    def __init__(self, client):
        self.client = client

    def score(self, items):
        from genrm_rl.verifier import VerificationResult

        results = self.client.score([{"question": q, "solution": s} for q, s in items])
        return [VerificationResult(**r) for r in results]
