"""Best-of-N estimators against brute-force enumeration of every subset (ties included)."""

import itertools
import json
import random

import pytest

from genrm_rl import bon
from genrm_rl.evaluation import EvalConfig, run_eval
from genrm_rl.records import Candidate, RecordError, Score, write_records


def brute_force(scores, correct, answers, n):
    totals = [0.0, 0.0, 0.0, 0.0]
    subsets = list(itertools.combinations(range(len(scores)), n))
    for sub in subsets:
        best = max(scores[i] for i in sub)
        top = [i for i in sub if scores[i] == best]
        totals[0] += sum(correct[i] for i in top) / len(top)
        ok = {answers[i]: correct[i] and answers[i] is not None for i in sub}
        for slot, weights in ((1, {i: 1.0 for i in sub}), (2, {i: scores[i] for i in sub})):
            votes = {}
            for i in sub:
                votes[answers[i]] = votes.get(answers[i], 0.0) + weights[i]
            top_votes = max(votes.values())
            winners = [a for a, v in votes.items() if abs(v - top_votes) < 1e-12]
            totals[slot] += sum(ok[a] for a in winners) / len(winners)
        totals[3] += any(correct[i] for i in sub)
    return [t / len(subsets) for t in totals]


@pytest.mark.parametrize("seed", range(6))
def test_estimators_match_enumeration(seed):
    rng = random.Random(seed)
    for _ in range(40):
        m = rng.randint(1, 9)
        n = rng.randint(1, m)
        answers = [rng.choice(["a", "b", "c", None]) for _ in range(m)]
        correct = [a == "a" for a in answers]
        scores = [rng.choice([0.1, 0.5, 0.5, 0.9, rng.random()]) for _ in range(m)]  # many ties
        want = brute_force(scores, correct, answers, n)
        got = [bon.best_of_n(scores, correct, n), bon.self_consistency(answers, correct, n),
               bon.weighted_self_consistency(answers, scores, correct, n), bon.pass_at_n(correct, n)]
        assert got == pytest.approx(want, abs=1e-9)


def test_edge_cases():
    assert bon.best_of_n([0.5, 0.5], [True, False], 2) == 0.5
    assert bon.best_of_n([0.9, 0.1], [True, False], 1) == 0.5
    assert bon.best_of_n([0.9, 0.1], [True, False], 2) == 1.0
    assert bon.pass_at_n([False, False, True], 2) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="N=3"):
        bon.best_of_n([0.1, 0.2], [True, False], 3)
    assert bon.auroc([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]) == 0.875
    assert bon.auroc([0.5], [1]) is None


def test_separation_of_right_from_wrong():
    # problem a: right 0.9 over wrong 0.2 and 0.9 (a tie, half a win); problem b: right 0.4 below wrong 0.6
    got = bon.separation([0.9, 0.2, 0.9, 0.4, 0.6], [True, False, False, True, False], ["a", "a", "a", "b", "b"])
    assert got["mean_correct"] == pytest.approx(0.65) and got["mean_wrong"] == pytest.approx(17 / 30)
    assert got["separation"] == pytest.approx(0.65 - 17 / 30) and got["within_problem"] == pytest.approx(1.5 / 3)
    # a problem with no wrong candidate has no pairs but still counts in the means
    assert bon.separation([1.0, 0.0, 0.5], [True, False, True], [1, 1, 2])["within_problem"] == 1.0
    with pytest.raises(ValueError, match="both correct and wrong"):
        bon.separation([0.5, 0.7], [True, True], [1, 2])
    with pytest.raises(ValueError, match="differ in length"):
        bon.separation([0.5], [True, False], [1, 1])


def test_monte_carlo_path_is_close_to_exact():
    rng = random.Random(0)
    answers = [rng.choice("abcd") for _ in range(12)]
    correct = [a == "a" for a in answers]
    scores = [rng.random() for _ in range(12)]
    exact = bon.weighted_self_consistency(answers, scores, correct, 6)
    approx = bon.weighted_self_consistency(answers, scores, correct, 6, max_subsets=10, samples=20000)
    assert abs(exact - approx) < 0.02


