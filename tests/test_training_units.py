"""Training building blocks on small tensors: losses, the DeepSpeed config function, data mixing."""

import re

import pytest
import torch

from genrm_rl.training.losses import IGNORE, joint_sft_loss, orm_loss, token_losses


def _logits_for(targets, vocab=5, confident=None):
    """Logits [1, T, V] that put probability p on the target of each next position."""
    logits = torch.zeros(1, len(targets), vocab)
    if confident is not None:
        for t, tok in enumerate(targets[1:]):
            logits[0, t, tok] = confident
    return logits


def test_token_losses_mask_prompt_tokens():
    labels = torch.tensor([[IGNORE, IGNORE, 2, 3]])
    loss, mask = token_losses(_logits_for([0, 1, 2, 3]), labels)
    assert mask.tolist() == [[False, True, True]]
    assert loss[0, 1].item() == pytest.approx(torch.log(torch.tensor(5.0)).item())
    assert loss[0, 0].item() == 0.0


def test_joint_loss_modes():
    logits = torch.zeros(2, 3, 4)
    logits[0, :, 1] = 3.0  # the verification example predicts its labels well, the generation one does not
    labels = torch.tensor([[IGNORE, 1, 1], [IGNORE, 2, 2]])
    kinds = torch.tensor([0, 1])
    per_tok = token_losses(logits, labels)[0]
    lv, lg = per_tok[0].sum() / 2, per_tok[1].sum() / 2
    mix, m = joint_sft_loss(logits, labels, kinds, gen_weight=0.25, mode="mix")
    assert mix.item() == pytest.approx(((lv + lg) / 2).item())
    weighted, m2 = joint_sft_loss(logits, labels, kinds, gen_weight=0.25, mode="loss")
    assert weighted.item() == pytest.approx((lv + 0.25 * lg).item())
    assert m2["loss_verify"] == pytest.approx(lv.item()) and m2["loss_generate"] == pytest.approx(lg.item())
    only_verify, m3 = joint_sft_loss(logits[:1], labels[:1], kinds[:1], gen_weight=0.25, mode="loss")
    assert only_verify.item() == pytest.approx(lv.item()) and "loss_generate" not in m3
    with pytest.raises(ValueError):
        joint_sft_loss(logits, labels, kinds, 0.25, "sum")


def test_orm_loss_is_class_balanced():
    logits = torch.tensor([0.0, 0.0])
    labels = torch.tensor([1.0, 0.0])
    l1, _ = orm_loss(logits, labels, pos_weight=1.0)
    l3, _ = orm_loss(logits, labels, pos_weight=3.0)
    assert l1.item() == pytest.approx(torch.log(torch.tensor(2.0)).item())
    assert l3.item() == pytest.approx(((3 + 1) / 2 * torch.log(torch.tensor(2.0))).item())


def _cfg(**kw):
    from genrm_rl.config import from_dict
    from genrm_rl.training.config import TrainConfig

    return from_dict(TrainConfig, {"model": "m", **kw})


def test_deepspeed_config_builder_fills_every_auto():
    from genrm_rl.training.ds_config import build_deepspeed_config

    cfg = _cfg(micro_batch_size=4, grad_accum=2, lr=5e-4, deepspeed={"zero_stage": 3})
    ds = build_deepspeed_config(cfg, world_size=8, total_steps=100, on_gpu=True)
    assert ds["train_batch_size"] == 4 * 2 * 8 and ds["zero_optimization"]["stage"] == 3
    assert ds["bf16"]["enabled"] is True and ds["optimizer"]["params"]["lr"] == 5e-4
    assert "torch_adam" not in ds["optimizer"]["params"]
    assert ds["scheduler"]["params"]["total_num_steps"] == 100 and ds["scheduler"]["params"]["warmup_num_steps"] == 5
    cpu = build_deepspeed_config(_cfg(), world_size=2, total_steps=10, on_gpu=False)
    assert cpu["bf16"]["enabled"] is False and cpu["optimizer"]["params"]["torch_adam"] is True
    assert cpu["zero_optimization"]["stage"] == 2
    with pytest.raises(ValueError, match="does not fill"):
        build_deepspeed_config(_cfg(), 1, 10, False, template={"foo": "auto"})


