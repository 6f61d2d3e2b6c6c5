"""Best-of-N estimators, exact (no sampling where a closed form exists), as pure functions.

For one problem with M candidates and a uniformly random subset of size N:
- Best-of-N: the top-scored candidate of the subset, ties broken uniformly at random. Group the
  candidates by score; with `a` candidates strictly below a group of `t` (of which `c` correct),
  P(the subset's best score is that group's) = [C(a+t, N) - C(a, N)] / C(M, N), and by symmetry
  the pick inside the group is uniform, so it is correct with probability c/t.
- Self-consistency: the most frequent answer in the subset, ties uniform. Exact via a dynamic
  programme over the other answers' counts (multivariate hypergeometric).
- Weighted self-consistency: the answer with the largest summed score. No closed form: exact
  enumeration of all C(M, N) subsets up to `max_subsets`, else a seeded Monte Carlo estimate.
- Pass@N: 1 - C(M-c, N)/C(M, N) (the unbiased estimator of Chen et al. 2021).
- Best-of-N with k of a candidate's K verification votes (GenRM-CoT against inference-time
  compute): the mean over every k-subset of vote positions, not only the first k, which is one
  noisy draw of the same expectation (seeded random subsets past `max_subsets`).
Candidates without an extracted answer vote for "no answer", which is never correct.

Across problems: `within_problem_order` (how often a correct candidate outscores a wrong one of the
same problem, the ranking Best-of-N needs) and percentile-bootstrap intervals over problems, for a
mean and for the paired difference of two methods on the same problems.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Sequence
from math import comb

import numpy as np


def _check(n: int, m: int) -> None:
    if not 1 <= n <= m:
        raise ValueError(f"N={n} needs 1 <= N <= number of candidates ({m})")


def best_of_n(scores: Sequence[float], correct: Sequence[bool], n: int) -> float:
    m = len(scores)
    _check(n, m)
    total = comb(m, n)
    order = sorted(range(m), key=lambda i: scores[i])
    result, below, i = 0.0, 0, 0
    while i < m:
        j = i
        while j < m and scores[order[j]] == scores[order[i]]:
            j += 1
        tied = j - i
        n_correct = sum(bool(correct[order[x]]) for x in range(i, j))
        p_top = (comb(below + tied, n) - comb(below, n)) / total
        result += p_top * n_correct / tied
        below += tied
        i = j
    return result


def best_of_n_with_k_votes(votes: Sequence[Sequence[float]], correct: Sequence[bool], n: int, k: int,
                           max_subsets: int = 500, seed: int = 0) -> float:
    """Best-of-N when each candidate is scored by the mean of k of its K votes. Votes are
    exchangeable draws per candidate, so every choice of k positions estimates the same expectation;
    this averages Best-of-N over all C(K, k) of them (the same positions for every candidate), or
    over `max_subsets` seeded random ones when there are more."""
    if not votes:
        raise ValueError("no candidates")
    width = len(votes[0])
    if any(len(v) != width for v in votes):
        raise ValueError(f"every candidate needs the same number of votes, got {sorted({len(v) for v in votes})}")
    if not 1 <= k <= width:
        raise ValueError(f"k={k} needs 1 <= k <= number of votes ({width})")
    if comb(width, k) <= max_subsets:
        subsets = list(itertools.combinations(range(width), k))
    else:
        rng = np.random.default_rng(seed)
        subsets = [tuple(sorted(rng.choice(width, size=k, replace=False))) for _ in range(max_subsets)]
    return float(np.mean([best_of_n([sum(v[i] for i in s) / k for v in votes], correct, n) for s in subsets]))


def pass_at_n(correct: Sequence[bool], n: int) -> float:
    m = len(correct)
    _check(n, m)
    c = sum(bool(x) for x in correct)
    return 1.0 - comb(m - c, n) / comb(m, n)


def _answer_groups(answers: Sequence[Hashable | None], correct: Sequence[bool]) -> tuple[list[int], list[float], list[int]]:
    """Group candidates by answer: (sizes, correctness of each group, group index per candidate)."""
    index: dict = {}
    member = []
    for a in answers:
        key = ("<no answer>",) if a is None else a
        member.append(index.setdefault(key, len(index)))
    sizes = [0] * len(index)
    n_correct = [0] * len(index)
    for g, ok, a in zip(member, correct, answers, strict=True):
        sizes[g] += 1
        n_correct[g] += bool(ok) and a is not None
    return sizes, [c / s for c, s in zip(n_correct, sizes, strict=True)], member


def self_consistency(answers: Sequence[Hashable | None], correct: Sequence[bool], n: int) -> float:
    m = len(answers)
    _check(n, m)
    sizes, group_correct, _ = _answer_groups(answers, correct)
    total = comb(m, n)
    result = 0.0
    for g, size in enumerate(sizes):
        if group_correct[g] == 0:
            continue
        others = [s for h, s in enumerate(sizes) if h != g]
        p_win = 0.0
        for k in range(1, min(size, n) + 1):
            # ways[j][t]: choose j items from the other groups, each group <= k items, t groups with exactly k
            ways = [[0] * (len(others) + 1) for _ in range(n - k + 1)]
            ways[0][0] = 1
            for s in others:
                new = [[0] * (len(others) + 1) for _ in range(n - k + 1)]
                for j in range(n - k + 1):
                    for t in range(len(others) + 1):
                        if ways[j][t] == 0:
                            continue
                        for x in range(0, min(s, k, n - k - j) + 1):
                            new[j + x][t + (x == k)] += ways[j][t] * comb(s, x)
                ways = new
            p_win += comb(size, k) * sum(w / (t + 1) for t, w in enumerate(ways[n - k]))
        result += group_correct[g] * p_win / total
    return result


def weighted_self_consistency(answers: Sequence[Hashable | None], scores: Sequence[float], correct: Sequence[bool],
                              n: int, max_subsets: int = 200_000, samples: int = 20_000, seed: int = 0) -> float:
    m = len(answers)
    _check(n, m)
    _, group_correct, member = _answer_groups(answers, correct)
    onehot = np.zeros((m, len(group_correct)))
    onehot[np.arange(m), member] = 1.0
    weighted = onehot * np.asarray(scores, dtype=float)[:, None]
    if comb(m, n) <= max_subsets:
        subsets = np.array(list(itertools.combinations(range(m), n)))
    else:
        rng = np.random.default_rng(seed)
        subsets = np.argsort(rng.random((samples, m)), axis=1)[:, :n]
    chosen = np.zeros((len(subsets), m), dtype=bool)
    np.put_along_axis(chosen, subsets, True, axis=1)
    sums = chosen @ weighted
    present = (chosen @ onehot) > 0
    sums[~present] = -np.inf
    best = sums.max(axis=1, keepdims=True)
    tied = np.isclose(sums, best, rtol=0, atol=1e-12) & present
    gc = np.asarray(group_correct)
    return float(np.mean((tied * gc).sum(axis=1) / tied.sum(axis=1)))


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Probability a random correct candidate outscores a random incorrect one (ties count 1/2)."""
    pos = np.asarray([s for s, y in zip(scores, labels, strict=True) if y], dtype=float)
    neg = np.asarray([s for s, y in zip(scores, labels, strict=True) if not y], dtype=float)
    if len(pos) == 0 or len(neg) == 0:
        return None
    allv = np.concatenate([pos, neg])
    # average ranks handle ties exactly (Mann-Whitney U)
    order = np.argsort(allv, kind="mergesort")
    ranks = np.empty(len(allv))
    sorted_v = allv[order]
    i = 0
    while i < len(allv):
        j = i
        while j < len(allv) and sorted_v[j] == sorted_v[i]:
            j += 1
        ranks[order[i:j]] = (i + j + 1) / 2.0
        i = j
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def within_problem_order(scores: Sequence[float], correct: Sequence[bool]) -> tuple[float, int]:
    """(wins, pairs) over the (correct, wrong) candidate pairs of one problem; a tie wins 1/2."""
    pos = [s for s, y in zip(scores, correct, strict=True) if y]
    neg = [s for s, y in zip(scores, correct, strict=True) if not y]
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg)
    return wins, len(pos) * len(neg)