def test_best_of_n_with_k_votes_averages_every_choice_of_k_votes():
    rng = random.Random(0)
    for _ in range(20):
        m, width = rng.randint(2, 6), rng.randint(1, 5)
        votes = [[rng.choice([0.0, 1.0, rng.random()]) for _ in range(width)] for _ in range(m)]
        correct = [rng.random() < 0.4 for _ in range(m)]
        n, k = rng.randint(1, m), rng.randint(1, width)
        subsets = list(itertools.combinations(range(width), k))
        want = sum(bon.best_of_n([sum(v[i] for i in s) / k for v in votes], correct, n) for s in subsets) / len(subsets)
        assert bon.best_of_n_with_k_votes(votes, correct, n, k) == pytest.approx(want, abs=1e-12)
        # all K votes: one subset, the score a candidate is given by the mean of its votes
        full = bon.best_of_n([sum(v) / width for v in votes], correct, n)
        assert bon.best_of_n_with_k_votes(votes, correct, n, width) == pytest.approx(full, abs=1e-12)
    # the first vote alone says the right candidate is worse; over every single vote they tie on average
    votes, correct = [[0.0, 1.0], [0.5, 0.5]], [True, False]
    assert bon.best_of_n_with_k_votes(votes, correct, 2, 1) == 0.5
    assert bon.best_of_n([v[0] for v in votes], correct, 2) == 0.0
    # past max_subsets: seeded random subsets, close to the exact mean and the same on a re-run
    votes = [[rng.random() for _ in range(12)] for _ in range(8)]
    correct = [i % 3 == 0 for i in range(8)]
    exact = bon.best_of_n_with_k_votes(votes, correct, 4, 6, max_subsets=1000)  # C(12, 6) = 924: all
    sampled = bon.best_of_n_with_k_votes(votes, correct, 4, 6, max_subsets=400, seed=1)
    assert abs(sampled - exact) < 0.03
    assert sampled == bon.best_of_n_with_k_votes(votes, correct, 4, 6, max_subsets=400, seed=1)
    with pytest.raises(ValueError, match="k=3"):
        bon.best_of_n_with_k_votes([[0.1, 0.2]], [True], 1, 3)
    with pytest.raises(ValueError, match="same number of votes"):
        bon.best_of_n_with_k_votes([[0.1, 0.2], [0.3]], [True, False], 1, 1)


def _write_eval_inputs(tmp_path, n_cands=4, problems=3):
    cands, good, bad = [], [], []
    for p in range(problems):
        for j in range(n_cands):
            ok = j == 0
            cands.append(Candidate(f"p{p}", j, "q", f"s{j}", "x" if ok else f"y{j % 2}", ok))
            good.append(Score(f"p{p}", j, 0.9 if ok else 0.1))
            bad.append(Score(f"p{p}", j, 0.1 if ok else 0.9))
    write_records(tmp_path / "c.jsonl", cands)
    write_records(tmp_path / "good.jsonl", good)
    write_records(tmp_path / "bad.jsonl", bad)


def test_eval_report_table_and_plot(tmp_path):
    _write_eval_inputs(tmp_path)
    cfg = EvalConfig(candidates=str(tmp_path / "c.jsonl"), n_max=4, out=str(tmp_path / "r.json"),
                     scores={"good": str(tmp_path / "good.jsonl"), "bad": str(tmp_path / "bad.jsonl")})
    report = run_eval(cfg)
    assert report["n"] == [1, 2, 4]
    assert report["methods"]["good"]["best_of_n"] == pytest.approx([25.0, 50.0, 100.0])
    assert report["methods"]["bad"]["best_of_n"][-1] == 0.0
    assert report["methods"]["good"]["auroc"] == 1.0 and report["methods"]["bad"]["auroc"] == 0.0
    assert report["baselines"]["pass_at_n"][-1] == 100.0
    assert json.loads((tmp_path / "r.json").read_text())["n"] == [1, 2, 4]
    assert (tmp_path / "r.png").stat().st_size > 5000 and "| good (Best-of-N)" in (tmp_path / "r.md").read_text()


