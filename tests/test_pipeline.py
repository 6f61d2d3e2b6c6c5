"""CPU smoke run of the end-to-end reproduction and of the benchmarks (tiny sizes)."""

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_settings_drift_names_what_a_reused_stage_was_trained_with():
    from jobs.pipeline import settings_drift

    saved = {"lr": 0.002, "model": "/abs/run/base", "data": {"task": "word_sort", "exclude_problems": ["/abs/x"],
                                                             "balance": True}, "ray": {"address": ""}}
    now = {"lr": 0.005, "model": "run/base", "data": {"task": "word_sort", "exclude_problems": ["x"],
                                                      "balance": False}, "ray": {"address": "auto"}}
    assert settings_drift(saved, now) == ["data.balance: True -> False", "lr: 0.002 -> 0.005"]
    assert settings_drift(saved, saved) == []


def test_a_stage_saved_before_an_option_existed_drifts_only_from_the_options_default(tmp_path, caplog):
    from genrm_rl.config import dump_yaml, from_dict, to_dict
    from genrm_rl.training.config import TrainConfig
    from jobs.pipeline import Pipeline, ReproduceConfig

    cfg = from_dict(TrainConfig, {"objective": "orm", "model": "m", "output_dir": str(tmp_path / "orm")})
    old = to_dict(cfg)
    del old["data"]["long_negatives_per_problem"]  # the file of a stage trained before the option existed
    saved = tmp_path / "orm" / "config.yaml"
    saved.parent.mkdir()
    dump_yaml(old, saved)
    done = tmp_path / "orm" / "done"
    done.touch()
    pipeline = Pipeline(ReproduceConfig(output_dir=str(tmp_path)))

    def never():
        raise AssertionError("a finished stage ran again")

    with caplog.at_level("WARNING", logger="genrm_rl.reproduce"):
        pipeline._stage("train orm", done, never, to_dict(cfg), saved=saved)
        assert not caplog.records  # the default is what the old stage did
        changed = to_dict(cfg)
        changed["data"]["long_negatives_per_problem"] = 1
        pipeline._stage("train orm", done, never, changed, saved=saved)
    assert [r.getMessage() for r in caplog.records] == [
        f"[train orm] reusing {saved.parent}, trained with other settings (data.long_negatives_per_problem: 0 -> 1); "
        "delete it to retrain"]


def test_a_stage_trained_by_ray_train_is_reused_in_process_without_a_warning(tmp_path, caplog):
    """train_launcher: local states the threads a Ray Train worker took implicitly; neither that nor
    the launcher itself is a change of what the stage trains. Other threads are."""
    from genrm_rl.config import dump_yaml, from_dict, to_dict
    from genrm_rl.training.config import TrainConfig
    from jobs.pipeline import Pipeline, ReproduceConfig

    by_ray = from_dict(TrainConfig, {"objective": "orm", "model": "m", "output_dir": str(tmp_path / "orm"),
                                     "launcher": "ray", "ray": {"cpus_per_worker": 2.0}})
    saved = tmp_path / "orm" / "config.yaml"
    saved.parent.mkdir()
    dump_yaml(by_ray, saved)
    done = tmp_path / "orm" / "done"
    done.touch()
    pipeline = Pipeline(ReproduceConfig(output_dir=str(tmp_path), train_launcher="local", num_workers=1))
    here = to_dict(by_ray) | {"launcher": "local", "torch_threads": 2}
    with caplog.at_level("WARNING", logger="genrm_rl.reproduce"):
        pipeline._stage("train orm", done, None, here, saved=saved)
        assert not caplog.records
        pipeline._stage("train orm", done, None, here | {"torch_threads": 1}, saved=saved)
    assert "torch_threads: 2 -> 1" in caplog.records[0].getMessage()


def test_in_process_training_needs_one_rank():
    from jobs.pipeline import ReproduceConfig

    with pytest.raises(ValueError, match="train_launcher 'local' trains one rank in this process: set num_workers=1"):
        ReproduceConfig(train_launcher="local", num_workers=2)
    assert ReproduceConfig(train_launcher="local", num_workers=1).train_launcher == "local"


