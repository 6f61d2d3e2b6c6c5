"""GRPO with TRL on CPU: a tiny policy, the real reward service, rewards checked end to end."""

import json

import pytest


@pytest.fixture(scope="module")
def reward_service(ray_session, tiny_model_dir):
    from genrm_rl.config import from_dict
    from reward.config import ServeConfig
    from reward.service import start_service

    service = start_service(from_dict(ServeConfig, {
        "verifier": {"model": tiny_model_dir, "mode": "direct"}, "num_replicas": 1, "replica_cpus": 0.25,
        "http": False, "router_name": "test_rl_router", "cache_size": 0}))
    yield service
    service.shutdown()


def _cfg(tmp_path, policy, **kw):
    from genrm_rl.config import from_dict
    from jobs.rl_grpo import RLConfig

    base = {"policy": policy, "output_dir": str(tmp_path), "num_train_problems": 16, "num_eval_problems": 4,
            "num_generations": 4, "per_device_train_batch_size": 4, "max_steps": 2, "max_completion_length": 24,
            "learning_rate": 1e-4, "report_to": ["none"], "reward": {"weight": 1.0, "rule_weight": 0.5}}
    base.update(kw)
    return from_dict(RLConfig, base)


def test_grpo_steps_use_the_service_scores(reward_service, tiny_model_dir, tmp_path):
    from genrm_rl.verifier import GenerativeVerifier, VerifierConfig
    from jobs.rl_grpo import run_rl

    # connect by router name, the way a user attaches `genrm rl` to a running `genrm-rl serve`
    # num_iterations=2: each generation batch is reused for two clipped updates, so 4 steps = 2 batches
    summary = run_rl(_cfg(tmp_path, tiny_model_dir, num_iterations=2, beta=0.01, max_steps=4,
                          reward={"weight": 1.0, "rule_weight": 0.5, "connect_router": "test_rl_router"}))
    calls = [json.loads(line) for line in (tmp_path / "reward_calls.jsonl").read_text().splitlines()]
    assert len(calls) == 2  # one reward call per generation batch, not per optimizer step
    verifier = GenerativeVerifier(VerifierConfig(model=tiny_model_dir, mode="direct"))
    logged = [h for h in summary["log_history"] if "rewards/genrm/mean" in h]
    assert len(logged) == 2
    for call, row in zip(calls, logged, strict=True):
        want = [r.score for r in verifier.score([(i["question"], i["solution"]) for i in call["items"]])]
        assert call["scores"] == pytest.approx(want, abs=1e-5)  # the trainer saw the service's scores
        assert row["rewards/genrm/mean"] == pytest.approx(sum(want) / len(want), abs=1e-4)
        assert "genrm/reward_call_latency_s" in row and "kl" in row and "rewards/correct/mean" in row
        questions = {i["question"] for i in call["items"]}
        assert all(q.startswith("Take the last letters") for q in questions)
    assert 0.0 <= summary["heldout_accuracy_after"] <= 1.0
    # sampled accuracy over num_eval_problems x eval_samples completions, before and after
    for key in ("heldout_sampled_accuracy_before", "heldout_sampled_accuracy_after"):
        assert 0.0 <= summary[key] <= 1.0 and (summary[key] * 4 * 8) == pytest.approx(round(summary[key] * 4 * 8))
    assert (tmp_path / "policy" / "model.safetensors").is_file()


def test_rloo_with_rule_reward_only(tiny_model_dir, tmp_path, capsys):
    from jobs.rl_grpo import run_rl

    summary = run_rl(_cfg(tmp_path, tiny_model_dir, trainer="rloo", max_steps=10,
                          reward={"weight": 0.0, "rule_weight": 1.0}))
    assert summary["trainer"] == "rloo" and summary["reward_weights"]["genrm"] is None
    assert sum("rewards/correct/mean" in h for h in summary["log_history"]) == 10  # every step logged
    console = "".join(capsys.readouterr())
    assert "step 10: reward" in console and "trained 10 steps" in console  # one short line per 10 steps
    assert "'rewards/correct/mean'" not in console  # not the whole metrics dict after every step
    assert "train rl" in console


def test_rl_progress_bar_redraws_every_5_s_not_every_step():
    """In a log file every redraw of a bar stays in the file: the RL bar redraws at most every 5 s,
    as the other training stages' bars do (transformers' own redraws on every step)."""
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from jobs.rl_grpo import CompactProgress

    progress = CompactProgress(every=10)
    progress.on_train_begin(TrainingArguments(output_dir="unused", report_to=[]), TrainerState(max_steps=10),
                            TrainerControl())
    try:
        assert progress.training_bar.mininterval == 5 and progress.training_bar.total == 10
    finally:
        progress.training_bar.close()


def test_failed_reward_service_fails_the_step(tiny_model_dir, tmp_path):
    from genrm_rl.runtime import free_port
    from jobs.rl_grpo import run_rl
    from reward.client import RewardServiceError

    cfg = _cfg(tmp_path, tiny_model_dir, reward={"url": f"http://127.0.0.1:{free_port()}", "retries": 1,
                                                  "timeout_s": 5.0})
    with pytest.raises(RewardServiceError, match="cannot reach"):
        run_rl(cfg)
    assert not (tmp_path / "policy").exists()  # no policy trained on garbage rewards


def test_rl_config_validation(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="nothing to optimise"):
        _cfg(tmp_path, tiny_model_dir, reward={"weight": 0.0, "rule_weight": 0.0})
    with pytest.raises(ValueError, match="eval_samples must be >= 0"):
        _cfg(tmp_path, tiny_model_dir, eval_samples=-1, reward={"weight": 0.0, "rule_weight": 1.0})
    with pytest.raises(ValueError, match="needs reward.url"):
        _cfg(tmp_path, tiny_model_dir, reward={"weight": 1.0})
    with pytest.raises(ValueError, match="num_eval_problems must be >= 1"):
        _cfg(tmp_path, tiny_model_dir, num_eval_problems=0, reward={"weight": 0.0, "rule_weight": 1.0})
    with pytest.raises(ValueError, match="logging_steps must be >= 1"):
        _cfg(tmp_path, tiny_model_dir, logging_steps=0, reward={"weight": 0.0, "rule_weight": 1.0})


def test_accuracy_greedy_ignores_n_and_sampling_is_reproducible(tiny_model_dir):
    from genrm_rl.generation import accuracy, greedy_accuracy
    from genrm_rl.modeling import load_causal_lm, load_tokenizer
    from genrm_rl.prompts import get_prompt_format
    from genrm_rl.tasks import get_task

    tok = load_tokenizer(tiny_model_dir, padding_side="left")
    model, fmt = load_causal_lm(tiny_model_dir, "cpu"), get_prompt_format("compact", tok)
    problems = get_task("last_letter").make_problems("train", 3, 0)
    assert accuracy(model, tok, problems, fmt, 16, n=5) == greedy_accuracy(model, tok, problems, fmt, 16)
    sampled = [accuracy(model, tok, problems, fmt, 16, n=4, temperature=1.0, seed=3) for _ in range(2)]
    assert sampled[0] == sampled[1] and 0.0 <= sampled[0] <= 1.0