def separation(scores: Sequence[float], correct: Sequence[bool], groups: Sequence[Hashable]) -> dict:
    """How a verifier's scores separate right from wrong candidates: the mean score of the correct
    ones minus that of the wrong ones (p(Yes) for GenRM), and within-problem correct-over-wrong
    (candidates grouped by `groups`, e.g. their problem id)."""
    if not len(scores) == len(correct) == len(groups):
        raise ValueError(f"scores, correct and groups differ in length: {len(scores)}, {len(correct)}, {len(groups)}")
    pos = [s for s, y in zip(scores, correct, strict=True) if y]
    neg = [s for s, y in zip(scores, correct, strict=True) if not y]
    if not pos or not neg:
        raise ValueError("separation needs both correct and wrong candidates")
    by: dict = {}
    for s, y, g in zip(scores, correct, groups, strict=True):
        by.setdefault(g, ([], []))
        by[g][0].append(s)
        by[g][1].append(y)
    orders = [within_problem_order(s, y) for s, y in by.values()]
    wins, pairs = sum(w for w, _ in orders), sum(n for _, n in orders)
    return {"mean_correct": sum(pos) / len(pos), "mean_wrong": sum(neg) / len(neg),
            "separation": sum(pos) / len(pos) - sum(neg) / len(neg),
            "within_problem": wins / pairs if pairs else None}


def bootstrap_ci(values: Sequence[float], samples: int = 2000, level: float = 0.9, seed: int = 0,
                 paired_with: Sequence[float] | None = None) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-problem `values` (problems resampled with
    replacement); with `paired_with`, of the mean of values - paired_with on the same resamples."""
    x = np.asarray(values, dtype=float)
    if paired_with is not None:
        x = x - np.asarray(paired_with, dtype=float)
    if len(x) == 0:
        raise ValueError("bootstrap of zero problems")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(samples, len(x)))].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))
