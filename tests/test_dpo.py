"""The DPO verifier baseline: preference pairs, TRL's DPOTrainer on the tiny model, the scorer."""

import contextlib
import io
import json
import math

import pytest
import torch


def test_completion_logprobs_and_dpo_reward_on_small_tensors():
    from genrm_rl.scoring import completion_logprobs, dpo_reward

    ids = torch.tensor([[0, 1, 2, 3]])
    logits = torch.zeros(1, 4, 4)  # uniform: every token has log p = -log 4
    logits[0, 1, 2] = 10.0  # ... except token 2 after position 1, which is nearly certain
    mask = torch.tensor([[0, 0, 1, 1]])  # the completion is tokens 2 and 3
    lp = completion_logprobs(logits, ids, mask)
    expected = -math.log1p(3 * math.exp(-10.0)) - math.log(4)
    assert lp.item() == pytest.approx(expected, abs=1e-5)
    assert dpo_reward(torch.tensor([-1.0]), torch.tensor([-1.0]), 0.1).item() == 0.5
    assert dpo_reward(torch.tensor([0.0]), torch.tensor([-20.0]), 0.1).item() == pytest.approx(1 / (1 + math.exp(-2)))


@pytest.fixture(scope="module")
def dpo_run(tiny_model_dir, tmp_path_factory):
    from genrm_rl.config import from_dict
    from genrm_rl.training.config import TrainConfig
    from genrm_rl.training.dpo import preference_pairs
    from genrm_rl.training.launch import run_training

    out = tmp_path_factory.mktemp("dpo")
    cfg = from_dict(TrainConfig, {
        "objective": "dpo", "model": tiny_model_dir, "output_dir": str(out), "launcher": "local",
        "data": {"task": "last_letter", "num_problems": 48, "val_fraction": 0.0}, "max_steps": 40,
        "micro_batch_size": 8, "lr": 1e-3, "dpo_beta": 0.1, "log_every": 10, "warmup_ratio": 0.0,
    })
    console = io.StringIO()
    with contextlib.redirect_stdout(console), contextlib.redirect_stderr(console):
        result = run_training(cfg)
    rows, _ = preference_pairs(cfg)
    return cfg, result, rows, out, console.getvalue()


def test_preference_pairs_pair_a_correct_with_an_incorrect_solution(dpo_run):
    from genrm_rl.config import from_dict
    from genrm_rl.prompts import get_prompt_format
    from genrm_rl.tasks import Problem, get_task
    from genrm_rl.training.config import TrainConfig

    cfg, _, rows, _, _ = dpo_run
    task, fmt = get_task("last_letter"), get_prompt_format("compact")
    assert len(rows) == 48  # one planted error per problem
    for row in rows:
        problem = Problem("p", task.name, row["question"], task.target(task.items(row["question"])))
        assert row["prompt"] == fmt.generation(row["question"])
        assert task.is_correct(problem, row["chosen"]) and not task.is_correct(problem, row["rejected"])
    with pytest.raises(ValueError, match="ray.num_workers=1"):
        from_dict(TrainConfig, {"objective": "dpo", "model": cfg.model, "launcher": "ray", "ray": {"num_workers": 2}})