def test_reproduce_config_rejects_a_bad_cot_gate():
    from jobs.pipeline import ReproduceConfig

    with pytest.raises(ValueError, match="cot_pair pools the two GenRM-CoTs"):
        ReproduceConfig(cot_pair=True, cot_lambda_ablation=False)

    with pytest.raises(ValueError, match="cot_min_separation must be in"):
        ReproduceConfig(cot_min_separation=1.0)
    with pytest.raises(ValueError, match="cot_extra_steps >= 1"):
        ReproduceConfig(cot_min_separation=0.5, cot_extra_steps=0)


def test_reproduce_config_rejects_a_generator_gate_split_the_task_lacks():
    from jobs.pipeline import ReproduceConfig, StageConfig

    with pytest.raises(ValueError, match="generator_dev_split 'long' not in task 'last_letter' splits"):
        ReproduceConfig(generator_dev_split="long")
    assert ReproduceConfig(generator_dev_split="mixed").generator_dev_split == "mixed"
    with pytest.raises(ValueError, match="generator.split 'long' not in task 'last_letter' splits"):
        ReproduceConfig(generator=StageConfig(split="long"))
    with pytest.raises(ValueError, match="question_view 'ends' shows only the words at the list's ends"):
        StageConfig(question_view="ends", rationale_rows="all")
    with pytest.raises(ValueError, match="viewed_generation.*'as_asked'"):
        StageConfig(viewed_generation=True)
    with pytest.raises(ValueError, match="question_view"):
        StageConfig(question_view="sideways")


class _FakeStage:
    """A gated training stage without the training: `train(steps)` writes `model/config.json` (as
    `Pipeline.train` does) unless it is there already, and `check` passes from `pass_at` steps on."""

    def __init__(self, out: Path, pass_at: int, die_at: int | None = None):
        self.model, self.pass_at, self.die_at, self.trained = out / "model", pass_at, die_at, []

    def train(self, steps):
        if not (self.model / "config.json").is_file():
            self.trained.append(steps)
            self.model.mkdir(parents=True, exist_ok=True)
            (self.model / "config.json").write_text(json.dumps({"steps": steps}))
        return str(self.model)

    def check(self, model):
        steps = json.loads((Path(model) / "config.json").read_text())["steps"]
        if steps == self.die_at:
            raise KeyboardInterrupt("killed")
        return steps >= self.pass_at, {"at": steps}


def test_a_gate_killed_during_an_extension_resumes_where_it_stopped(tmp_path):
    from jobs.pipeline import Pipeline, ReproduceConfig

    pipeline = Pipeline(ReproduceConfig(output_dir=str(tmp_path)))
    stage = _FakeStage(tmp_path / "generator", pass_at=400, die_at=300)
    with pytest.raises(KeyboardInterrupt):
        pipeline._gated("generator", 100, 100, 5, stage.train, stage.check)
    assert stage.trained == [100, 200, 300] and not (tmp_path / "generator" / "quality_checks.json").exists()
    # the re-run goes on from the checks already made, not from 100 steps again
    stage.die_at = None
    (stage.model / "config.json").unlink()  # killed while the stage was training to 300
    model, checks = pipeline._gated("generator", 100, 100, 5, stage.train, stage.check)
    assert stage.trained == [100, 200, 300, 300, 400] and [c["steps"] for c in checks] == [100, 200, 300, 400]
    assert [c["passed"] for c in checks] == [False, False, False, True] and model == str(stage.model)
    assert sorted(p.name for p in (tmp_path / "generator").iterdir()) == ["model", "quality_checks.json"]
    # decided: a third run trains and checks nothing
    stage.trained.clear()
    assert pipeline._gated("generator", 100, 100, 5, stage.train, stage.check)[1] == checks and not stage.trained
    # out of extensions: the last check stands, failed
    stage = _FakeStage(tmp_path / "genrm_cot", pass_at=10_000)
    checks = pipeline._gated("genrm_cot", 100, 100, 2, stage.train, stage.check)[1]
    assert [c["steps"] for c in checks] == [100, 200, 300] and not any(c["passed"] for c in checks)


@pytest.mark.parametrize("name", ["quickstart.yaml", "word_sort.yaml", "word_sort_spelled.yaml", "paper_cpu.yaml",
                                  "gpu_preset.yaml"])
