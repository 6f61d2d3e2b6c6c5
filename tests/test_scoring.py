"""Scoring maths on hand-built logits, and the transformers backend's KV-cache sampling loop."""

import math

import pytest
import torch

from genrm_rl.scoring import (
    aggregate_votes,
    row_generators,
    sample_rows,
    sample_seed,
    verdict_tokens,
    yes_probability,
    yes_probability_from_logprobs,
)


def test_yes_probability_two_way_normalisation():
    logits = torch.full((2, 10), -5.0)
    logits[0, 3], logits[0, 4] = 2.0, 0.0   # yes=3, no=4
    logits[1, 3], logits[1, 4] = 0.0, 0.0
    p = yes_probability(logits, 3, 4)
    assert p[0].item() == pytest.approx(1 / (1 + math.exp(-2)))
    assert p[1].item() == pytest.approx(0.5)
    # mass on other tokens does not shrink the score
    logits[0, 7] = 50.0
    assert yes_probability(logits, 3, 4)[0].item() == pytest.approx(1 / (1 + math.exp(-2)))
    assert yes_probability_from_logprobs(math.log(0.3), math.log(0.1)) == pytest.approx(0.75)


def test_aggregate_and_sampling():
    assert aggregate_votes([0.2, 0.4, 0.9]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        aggregate_votes([])
    logits = torch.tensor([[0.0, 10.0, 0.0], [5.0, 0.0, 0.0]])
    assert sample_rows(logits, 0.0, 1.0, []).tolist() == [1, 0]
    gens = row_generators([1, 2], "cpu")
    draws = torch.stack([sample_rows(logits, 1.0, 0.5, gens) for _ in range(50)])
    assert (draws[:, 0] == 1).all()  # top-p keeps only the dominant token


def test_sampling_frequencies_follow_the_distribution():
    probs = torch.tensor([0.6, 0.3, 0.1])
    gens = row_generators(range(4000), "cpu")
    draws = sample_rows(probs.log().expand(4000, 3), 1.0, 1.0, gens)
    freq = torch.bincount(draws, minlength=3).float() / 4000
    assert torch.allclose(freq, probs, atol=0.03)
    nucleus = sample_rows(probs.log().expand(4000, 3), 1.0, 0.8, gens)  # keeps {0, 1}: 0.6/0.9 and 0.3/0.9
    assert (nucleus != 2).all() and abs((nucleus == 0).float().mean().item() - 2 / 3) < 0.03


def test_a_rows_draw_depends_on_its_seed_only():
    torch.manual_seed(0)
    logits = torch.randn(3, 50)
    seeds = [sample_seed(7, [1, 2, 3], j) for j in range(3)]
    assert len(set(seeds)) == 3 and seeds[0] == sample_seed(7, [1, 2, 3], 0) != sample_seed(8, [1, 2, 3], 0)
    together = sample_rows(logits, 1.0, 1.0, row_generators(seeds, "cpu")).tolist()
    alone = [sample_rows(logits[i:i + 1], 1.0, 1.0, row_generators([seeds[i]], "cpu")).item() for i in range(3)]
    assert together == alone


def test_verdict_tokens_strip_shared_prefix(tiny_model_dir):
    from genrm_rl.modeling import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    vt = verdict_tokens(tok)
    assert tok.decode(list(vt.prefix_ids)) == " "
    assert tok.decode([vt.yes_id]) == "Yes" and tok.decode([vt.no_id]) == "No"


def test_direct_score_equals_manual_forward(tiny_model_dir):
    from genrm_rl.modeling import load_causal_lm, load_tokenizer
    from genrm_rl.prompts import get_prompt_format
    from genrm_rl.verifier import GenerativeVerifier, VerifierConfig

    items = [("What is 1+1?", "1+1=2. The answer is 2."), ("Q", "a much longer solution " * 5)]
    v = GenerativeVerifier(VerifierConfig(model=tiny_model_dir, mode="direct", batch_size=2))
    got = [r.score for r in v.score(items)]
    tok, model = load_tokenizer(tiny_model_dir), load_causal_lm(tiny_model_dir, "cpu")
    vt = verdict_tokens(tok)
    fmt = get_prompt_format("compact")
    for (q, s), score in zip(items, got, strict=True):
        ids = tok(fmt.direct(q, s), add_special_tokens=False).input_ids + list(vt.prefix_ids)
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        assert score == pytest.approx(yes_probability(logits, vt.yes_id, vt.no_id).item(), abs=1e-5)


def test_cot_votes_match_a_full_forward_at_each_verdict(trained_verifier_dir):
    """Each CoT vote from the cached sampling loop equals p(Yes) from one uncached forward pass over
    prompt + that rationale's tokens (left padding, cache expansion and compaction change nothing)."""
    from genrm_rl.backends.hf import TransformersBackend
    from genrm_rl.prompts import get_prompt_format
    from genrm_rl.tasks import get_task
    from genrm_rl.verifier import VerifierConfig, backend_spec

    task = get_task("last_letter")
    problems = task.make_problems("val", 3, seed=5)
    fmt = get_prompt_format("compact")
    backend = TransformersBackend(backend_spec(VerifierConfig(model=trained_verifier_dir, batch_size=3)))
    prompts = [backend.tokenizer(fmt.cot(p.question, s), add_special_tokens=False).input_ids
               for p, s in zip(problems, [task.solve(problems[0]), "wrong", task.solve(problems[2])], strict=True)]
    groups = backend.sample_verdicts(prompts, k=3, temperature=1.0, top_p=1.0, max_new_tokens=200, seed=0)
    reached = 0
    for prompt, group in zip(prompts, groups, strict=True):
        assert len(group) == 3
        for sample in group:
            with torch.no_grad():
                logits = backend.model(torch.tensor([prompt + sample.token_ids])).logits[0, -1]
            want = yes_probability(logits, backend.verdict.yes_id, backend.verdict.no_id).item()
            assert sample.p_yes == pytest.approx(want, abs=1e-4)
            assert sample.text.rstrip().endswith(("Yes", "No"))
            reached += sample.reached_verdict
    assert reached > 0, "the trained verifier should reach the verdict cue on its own"


def test_forced_verdict_rule_counts_truncations(tiny_model_dir):
    from genrm_rl.verifier import GenerativeVerifier, VerifierConfig

    v = GenerativeVerifier(VerifierConfig(model=tiny_model_dir, mode="cot", k=4, max_new_tokens=5))
    r = v.score([("q", "s")])[0]
    assert r.num_forced == 4 and len(r.votes) == 4 and r.generated_tokens <= 20


def test_bad_items_rejected(tiny_model_dir):
    from genrm_rl.verifier import GenerativeVerifier, VerifierConfig

    v = GenerativeVerifier(VerifierConfig(model=tiny_model_dir, mode="direct", max_input_chars=100))
    with pytest.raises(ValueError, match=r"items\[0\].question: empty string"):
        v.score([("", "s")])
    with pytest.raises(ValueError, match=r"items\[1\]: 201 characters > max_input_chars=100"):
        v.score([("q", "s"), ("q", "x" * 200)])
    with pytest.raises(ValueError, match=r"items\[0\].solution: expected a string"):
        v.score([("q", 3)])


def test_orm_scorer(tiny_model_dir):
    from genrm_rl.verifier import VerifierConfig, build_scorer

    r = build_scorer(VerifierConfig(model=tiny_model_dir, mode="orm")).score([("q", "s"), ("q2", "s2 longer")])
    assert [x.mode for x in r] == ["orm", "orm"] and all(0 < x.score < 1 for x in r)
    with pytest.raises(ValueError, match="transformers backend only"):
        VerifierConfig(model=tiny_model_dir, mode="orm", backend="vllm")


def test_orm_load_warns_about_what_is_unexpected_not_about_its_new_head(tiny_model_dir, tmp_path):
    """Every ORM starts as a plain LM plus a new score head: transformers' missing-key report for that
    head is dropped, while a checkpoint key the model does not have is still reported."""
    import logging
    import shutil

    from safetensors.torch import load_file, save_file

    from genrm_rl.modeling import scalar_head_from_pretrained

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__(logging.WARNING)
            self.text = ""

        def emit(self, record):
            self.text += record.getMessage() + "\n"

    hf_log, collect = logging.getLogger("transformers.modeling_utils"), Collect()
    hf_log.addHandler(collect)  # transformers' loggers do not propagate to pytest's handler
    try:
        assert scalar_head_from_pretrained(tiny_model_dir).config.num_labels == 1
        assert collect.text == ""
        odd = tmp_path / "odd"
        shutil.copytree(tiny_model_dir, odd)
        weights = load_file(odd / "model.safetensors")
        weights["model.stray.weight"] = torch.zeros(2)
        save_file(weights, odd / "model.safetensors", metadata={"format": "pt"})
        scalar_head_from_pretrained(odd)
        assert "model.stray.weight" in collect.text and "score.weight" in collect.text
        collect.text = ""
        weights = load_file(odd / "model.safetensors")  # a score head of the wrong shape: an error
        weights["score.weight"] = torch.zeros(2, 128)
        save_file(weights, odd / "model.safetensors", metadata={"format": "pt"})
        with pytest.raises(RuntimeError):
            scalar_head_from_pretrained(odd)
        assert "score.weight" in collect.text  # the report the error points to is shown
    finally:
        hf_log.removeHandler(collect)


def test_empty_candidate_scores_zero_without_a_verifier_call(tiny_model_dir):
    from genrm_rl.records import Candidate
    from genrm_rl.verifier import GenerativeVerifier, VerifierConfig, score_candidates

    v = GenerativeVerifier(VerifierConfig(model=tiny_model_dir, mode="direct"))
    cands = [Candidate("p", i, "Q?", sol, None, False) for i, sol in enumerate(["The answer is a.", "", " \n", "b"])]
    got = score_candidates(v, cands, chunk_size=3, progress=False)
    assert [(s.problem_id, s.candidate_id) for s in got] == [("p", i) for i in range(4)]
    want = [r.score for r in v.score([("Q?", "The answer is a."), ("Q?", "b")])]
    assert [s.score for s in got] == pytest.approx([want[0], 0.0, 0.0, want[1]], abs=1e-6)


def test_cot_scores_do_not_depend_on_the_batch(trained_verifier_dir):
    """A candidate's rationales depend on the seed and its own text, not on what was batched with it,
    so re-runs through a dynamically batching service give the same scores, and the first k votes of
    a K-vote run are a k-vote run."""
    from genrm_rl.tasks import get_task
    from genrm_rl.verifier import GenerativeVerifier, VerifierConfig

    task = get_task("last_letter")
    problems = task.make_problems("val", 4, seed=9)
    items = [(p.question, task.solve(p)) for p in problems]
    v = GenerativeVerifier(VerifierConfig(model=trained_verifier_dir, mode="cot", k=4, batch_size=4, max_new_tokens=120))
    together = v.score(items)
    alone = [v.score([item])[0] for item in reversed(items)][::-1]
    for a, b in zip(together, alone, strict=True):
        assert a.votes == pytest.approx(b.votes, abs=1e-5)
    fewer = v.score(items, k=2)
    for a, b in zip(together, fewer, strict=True):
        assert a.votes[:2] == pytest.approx(b.votes, abs=1e-5)


def test_adaptive_stops_rules():
    from genrm_rl.scoring import adaptive_stops, vote_interval

    mean, lo, hi = vote_interval([0.9, 0.9, 0.9, 0.9], z=2.0, sd_floor=0.1)
    assert mean == pytest.approx(0.9) and (lo, hi) == pytest.approx((0.8, 1.0))
    sure, torn = [0.95] * 4, [0.1, 0.9, 0.8, 0.2]
    # mean: the sure item's interval is above 0.5, the torn one straddles it; nothing stops before k_min
    assert adaptive_stops([sure, torn], [0, 0], "mean", k_min=4, k_max=8) == [True, False]
    assert adaptive_stops([sure[:2], torn], [0, 0], "mean", k_min=4, k_max=8) == [False, False]
    assert adaptive_stops([sure, torn * 2], [0, 0], "mean", k_min=4, k_max=8) == [True, True]  # k_max reached
    # rank: two sure items that are far apart are ordered; close ones are not, unless in other groups
    low = [0.05] * 4
    assert adaptive_stops([sure, low], [0, 0], "rank", k_min=4, k_max=8) == [True, True]
    assert adaptive_stops([sure, [0.93] * 4], [0, 0], "rank", k_min=4, k_max=8) == [False, False]
    # ... unless they are tied within the tolerance: both intervals together span 0.22
    assert adaptive_stops([sure, [0.93] * 4], [0, 0], "rank", k_min=4, k_max=8, tol=0.25) == [True, True]
    assert adaptive_stops([sure, [0.8] * 4], [0, 0], "rank", k_min=4, k_max=8, tol=0.25) == [False, False]
    assert adaptive_stops([sure, [0.93] * 4], [0, 1], "rank", k_min=4, k_max=8) == [True, True]
    assert adaptive_stops([sure, list(sure)], [0, 0], "rank", k_min=4, k_max=8) == [True, True]  # duplicates
    assert adaptive_stops([torn], [0], "none", k_min=1, k_max=8) == [False]
    # top: only the group's best matters. The low item is beaten by the sure one; the torn item (0.5 +- 0.37)
    # is neither beaten by the sure one nor above it, so it goes on; with it gone, two close low items
    # below a sure one both stop although their own order is open
    assert adaptive_stops([sure, low, torn], [0, 0, 0], "top", k_min=4, k_max=8) == [False, True, False]
    assert adaptive_stops([sure, low, [0.12] * 4], [0, 0, 0], "top", k_min=4, k_max=8) == [True, True, True]
    assert adaptive_stops([sure, low, [0.12] * 4], [0, 0, 0], "rank", k_min=4, k_max=8) == [True, False, False]
    assert adaptive_stops([sure, [0.93] * 4], [0, 0], "top", k_min=4, k_max=8, tol=0.25) == [True, True]


def test_adaptive_k_votes_are_a_prefix_of_fixed_k(trained_verifier_dir):
    """Rounds reuse each prompt's prefill and the per-candidate seeds, so an item's adaptive votes are
    exactly the first votes of a fixed-K run; decided items stop early and the rest reach k."""
    from genrm_rl.tasks import get_task
    from genrm_rl.verifier import GenerativeVerifier, VerifierConfig

    task = get_task("last_letter")
    rng = __import__("random").Random(0)
    problems = task.make_problems("val", 4, seed=11)
    items = [(p.question, task.solve(p)) for p in problems] + [(p.question, task.corrupt(p, rng)[0]) for p in problems]
    common = dict(model=trained_verifier_dir, mode="cot", k=8, batch_size=3, max_new_tokens=120)
    fixed = GenerativeVerifier(VerifierConfig(**common)).score(items)
    adaptive = GenerativeVerifier(VerifierConfig(**common, adaptive="mean", k_min=2, k_round=2)).score(items)
    for a, f in zip(adaptive, fixed, strict=True):
        assert 2 <= len(a.votes) <= 8 and len(a.votes) % 2 == 0
        assert a.votes == pytest.approx(f.votes[:len(a.votes)], abs=1e-5)


def test_verifier_uses_the_prompt_format_training_recorded(tiny_model_dir, tmp_path, caplog):
    """prompt_format auto = what the model's genrm_rl.json says; an explicit other format is used as
    asked, with a warning naming both."""
    import json
    import logging
    import shutil

    from genrm_rl.verifier import GenerativeVerifier, VerifierConfig, resolve_prompt_format

    model = tmp_path / "released_model"
    shutil.copytree(tiny_model_dir, model)
    (model / "genrm_rl.json").write_text(json.dumps({"objective": "genrm_direct", "prompt_format": "released"}))
    assert resolve_prompt_format(VerifierConfig(model=tiny_model_dir)) == "compact"  # nothing recorded
    v = GenerativeVerifier(VerifierConfig(model=str(model), mode="direct"))
    assert v.fmt.name == "released" and v.fmt.header
    with caplog.at_level(logging.WARNING, logger="genrm_rl.verifier"):
        assert resolve_prompt_format(VerifierConfig(model=str(model), prompt_format="compact")) == "compact"
    assert "trained with prompt_format 'released' but is scored with 'compact'" in caplog.text


def test_reserved_cache_layers_hold_what_concatenation_would():
    """The decoding cache writes each step in place; what attention reads must be exactly what
    transformers' concatenating layer holds, through repeats, row selection and growth past the room."""
    import torch
    from transformers.cache_utils import DynamicCache

    from genrm_rl.backends.hf import reserved_cache

    g = torch.Generator().manual_seed(0)
    prefill = DynamicCache()
    prefill.update(torch.randn(2, 3, 5, 4, generator=g), torch.randn(2, 3, 5, 4, generator=g), 0)
    reference = DynamicCache()
    reference.update(prefill.layers[0].keys.clone(), prefill.layers[0].values.clone(), 0)
    reference.batch_repeat_interleave(3)
    cache = reserved_cache(prefill, 3, room=2)
    assert prefill.layers[0].keys.shape[0] == 2  # the prefill itself is untouched (adaptive rounds reuse it)
    for step in range(4):  # 4 steps into room for 2: the layer grows
        if step == 1:
            keep = torch.tensor([0, 2, 3, 5])
            cache.batch_select_indices(keep)
            reference.batch_select_indices(keep)
        rows = cache.layers[0].keys.shape[0]
        k, v = torch.randn(rows, 3, 1, 4, generator=g), torch.randn(rows, 3, 1, 4, generator=g)
        got = cache.update(k, v, 0)
        want = reference.update(k.clone(), v.clone(), 0)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        assert cache.get_seq_length() == reference.get_seq_length() == 6 + step