def test_train_config_validation():
    with pytest.raises(ValueError, match="model is required"):
        _cfg(model="")
    with pytest.raises(ValueError, match="gen_weight"):
        _cfg(gen_weight=-1)
    with pytest.raises(ValueError, match="no ZeRO-3"):
        _cfg(engine="torch", deepspeed={"zero_stage": 3})
    with pytest.raises(ValueError, match="ray.num_workers"):
        _cfg(ray={"num_workers": 0})


def test_examples_and_lambda_mixing(tiny_model_dir):
    from genrm_rl.training.data import TrainDataConfig, build_examples, tokenize_examples

    data = TrainDataConfig(task="last_letter", num_problems=60, negatives_per_problem=1)
    cot, stats = build_examples("genrm_cot", data, gen_weight=0.25, gen_weight_mode="mix", eos_token="<eos>")
    assert stats.verify == 120 and stats.generate == 30  # λ = 1/4 as a mixing ratio
    verify = [e for e in cot if e.kind == "verify"]
    assert sum(e.completion.startswith(e.completion.split("\n")[0]) for e in verify) == 120
    assert all(e.prompt.endswith("Verification: Let's verify step by step.\n") for e in verify)
    assert sum(e.completion.endswith("(Yes/No)? Yes<eos>") for e in verify) == 60
    direct, _ = build_examples("genrm_direct", data, 0.0, "mix", "<eos>")
    assert {e.completion for e in direct} == {" Yes<eos>", " No<eos>"}
    orm, st = build_examples("orm", data, 0.0, "mix", "")
    assert st.orm_pos == 60 and st.orm_neg == 60 and all(e.label in (0.0, 1.0) for e in orm)
    gen, _ = build_examples("generator", data, 0.0, "mix", "<eos>")
    assert len(gen) == 60 and all(e.completion.endswith("<eos>") for e in gen)
    loss_mode, stats = build_examples("genrm_cot", data, 0.25, "loss", "<eos>")
    assert stats.generate == 60  # as a loss weight every correct solution is used

    from genrm_rl.modeling import load_tokenizer

    tok = load_tokenizer(tiny_model_dir, "right")
    tokens, too_long = tokenize_examples(cot[:5], tok, max_length=10_000)
    assert too_long == 0
    for t, e in zip(tokens, cot[:5], strict=True):
        n_prompt = len(tok(e.prompt, add_special_tokens=False).input_ids)
        assert t.labels[:n_prompt] == [-100] * n_prompt and t.labels[n_prompt:] == t.input_ids[n_prompt:]
    _, dropped = tokenize_examples(cot[:5], tok, max_length=20)
    assert dropped == 5


def test_rationale_rows_reach_every_verification_example():
    """`data.rationale_rows: ends` changes only the rows of the verification completions (six each);
    the examples, their order and labels stay those of the default layout. A bad value is a clear error."""
    from genrm_rl.config import from_dict
    from genrm_rl.training.data import TrainDataConfig, build_examples

    base = TrainDataConfig(task="last_letter", num_problems=40, negatives_per_problem=1, balance=True)
    ends = TrainDataConfig(task="last_letter", num_problems=40, negatives_per_problem=1, balance=True,
                           rationale_rows="ends")
    a, _ = build_examples("genrm_cot", base, 0.25, "mix", "")
    b, _ = build_examples("genrm_cot", ends, 0.25, "mix", "")
    assert [(e.prompt, e.kind) for e in a] == [(e.prompt, e.kind) for e in b]
    for x, y in zip(a, b, strict=True):
        assert x.completion.splitlines()[-1] == y.completion.splitlines()[-1]
        if y.kind == "verify":
            rows = [line for line in y.completion.splitlines() if re.fullmatch(r"\S/\S[+-]", line)]
            assert len(rows) == 6
    with pytest.raises(ValueError, match="rationale_rows"):
        from_dict(TrainDataConfig, {"task": "last_letter", "rationale_rows": "middle"})