def test_eval_rejects_bad_inputs(tmp_path):
    _write_eval_inputs(tmp_path)
    with pytest.raises(RecordError, match=r"fewer than n_max=8 candidates: \['p0', 'p1', 'p2'\]"):
        run_eval(EvalConfig(candidates=str(tmp_path / "c.jsonl"), n_max=8, out=str(tmp_path / "r.json")))
    lines = (tmp_path / "good.jsonl").read_text().splitlines()
    (tmp_path / "missing.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(RecordError, match=r"no score for 1 candidate\(s\), e.g. \[\('p2', 3\)\]"):
        run_eval(EvalConfig(candidates=str(tmp_path / "c.jsonl"), n_max=4, out=str(tmp_path / "r.json"),
                            scores={"m": str(tmp_path / "missing.jsonl")}))
    (tmp_path / "dup.jsonl").write_text("\n".join(lines + lines[:1]) + "\n")
    with pytest.raises(RecordError, match="duplicate score ids"):
        run_eval(EvalConfig(candidates=str(tmp_path / "c.jsonl"), n_max=4, out=str(tmp_path / "r.json"),
                            scores={"m": str(tmp_path / "dup.jsonl")}))


def test_pooled_scores_make_one_verifier_of_several():
    from genrm_rl.evaluation import pooled_scores
    from genrm_rl.records import Score

    a = [Score("p0", 0, 0.25, [0.0, 0.5]), Score("p0", 1, 1.0, [1.0, 1.0])]
    b = [Score("p0", 1, 0.0, [0.0, 0.0]), Score("p0", 0, 0.75)]  # another order; a score without votes counts once
    pooled = {(r.problem_id, r.candidate_id): r for r in pooled_scores([a, b])}
    assert pooled[("p0", 0)].votes == [0.0, 0.5, 0.75] and pooled[("p0", 0)].score == pytest.approx(1.25 / 3)
    assert pooled[("p0", 1)].votes == [1.0, 1.0, 0.0, 0.0] and pooled[("p0", 1)].score == 0.5
    with pytest.raises(ValueError, match="does not score the same candidates as run 0"):
        pooled_scores([a, b[:1]])
    with pytest.raises(ValueError, match="at least two"):
        pooled_scores([a])


def test_multi_seed_aggregate_reproduces_the_committed_three_seed_report(tmp_path):
    """`reproduce` over seeds: mean ± sd, targets met per seed, report and plot, rebuilt from the
    committed per-seed summaries, equal to the committed aggregate."""
    from pathlib import Path

    from jobs.paper_report import aggregate, plot_aggregate, plot_aggregate_k_curve, write_aggregate

    results = Path(__file__).resolve().parents[1] / "docs" / "results"
    summaries = [json.loads(p.read_text()) for p in
                 (results / "summary.json", results / "seed-1" / "summary.json", results / "seed-2" / "summary.json")]
    agg = aggregate(summaries)
    assert agg == json.loads((results / "three-seeds" / "aggregate.json").read_text())
    cot = agg["sets"]["indist"]["verifiers"]["genrm_cot"]["best_of_n"][-1]
    values = [s["sets"]["indist"]["verifiers"]["genrm_cot"]["best_of_n"][-1] for s in summaries]
    assert cot["values"] == values and cot["mean"] == pytest.approx(sum(values) / 3)
    write_aggregate(agg, tmp_path / "report.md")
    assert (tmp_path / "report.md").read_text() == (results / "three-seeds" / "report.md").read_text()
    plot_aggregate(agg["sets"]["indist"], agg["seeds"], tmp_path / "bon.png")
    assert (tmp_path / "bon.png").stat().st_size > 10_000
    # the same for the A2 default's three seeds, whose K curves average every choice of K votes
    a2 = results / "a2-avx512-three-seeds"
    agg = aggregate([json.loads((a2 / f"seed-{s}" / "summary.json").read_text()) for s in (0, 1, 2)])
    assert agg == json.loads((a2 / "aggregate.json").read_text())
    assert agg["sets"]["ood"]["k_curve"]["votes"] == "every k-subset"
    write_aggregate(agg, tmp_path / "a2.md")
    assert (tmp_path / "a2.md").read_text() == (a2 / "report.md").read_text()
    plot_aggregate_k_curve(agg["sets"]["ood"], agg["seeds"], tmp_path / "k.png")
    assert (tmp_path / "k.png").stat().st_size > 10_000