def test_shipped_reproduce_configs_build_every_verifiers_data(name, tmp_path):
    """What a config asks of its task is checked before the first stage, and every verifier it
    trains gets data: word_sort.yaml once inherited long-answer negatives that only last-letter had,
    and failed at its first verifier, after generator training and sampling."""
    from genrm_rl.config import load_config
    from genrm_rl.kinds import KINDS
    from genrm_rl.training.data import build_examples
    from genrm_rl.training.dpo import preference_pairs
    from jobs.pipeline import Pipeline, ReproduceConfig

    cfg = load_config(ReproduceConfig, REPO / "configs" / name, [f"output_dir={tmp_path}"])
    stage = dataclasses.replace(cfg.verifier_stage, num_problems=4)
    trained = [v for v in cfg.verifiers if KINDS[v].recipe]
    assert trained
    pipeline = Pipeline(cfg)
    for objective in trained:
        train_cfg = pipeline._train_cfg(objective, "unused", stage, tmp_path / objective, [])
        train_cfg = dataclasses.replace(train_cfg, data=dataclasses.replace(train_cfg.data, exclude_problems=[]))
        if KINDS[objective].recipe == "dpo":
            rows, _ = preference_pairs(train_cfg)
            assert rows, (name, objective)
        else:
            examples, _ = build_examples(objective, train_cfg.data, train_cfg.gen_weight, train_cfg.gen_weight_mode, "")
            assert any(e.kind != "generate" for e in examples), (name, objective)


