"""Offline Best-of-N evaluation: candidates + one score file per method -> report, table, plot.

Why separate from the estimators: this is the I/O and validation layer (ids must match, every
problem must have >= n_max candidates) that turns `genrm_rl.bon`'s exact per-problem numbers into
the paper's curves: % problems solved vs N for every verifier, next to self-consistency, Pass@N
and the first sample.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from genrm_rl import bon
from genrm_rl.config import option
from genrm_rl.records import Candidate, RecordError, Score, index_unique, read_records


@dataclasses.dataclass
class EvalConfig:
    candidates: str = option("", help="candidates JSONL (with 'correct' labels)")
    scores: dict[str, str] = option({}, help="method=scores.jsonl, repeatable")
    n_max: int = option(16, help="largest N (powers of two up to it are reported)")
    out: str = option("bon_report.json", help="report JSON")
    plot: str = option("", help="PNG plot path ('' = next to the report)")
    table: str = option("", help="markdown table path ('' = next to the report)")
    seed: int = option(0, help="seed for Monte Carlo weighted self-consistency (large M only)")
    title: str = option("", help="plot title")

    def __post_init__(self):
        if not self.candidates:
            raise ValueError("candidates is required")
        if self.n_max < 1:
            raise ValueError(f"n_max must be >= 1, got {self.n_max}")


def n_values(n_max: int) -> list[int]:
    out, n = [], 1
    while n <= n_max:
        out.append(n)
        n *= 2
    if out[-1] != n_max:
        out.append(n_max)
    return out


def load_inputs(cfg: EvalConfig) -> tuple[dict[str, list[Candidate]], dict[str, dict[tuple[str, int], float]]]:
    cands = read_records(cfg.candidates, Candidate)
    if not cands:
        raise RecordError(f"{cfg.candidates}: no candidates")
    index_unique(cands, lambda c: (c.problem_id, c.candidate_id), "candidate ids", cfg.candidates)
    by_problem: dict[str, list[Candidate]] = defaultdict(list)
    for c in cands:
        by_problem[c.problem_id].append(c)
    short = sorted(p for p, cs in by_problem.items() if len(cs) < cfg.n_max)
    if short:
        raise RecordError(f"{cfg.candidates}: {len(short)} problem(s) have fewer than n_max={cfg.n_max} "
                          f"candidates: {short[:10]}{' ...' if len(short) > 10 else ''}")
    keys = {(c.problem_id, c.candidate_id) for c in cands}
    scores = {}
    for name, path in cfg.scores.items():
        recs = read_records(path, Score)
        table = {k: r.score for k, r in index_unique(recs, lambda r: (r.problem_id, r.candidate_id), "score ids", path).items()}
        missing = sorted(keys - table.keys())
        extra = sorted(table.keys() - keys)
        if missing:
            raise RecordError(f"{path}: no score for {len(missing)} candidate(s), e.g. {missing[:5]}")
        if extra:
            raise RecordError(f"{path}: {len(extra)} score(s) for unknown candidates, e.g. {extra[:5]}")
        scores[name] = table
    return by_problem, scores


def pooled_scores(runs: list[list[Score]]) -> list[Score]:
    """One verifier from several: each candidate's votes pooled over the runs (a run without votes
    counts its score once), its score their mean. Every run must score the same candidates."""
    if len(runs) < 2:
        raise ValueError(f"pooling needs at least two score runs, got {len(runs)}")
    by_key = [index_unique(run, lambda r: (r.problem_id, r.candidate_id), "candidate", f"score run {i}")
              for i, run in enumerate(runs)]
    for i, other in enumerate(by_key[1:], start=1):
        if other.keys() != by_key[0].keys():
            missing = sorted(by_key[0].keys() ^ other.keys())[:3]
            raise ValueError(f"score run {i} does not score the same candidates as run 0 (e.g. {missing})")
    out = []
    for key in by_key[0]:
        votes = [v for index in by_key for v in (index[key].votes or [index[key].score])]
        out.append(Score(problem_id=key[0], candidate_id=key[1], score=sum(votes) / len(votes), votes=votes))
    return out


def evaluate(by_problem: dict[str, list[Candidate]], scores: dict[str, dict], n_max: int, seed: int = 0,
             bootstrap_samples: int = 2000, weighted: bool = True) -> dict:
    """Curves over N for every method and the baselines, plus, at N = n_max, each number's per-problem
    values and its 90% bootstrap interval over problems (`per_problem`, `*_ci`), so methods can be
    compared with paired intervals (`compare`)."""
    ns = n_values(n_max)
    problems = sorted(by_problem)
    labels = {p: [c.correct for c in by_problem[p]] for p in problems}

    def curve(fn) -> tuple[list[float], list[float]]:
        """% over problems at each N, and the per-problem values at n_max."""
        rows = [[fn(by_problem[p], n) for p in problems] for n in ns]
        return [float(np.mean(r)) * 100 for r in rows], [100.0 * v for v in rows[-1]]

    def ci(values: list[float]) -> list[float]:
        return list(bon.bootstrap_ci(values, bootstrap_samples, seed=seed))

    sc, sc_pp = curve(lambda cs, n: bon.self_consistency([c.answer for c in cs], labels[cs[0].problem_id], n))
    passn, pass_pp = curve(lambda cs, n: bon.pass_at_n(labels[cs[0].problem_id], n))
    first_pp = [100.0 * float(np.mean(labels[p])) for p in problems]
    report = {
        "n": ns,
        "num_problems": len(problems),
        "num_candidates": sum(len(v) for v in by_problem.values()),
        "methods": {},
        "baselines": {"self_consistency": sc, "pass_at_n": passn, "first_sample": [float(np.mean(first_pp))] * len(ns)},
        "baselines_ci": {"self_consistency": ci(sc_pp), "pass_at_n": ci(pass_pp), "first_sample": ci(first_pp)},
        "per_problem": {"self_consistency": sc_pp, "pass_at_n": pass_pp, "first_sample": first_pp},
    }
    for name, table in scores.items():
        def s(cs, table=table):
            return [table[(c.problem_id, c.candidate_id)] for c in cs]

        flat_scores = [table[(c.problem_id, c.candidate_id)] for p in problems for c in by_problem[p]]
        flat_labels = [c.correct for p in problems for c in by_problem[p]]
        best, best_pp = curve(lambda cs, n, s=s: bon.best_of_n(s(cs), labels[cs[0].problem_id], n))
        wins, pairs = map(sum, zip(*(bon.within_problem_order(s(by_problem[p]), labels[p]) for p in problems),
                                   strict=True))
        report["per_problem"][name] = best_pp
        report["methods"][name] = {
            "best_of_n": best,
            "best_of_n_ci": ci(best_pp),
            "weighted_self_consistency": curve(
                lambda cs, n, s=s: bon.weighted_self_consistency([c.answer for c in cs], s(cs), labels[cs[0].problem_id],
                                                                 n, seed=seed))[0] if weighted else None,
            "accuracy_at_0.5": float(np.mean([(sc_ >= 0.5) == lab for sc_, lab in zip(flat_scores, flat_labels, strict=True)])) * 100,
            "auroc": bon.auroc(flat_scores, flat_labels),
            "within_problem": 100 * wins / pairs if pairs else None,
            "within_problem_pairs": int(pairs),
        }
    return report


def compare(report: dict, a: str, b: str, samples: int = 2000, seed: int = 0) -> dict:
    """Best-of-n_max of method `a` minus `b` (a method or a baseline) on the same problems, with its
    paired 90% bootstrap interval; `clear` when the whole interval is above zero."""
    pp = report["per_problem"]
    diff = float(np.mean(pp[a]) - np.mean(pp[b]))
    lo, hi = bon.bootstrap_ci(pp[a], samples, seed=seed, paired_with=pp[b])
    return {"a": a, "b": b, "difference": diff, "ci": [lo, hi], "clear": lo > 0}


def _fmt_ci(ci) -> str:
    return f"{ci[0]:.1f}-{ci[1]:.1f}" if ci else ""


def markdown_table(report: dict, weighted: bool = True) -> str:
    """Best-of-N per method and the baselines; at N = n_max its 90% bootstrap interval over problems,
    then how often a correct candidate outscores a wrong one of the same problem, and AUROC."""
    ns = report["n"]
    head = ("| method | " + " | ".join(f"N={n}" for n in ns) + f" | 90% CI at N={ns[-1]} | "
            "correct > wrong within a problem | AUROC |")
    rows = [head, "|" + "---|" * (len(ns) + 4)]
    for name, m in report["methods"].items():
        auc = "-" if m["auroc"] is None else f"{m['auroc']:.3f}"
        within = "-" if m.get("within_problem") is None else f"{m['within_problem']:.0f}%"
        rows.append(f"| {name} (Best-of-N) | " + " | ".join(f"{v:.1f}" for v in m["best_of_n"])
                    + f" | {_fmt_ci(m.get('best_of_n_ci'))} | {within} | {auc} |")
    if weighted:
        for name, m in report["methods"].items():
            if m["weighted_self_consistency"] is None:
                continue
            rows.append(f"| {name} (weighted SC) | " + " | ".join(f"{v:.1f}" for v in m["weighted_self_consistency"])
                        + " | | | |")
    labels = {"self_consistency": "self-consistency (majority)", "pass_at_n": "Pass@N (oracle)", "first_sample": "first sample"}
    for key, label in labels.items():
        rows.append(f"| {label} | " + " | ".join(f"{v:.1f}" for v in report["baselines"][key])
                    + f" | {_fmt_ci(report.get('baselines_ci', {}).get(key))} | | |")
    return "\n".join(rows) + "\n"


def plot_report(report: dict, path: str | Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = report["n"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, m in report["methods"].items():
        ax.plot(ns, m["best_of_n"], marker="o", label=f"{name} (Best-of-N)")
    ax.plot(ns, report["baselines"]["self_consistency"], marker="s", linestyle="--", label="self-consistency")
    ax.plot(ns, report["baselines"]["pass_at_n"], color="gray", linestyle=":", label="Pass@N (oracle)")
    ax.plot(ns, report["baselines"]["first_sample"], color="black", linestyle="-.", label="first sample")
    finish_bon_plot(fig, ax, ns, (f"{title}\n" if title else "") + f"Best-of-N on {report['num_problems']} problems",
                    path)


def finish_bon_plot(fig, ax, ns, title: str, path: str | Path, legend_size: int = 8) -> None:
    """The axes every Best-of-N plot shares (N on a log2 axis, % solved), then save and close."""
    import matplotlib.pyplot as plt

    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("N (candidates per problem)")
    ax.set_ylabel("% problems solved")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_eval(cfg: EvalConfig) -> dict:
    by_problem, scores = load_inputs(cfg)
    report = evaluate(by_problem, scores, cfg.n_max, cfg.seed)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    table = markdown_table(report)
    Path(cfg.table or out.with_suffix(".md")).write_text(table)
    plot_report(report, cfg.plot or out.with_suffix(".png"), cfg.title)
    return report