def test_long_answer_verdicts_are_left_out_of_the_loss_only_when_asked():
    """`mask_long_answer_verdicts`: a GenRM-CoT example whose answer is longer than the right one ends
    its completion before the verdict (no Yes/No, no EOS); every other example and every prompt is as
    without it. Without a task there is no right answer to compare with: a clear error."""
    from genrm_rl.config import from_dict
    from genrm_rl.tasks import get_task
    from genrm_rl.training.data import TrainDataConfig, build_examples

    task = get_task("last_letter")
    kwargs = dict(task="last_letter", num_problems=40, negatives_per_problem=1, long_negatives_per_problem=1,
                  rationale_rows="ends", verify_input="answer", balance=True)
    plain, _ = build_examples("genrm_cot", TrainDataConfig(**kwargs), 0.25, "mix", "</s>")
    masked, stats = build_examples("genrm_cot", TrainDataConfig(**kwargs, mask_long_answer_verdicts=True),
                                   0.25, "mix", "</s>")
    assert [(e.prompt, e.kind) for e in plain] == [(e.prompt, e.kind) for e in masked]
    changed = 0
    for x, y in zip(plain, masked, strict=True):
        answer = x.prompt.rsplit("The answer is ", 1)[-1].split(".")[0] if x.kind == "verify" else ""
        question = x.prompt.split("Q: ", 1)[1].split("\n")[0]
        if x.kind == "verify" and len(answer) > len(task.target(task.items(question))):
            assert x.completion.endswith("(Yes/No)? No</s>") and y.completion == x.completion[: -len("No</s>")]
            changed += 1
        else:
            assert y.completion == x.completion
    assert changed == stats.verdicts_masked >= 40  # at least the long negatives, one per problem
    with pytest.raises(ValueError, match="mask_long_answer_verdicts"):
        from_dict(TrainDataConfig, {"task": "", "candidates_files": ["x.jsonl"], "mask_long_answer_verdicts": True})


def test_foreign_negatives_are_other_problems_solutions_of_the_same_length():
    from genrm_rl.tasks import get_task
    from genrm_rl.training.data import TrainDataConfig, build_examples

    task = get_task("last_letter")
    base = TrainDataConfig(task="last_letter", num_problems=60, negatives_per_problem=1)
    plain, _ = build_examples("genrm_cot", base, 0.0, "mix", "")
    data = TrainDataConfig(task="last_letter", num_problems=60, negatives_per_problem=1, foreign_negatives_per_problem=2)
    cot, stats = build_examples("genrm_cot", data, 0.0, "mix", "")
    assert stats.foreign_negatives == 120 and stats.verify == 240
    assert [e.completion for e in cot[::4]] == [e.completion for e in plain[::2]]  # the rest is unchanged
    questions = {e.prompt.split("\n")[0] for e in cot}
    for e in cot[2::4] + cot[3::4]:  # each problem: good, planted, foreign, foreign
        question = e.prompt.split("\nA:")[0].removeprefix("Q: ")
        solution = e.prompt.split("step by step.\n", 1)[1].rsplit("\nVerification", 1)[0]
        items = task.items(question)
        assert e.completion.endswith("(Yes/No)? No") and len(solution.splitlines()) == len(items) + 2
        assert task.extract_answer(solution) != task.target(items) and solution != task.solve(
            __import__("genrm_rl.tasks", fromlist=["Problem"]).Problem("p", "last_letter", question, ""))
    assert len(questions) == 60
    with pytest.raises(ValueError, match="foreign_negatives_per_problem"):
        TrainDataConfig(task="last_letter", foreign_negatives_per_problem=-1)


