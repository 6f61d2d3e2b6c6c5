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


def evaluate(by_problem: dict[str, list[Candidate]], scores: dict[str, dict], n_max: int, seed: int = 0) -> dict:
    ns = n_values(n_max)
    problems = sorted(by_problem)

    def mean_over_problems(fn) -> list[float]:
        return [float(np.mean([fn(by_problem[p], n) for p in problems])) * 100 for n in ns]

    report = {
        "n": ns,
        "num_problems": len(problems),
        "num_candidates": sum(len(v) for v in by_problem.values()),
        "methods": {},
        "baselines": {
            "self_consistency": mean_over_problems(
                lambda cs, n: bon.self_consistency([c.answer for c in cs], [c.correct for c in cs], n)),
            "pass_at_n": mean_over_problems(lambda cs, n: bon.pass_at_n([c.correct for c in cs], n)),
            "first_sample": [float(np.mean([np.mean([c.correct for c in by_problem[p]]) for p in problems])) * 100] * len(ns),
        },
    }
    for name, table in scores.items():
        def s(cs, table=table):
            return [table[(c.problem_id, c.candidate_id)] for c in cs]

        flat_scores = [table[(c.problem_id, c.candidate_id)] for p in problems for c in by_problem[p]]
        flat_labels = [c.correct for p in problems for c in by_problem[p]]
        report["methods"][name] = {
            "best_of_n": mean_over_problems(lambda cs, n, s=s: bon.best_of_n(s(cs), [c.correct for c in cs], n)),
            "weighted_self_consistency": mean_over_problems(
                lambda cs, n, s=s: bon.weighted_self_consistency([c.answer for c in cs], s(cs),
                                                                 [c.correct for c in cs], n, seed=seed)),
            "accuracy_at_0.5": float(np.mean([(sc >= 0.5) == lab for sc, lab in zip(flat_scores, flat_labels, strict=True)])) * 100,
            "auroc": bon.auroc(flat_scores, flat_labels),
        }
    return report


def markdown_table(report: dict) -> str:
    ns = report["n"]
    head = "| method | " + " | ".join(f"N={n}" for n in ns) + " | acc@0.5 | AUROC |"
    rows = [head, "|" + "---|" * (len(ns) + 3)]
    for name, m in report["methods"].items():
        auc = "-" if m["auroc"] is None else f"{m['auroc']:.3f}"
        rows.append(f"| {name} (Best-of-N) | " + " | ".join(f"{v:.1f}" for v in m["best_of_n"])
                    + f" | {m['accuracy_at_0.5']:.1f} | {auc} |")
    for name, m in report["methods"].items():
        rows.append(f"| {name} (weighted SC) | " + " | ".join(f"{v:.1f}" for v in m["weighted_self_consistency"]) + " | | |")
    labels = {"self_consistency": "self-consistency (majority)", "pass_at_n": "Pass@N (oracle)", "first_sample": "first sample"}
    for key, label in labels.items():
        rows.append(f"| {label} | " + " | ".join(f"{v:.1f}" for v in report["baselines"][key]) + " | | |")
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
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("N (candidates per problem)")
    ax.set_ylabel("% problems solved")
    ax.set_title((f"{title}\n" if title else "") + f"Best-of-N on {report['num_problems']} problems", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
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