def test_dpo_trains_with_trl_and_scores_by_implicit_reward(dpo_run, tiny_model_dir):
    from genrm_rl.modeling import load_causal_lm, load_tokenizer
    from genrm_rl.prompts import get_prompt_format
    from genrm_rl.verifier import VerifierConfig, build_scorer

    cfg, result, rows, out, console = dpo_run
    assert result["step"] == 40 and result["pairs"] == 48
    # the console shows one progress bar like the other training stages, not the Trainer's log dict
    # per step, a bar per dataset map or transformers' per-load bars
    assert "train dpo" in console and "40/40" in console, console[-2000:]
    for noise in ("{'loss'", "Loading weights", "Writing model shards", "Tokenizing", "Adding EOS"):
        assert noise not in console, (noise, console[-2000:])
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("rewards/margins" in m for m in logged)
    meta = json.loads((out / "model" / "genrm_rl.json").read_text())
    assert meta["objective"] == "dpo" and meta["ref_model"] == cfg.model and meta["beta"] == 0.1

    scorer = build_scorer(VerifierConfig(model=str(out / "model"), mode="dpo", device="cpu", batch_size=4))
    fmt = get_prompt_format("compact")
    pairs = [(r["question"], r["chosen"]) for r in rows[:16]] + [(r["question"], r["rejected"]) for r in rows[:16]]
    scores = [r.score for r in scorer.score(pairs)]
    # DPO raised the preferred solutions over the rejected ones on its training pairs
    assert sum(c > r for c, r in zip(scores[:16], scores[16:], strict=True)) >= 12, scores

    # the batched, padded score equals a plain forward of one sequence through both models
    tok = load_tokenizer(str(out / "model"))
    q, s = pairs[3]
    prompt = tok(fmt.generation(q), add_special_tokens=False).input_ids
    ids = torch.tensor([prompt + tok(s, add_special_tokens=False).input_ids + [tok.eos_token_id]])

    def logp(model_dir):
        logits = load_causal_lm(model_dir, "cpu")(ids).logits[0].log_softmax(-1)
        return sum(logits[t - 1, ids[0, t]].item() for t in range(len(prompt), ids.shape[1]))

    manual = 1 / (1 + math.exp(-0.1 * (logp(str(out / "model")) - logp(tiny_model_dir))))
    assert scores[3] == pytest.approx(manual, abs=1e-4)

    # a model scored against itself has implicit reward 0
    same = build_scorer(VerifierConfig(model=str(out / "model"), mode="dpo", device="cpu", ref_model=str(out / "model")))
    assert [r.score for r in same.score(pairs[:3])] == pytest.approx([0.5] * 3)


def test_dpo_as_a_ray_task_then_served_by_the_reward_service(ray_session, tiny_model_dir, tmp_path):
    """launcher: ray runs TRL as one Ray task; the exported model is a `mode: dpo` reward service."""
    from genrm_rl.config import from_dict
    from genrm_rl.training.config import TrainConfig
    from genrm_rl.training.launch import run_training
    from genrm_rl.verifier import VerifierConfig, build_scorer
    from reward.config import ServeConfig
    from reward.service import start_service

    cfg = from_dict(TrainConfig, {
        "objective": "dpo", "model": tiny_model_dir, "output_dir": str(tmp_path / "dpo"), "launcher": "ray",
        "ray": {"num_workers": 1, "cpus_per_worker": 1}, "data": {"task": "last_letter", "num_problems": 16},
        "max_steps": 4, "micro_batch_size": 4, "lr": 1e-3, "log_every": 2,
    })
    assert run_training(cfg)["step"] == 4
    model = str(tmp_path / "dpo" / "model")
    items = [("Take the last letters of the words in \"cat dog\" and concatenate them.", "The answer is tg."),
             ("Take the last letters of the words in \"red sun\" and concatenate them.", "The answer is dx.")]
    service = start_service(from_dict(ServeConfig, {
        "verifier": {"model": model, "mode": "dpo", "device": "cpu"}, "num_replicas": 1, "replica_cpus": 0.25,
        "http": False, "router_name": "test_dpo_router"}))
    try:
        served = service.client().score([{"question": q, "solution": s} for q, s in items])
        with pytest.raises(Exception, match="mode 'cot' is not available"):
            service.client().score([{"question": "q", "solution": "s"}], mode="cot")
    finally:
        service.shutdown()
    direct = build_scorer(VerifierConfig(model=model, mode="dpo", device="cpu")).score(items)
    assert [r["score"] for r in served] == pytest.approx([r.score for r in direct], abs=1e-6)
    assert all(r["mode"] == "dpo" for r in served)