def test_long_negatives_and_answer_only_verification_prompts():
    """`long_negatives_per_problem` adds, per problem, the reference with 2-4 letters appended to its
    answer (wrong, longer than the list) and leaves every other example as it was;
    `verify_input: answer` shows verification prompts only the answer line, while the λ term still
    trains on whole solutions. Tasks without long answers and bad values are clear errors."""
    from genrm_rl.config import from_dict
    from genrm_rl.tasks import get_task
    from genrm_rl.training.data import TrainDataConfig, build_examples

    task = get_task("last_letter")
    base = TrainDataConfig(task="last_letter", num_problems=30, negatives_per_problem=1)
    plain, _ = build_examples("genrm_cot", base, 0.0, "mix", "")
    data = TrainDataConfig(task="last_letter", num_problems=30, negatives_per_problem=1, long_negatives_per_problem=1)
    cot, stats = build_examples("genrm_cot", data, 0.0, "mix", "")
    assert stats.verify == 90
    assert [e.completion for i, e in enumerate(cot) if i % 3 != 2] == [e.completion for e in plain]
    for e in cot[2::3]:  # each problem: good, planted, long
        question = e.prompt.split("\nA:")[0].removeprefix("Q: ")
        solution = e.prompt.split("step by step.\n", 1)[1].rsplit("\nVerification", 1)[0]
        target = task.target(task.items(question))
        answer = task.extract_answer(solution)
        assert answer.startswith(target) and 2 <= len(answer) - len(target) <= 4
        assert e.completion.endswith("(Yes/No)? No")
    answer_only = TrainDataConfig(task="last_letter", num_problems=30, negatives_per_problem=1, verify_input="answer")
    short, _ = build_examples("genrm_cot", answer_only, 0.25, "mix", "")
    verify = [e for e in short if e.kind == "verify"]
    assert [e.completion for e in verify] == [e.completion for e in plain]  # same rationales, shorter prompts
    for e in verify:
        shown = e.prompt.split("step by step.\n", 1)[1].rsplit("\nVerification", 1)[0]
        assert shown.startswith("The answer is") and "\n" not in shown
    generate = [e for e in short if e.kind == "generate"]
    assert generate and all(e.completion.count("\n") >= 3 for e in generate)  # whole walks
    direct, _ = build_examples("genrm_direct", answer_only, 0.0, "mix", "")
    assert all(e.prompt.split("step by step.\n", 1)[1].startswith("The answer is") for e in direct)
    with pytest.raises(ValueError, match="task 'gsm8k' has no long-answer negatives"):
        TrainDataConfig(task="gsm8k", long_negatives_per_problem=1)  # at config time, before any data is built
    with pytest.raises(ValueError, match="long_negatives_per_problem"):
        TrainDataConfig(task="last_letter", long_negatives_per_problem=-1)
    with pytest.raises(ValueError, match="verify_input"):
        from_dict(TrainDataConfig, {"task": "last_letter", "verify_input": "steps"})


def test_epoch_shards_cover_data_once_per_rank_group():
    from genrm_rl.training.worker import epoch_shard

    shards = [epoch_shard(10, epoch=0, seed=1, rank=r, world=2, micro_bs=3) for r in range(2)]
    assert len(shards[0]) == len(shards[1])
    seen = [i for s in shards for b in s for i in b]
    assert set(seen) == set(range(10))
    assert epoch_shard(10, 1, 1, 0, 2, 3) != shards[0]  # reshuffled each epoch


def test_viewed_generation_shows_the_lambda_term_the_verifiers_view():
    """`viewed_generation`: a GenRM objective's generation examples show the question through
    `question_view` (solutions unchanged), its verification examples are as without it, and the
    generator still solves the question as asked. With the question as asked there is nothing to
    view: a clear error naming both options."""
    from genrm_rl.config import from_dict
    from genrm_rl.prompts import aligned_view
    from genrm_rl.training.data import TrainDataConfig, build_examples

    kwargs = dict(task="last_letter", num_problems=30, rationale_rows="ends", verify_input="answer",
                  question_view="ends", balance=True)
    plain, _ = build_examples("genrm_cot", TrainDataConfig(**kwargs), 0.5, "mix", "</s>")
    viewed, _ = build_examples("genrm_cot", TrainDataConfig(**kwargs, viewed_generation=True), 0.5, "mix", "</s>")
    assert [(e.prompt, e.completion) for e in plain if e.kind == "verify"] == \
        [(e.prompt, e.completion) for e in viewed if e.kind == "verify"]
    generated = [(x, y) for x, y in zip(plain, viewed, strict=True) if x.kind == "generate"]
    assert generated and all(x.completion == y.completion for x, y in generated)
    for x, y in generated:
        question = x.prompt.split("Q: ", 1)[1].split("\nA: ", 1)[0]
        assert '"..."' not in question and y.prompt == x.prompt.replace(question, aligned_view(question, ends=True))
    solver, _ = build_examples("generator", TrainDataConfig(**kwargs, viewed_generation=True), 0.0, "mix", "</s>")
    assert solver and all('"..."' not in e.prompt for e in solver)
    with pytest.raises(ValueError, match="viewed_generation.*question_view"):
        from_dict(TrainDataConfig, {"task": "last_letter", "viewed_generation": True})