@pytest.mark.slow
def test_reproduce_smoke(ray_session, tmp_path, caplog):
    from genrm_rl.config import from_dict
    from jobs.pipeline import Pipeline, ReproduceConfig, Verifier

    cfg = from_dict(ReproduceConfig, {
        "task": "word_sort", "output_dir": str(tmp_path / "run"),
        "tiny": {"hidden_size": 64, "num_layers": 1, "num_heads": 2, "intermediate_size": 128},
        "num_test_problems": 4, "num_val_problems": 3, "n": 4, "max_solution_tokens": 40,
        "verifier_train_problems": 10, "verifier_samples_per_problem": 2,
        "generator_min_accuracy": 1.0, "generator_extra_steps": 3, "generator_max_extensions": 1,
        "generator_dev_split": "mixed",
        "generator": {"split": "mixed", "num_problems": 60, "max_steps": 6, "micro_batch_size": 8},
        "snapshot_every": 3, "policy_accuracy": 1.0, "policy_dev_problems": 2, "policy_dev_samples": 2,
        "verifier_stage": {"num_problems": 40, "max_steps": 6, "micro_batch_size": 8, "verify_input": "answer",
                           "question_view": "aligned"},
        "cot_k": 2, "cot_k_curve": [1, 2], "cot_max_new_tokens": 24, "num_workers": 1, "cpus_per_worker": 0.5,
        "num_replicas": 1, "replica_cpus": 0.25, "score_batch_size": 8, "oracle_set": True, "n_oracle": 3,
        "bootstrap_samples": 50, "verifiers": ["genrm_cot", "genrm_direct", "orm", "llm_judge"],
        "cot_min_separation": 0.99, "cot_extra_steps": 3, "cot_max_extensions": 1, "cot_check_problems": 2,
        "cot_check_k": 1, "cot_pair": True,
    })
    caplog.set_level(logging.INFO, logger="genrm_rl.reward")
    summary = Pipeline(cfg).run()
    out = tmp_path / "run"
    # one reward service per verifier scores all three sets (a start is ~5 s of two cores)
    assert len([r for r in caplog.records if r.getMessage().startswith("reward router ready")]) == 5
    report = json.loads((out / "bon_ood.json").read_text())
    names = {"genrm_cot", "genrm_cot_lambda0", "genrm_direct", "orm", "llm_judge"}
    assert report["n"] == [1, 2, 4] and set(report["methods"]) == names | {"genrm_cot_pair"}
    assert report["num_candidates"] == 16
    assert (out / "bon_ood.png").is_file() and "| genrm_cot (Best-of-N)" in (out / "bon_ood.md").read_text()
    assert (out / "k_curve_indist.png").is_file() and summary["sets"]["indist"]["k_curve"]["k"] == [1, 2]
    oracle = json.loads((out / "bon_ood_oracle.json").read_text())
    assert oracle["n"] == [1, 2, 3] and oracle["baselines"]["pass_at_n"][-1] == 100.0  # one correct per problem
    assert len((out / "data" / "train_candidates.jsonl").read_text().splitlines()) == 20
    for stem, count in (("test", 16), ("val", 12), ("oracle", 12)):
        for name in names:
            assert len((out / "scores" / f"{stem}_{name}.jsonl").read_text().splitlines()) == count
    assert set(summary["sets"]) == {"indist", "ood", "ood_oracle"}
    # the pair: both GenRM-CoTs' votes pooled per candidate, with its own target rows
    pair = [json.loads(line) for line in (out / "scores" / "oracle_genrm_cot_pair.jsonl").read_text().splitlines()]
    assert len(pair) == 12 and all(len(r["votes"]) == 4 for r in pair)
    assert [t["target"].replace("genrm_cot_pair", "GenRM-CoT") for t in summary["targets_pair"]] == \
        [t["target"].replace("genrm_cot", "GenRM-CoT") for t in summary["targets"]]
    assert "pooled (genrm_cot_pair)" in (out / "report.md").read_text()
    assert not (out / "llm_judge").exists()  # the judge is the generator, prompted, never trained
    # the trained verifiers read only the answer line and the aligned view of the question, recorded with
    # each model for scoring
    from genrm_rl.verifier import recorded_training

    assert {recorded_training(str(out / v / "model")).get("verify_input") for v in ("genrm_cot", "genrm_direct", "orm")} \
        == {"answer"}
    assert {recorded_training(str(out / v / "model")).get("question_view") for v in ("genrm_cot", "orm")} == {"aligned"}
    # λ = 0 trains on verification data only; λ = 1/3 adds generation examples
    assert json.loads((out / "genrm_cot_lambda0" / "data_stats.json").read_text())["generate"] == 0
    assert json.loads((out / "genrm_cot" / "data_stats.json").read_text())["generate"] > 0
    # the generator missed its (impossible) accuracy bar once and was resumed for 3 more steps
    assert [c["steps"] for c in summary["generator_checks"]] == [6, 9]
    assert {c["dev_split"] for c in summary["generator_checks"]} == {"mixed"}  # the gate read 2-6-item lists
    starts = [json.loads(line) for line in (out / "generator" / "metrics.jsonl").read_text().splitlines()
              if '"event": "start"' in line]
    assert [s["resumed_from"] for s in starts] == [None, 6]
    # so did both GenRM-CoT verifiers (a dev separation of 0.99 is out of reach), each measured twice
    for name in ("genrm_cot", "genrm_cot_lambda0"):
        checks = summary["verifier_checks"][name]
        assert [c["steps"] for c in checks] == [6, 9] and all(-1 <= c["separation"] <= 1 for c in checks)
        starts = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines()
                  if '"event": "start"' in line]
        assert [s["resumed_from"] for s in starts] == [None, 6]
    assert "GenRM-CoT gate" in (out / "report.md").read_text() and "genrm_direct" not in summary["verifier_checks"]
    # no snapshot reached the (impossible) policy bar: every one was measured, the final generator is the policy
    assert [Path(c["model"]).name for c in summary["policy"]["checks"]] == ["step-3", "step-6", "step-9", "model"]
    assert (out / "policy" / "config.json").is_file()
    stats = json.loads((out / "genrm_cot" / "data_stats.json").read_text())
    assert stats["verify"] > 0 and "excluded" in stats
    assert {t["target"] for t in summary["targets"]} and "## Targets" in (out / "report.md").read_text()
    # where the numbers were made: a re-run is bitwise equal only on the same torch build, CPU kernels and
    # processor (the same AVX512 kernels gave other weights on an Intel Xeon than on an AMD EPYC)
    from genrm_rl.runtime import cpu_model

    assert summary["numerics"]["torch"] and summary["numerics"]["cpu_capability"]
    assert summary["numerics"]["cpu"] == cpu_model()
    report = (out / "report.md").read_text()
    assert ("CPU kernels" in report and cpu_model() in report) or "cuda_device" in summary["numerics"]
    # a re-run finds every stage done and only re-evaluates; with the same settings, it warns of nothing
    caplog.clear()
    again = Pipeline(cfg).run()
    assert again["stage_seconds"] == {}
    assert not [r for r in caplog.records if "with other settings" in r.getMessage()]
    assert json.loads((out / "scores" / "val_genrm_cot.settings.json").read_text())["k"] == 2
    # a changed setting does not retrain a finished stage, but says which stage and what changed
    Pipeline(cfg).train("orm", str(out / "generator" / "model"),
                        dataclasses.replace(cfg.verifier_stage, lr=cfg.verifier_stage.lr * 2), "orm")
    warned = [r.getMessage() for r in caplog.records if "trained with other settings" in r.getMessage()]
    assert len(warned) == 1 and "[train orm]" in warned[0] and "lr: " in warned[0]
    # so does a reused sampling or scoring stage
    hotter = Pipeline(dataclasses.replace(cfg, cot_temperature=0.5, sample_temperature=0.7))
    hotter.score(Verifier("genrm_cot", "genrm_cot"), str(out / "genrm_cot" / "model"), ["val"])
    hotter.sample(str(out / "policy"), "val", cfg.n)
    warned = [r.getMessage() for r in caplog.records if "made with other settings" in r.getMessage()]
    assert len(warned) == 2 and "[score val genrm_cot]" in warned[0] and "temperature: 1.0 -> 0.5" in warned[0]
    assert "[sample val candidates]" in warned[1] and "temperature: 1.0 -> 0.7" in warned[1]


@pytest.mark.slow
def test_benchmarks_smoke(ray_session, trained_verifier_dir, tmp_path):
    import random

    from genrm_rl.records import Candidate, write_records
    from genrm_rl.tasks import get_task
    from jobs.bench.cpu import BenchConfig, run_bench

    task, rng = get_task("last_letter"), random.Random(0)
    cands = []
    for p in task.make_problems("val", 3, seed=4):
        for j in range(4):
            s = task.solve(p) if j % 2 else task.corrupt(p, rng)[0]
            cands.append(Candidate(p.id, j, p.question, s, task.extract_answer(s), task.is_correct(p, s)))
    write_records(tmp_path / "cands.jsonl", cands)
    md = tmp_path / "BENCH.md"
    cfg = BenchConfig(model=trained_verifier_dir, num_pairs=4, ks=[2], batch_size=4, max_new_tokens=24,
                      naive_pairs=2, concurrency=[1, 4], service_k=2, service_pairs=6, service_threads=[1], train_steps=6, train_micro_batch=4,
                      backends=["transformers"], adaptive_candidates=str(tmp_path / "cands.jsonl"), adaptive_k=8,
                      adaptive_k_min=2, adaptive_k_round=2, soak_requests=60, soak_cache=8,
                      out_dir=str(tmp_path / "bench"), markdown=str(md))
    result = run_bench(cfg)
    assert result["config"]["device"] == "cpu"  # "auto" resolved: the same suite takes the GPU on a GPU node
    assert result["scoring"]["cot_k2"]["speedup_verifications"] > 0
    assert result["service"]["threads_1"]["http_c4"]["ok"] == 6  # service_pairs, not num_pairs
    assert result["training"]["deepspeed_zero2_2w"]["workers"] == 2
    adaptive = result["adaptive"]
    assert adaptive["fixed"]["rationales_per_item"] == 8 and 2 <= adaptive["adaptive_rank"]["rationales_per_item"] <= 8
    assert adaptive["n"] == 4 and adaptive["problems"] == 3
    assert len(result["soak"]["samples"]) == 20 and result["soak"]["samples"][-1]["requests"] == 60
    text = md.read_text()
    assert "speedup" in text and "DeepSpeed ZeRO-2 (1 worker) / plain PyTorch" in text
    assert "Adaptive K (K_max = 8)" in text and "| router |" in text


def test_gpu_benchmark_script_smoke(trained_verifier_dir):
    # the verifier was trained in this process (launcher local): its process group must not leave a
    # rendezvous address behind, or the subprocess below would try to join it
    assert not {"MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE"} & set(os.environ)
    proc = subprocess.run([sys.executable, "-m", "jobs.bench", "gpu", "shape=tiny", "device=cpu", "dtype=float32",
                           "new_tokens=8", "prompts=2", "k=2", "train_steps=2", "micro_batch=2", "seq_len=32"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert result["decode"]["batch4"]["rows"] == 4 and result["train"]["tokens_per_s"] > 0
