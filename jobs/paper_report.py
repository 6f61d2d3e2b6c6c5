"""The reproduction's report: Best-of-N per evaluation set with bootstrap intervals, the paper's
comparisons as paired intervals, GenRM-CoT against K, λ = 0 against λ, and which targets are met.

Why separate from the stages: the same numbers are read back for a single run (`report.md`) and
averaged over seeds (`paper_cpu.yaml`), and every claim in the README comes from here.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from genrm_rl.evaluation import (
    EvalConfig,
    compare,
    evaluate,
    finish_bon_plot,
    load_inputs,
    markdown_table,
    plot_report,
)

SET_TITLES = {"indist": "held-out 2-4 words (in distribution)", "ood": "5-6 words (out of distribution)",
              "ood_oracle": "5-6 words, 1 correct + planted errors"}
PAIR = "genrm_cot_pair"  # both GenRM-CoTs pooled (jobs.pipeline, cot_pair): its targets are listed apart
# (a, b): the paper's order and baselines, reported as a - b at N = n_max when both are present
COMPARISONS = [("genrm_cot", "genrm_direct"), ("genrm_direct", "orm"), ("genrm_cot", "orm"),
               ("genrm_cot", "self_consistency"), ("genrm_cot", "first_sample"), ("genrm_cot", "dpo"),
               ("genrm_cot", "llm_judge"), ("genrm_cot", "genrm_cot_lambda0"),
               (PAIR, "genrm_direct"), (PAIR, "genrm_cot"), (PAIR, "self_consistency")]


# how a K curve's points were read (summaries made before this estimator have no "votes" key: first K votes)
EVERY_K_SUBSET = "every k-subset"


def k_curve(by_problem: dict, scores_path: str, ks: list[int], n_max: int, seed: int = 0,
            bootstrap_samples: int = 2000) -> dict:
    """GenRM-CoT's Best-of-n_max with k of its K votes per candidate, for each k: per problem the mean
    over every k-subset of vote positions (`bon.best_of_n_with_k_votes`), then the mean over problems
    with its 90% bootstrap interval. A candidate scored without votes (an empty solution) keeps its
    score at every k."""
    from genrm_rl import bon
    from genrm_rl.records import Score, read_records

    records = {(r.problem_id, r.candidate_id): r for r in read_records(scores_path, Score)}
    width = max((len(r.votes) for r in records.values() if r.votes), default=1)
    problems = []  # (each candidate's votes, each candidate's label) per problem
    for pid in sorted(by_problem):
        rs = [records[(c.problem_id, c.candidate_id)] for c in by_problem[pid]]
        problems.append(([r.votes or [r.score] * width for r in rs], [c.correct for c in by_problem[pid]]))
    curve = {"k": list(ks), "best_of_n_max": [], "ci": [], "votes": EVERY_K_SUBSET}
    for k in ks:
        per_problem = [100.0 * bon.best_of_n_with_k_votes(votes, correct, n_max, k, seed=seed) for votes, correct in problems]
        curve["best_of_n_max"].append(sum(per_problem) / len(per_problem))
        curve["ci"].append(list(bon.bootstrap_ci(per_problem, bootstrap_samples, seed=seed)))
    return curve


def evaluate_set(cfg, out: Path, key: str, stem: str, n_max: int, scores: dict[str, str]) -> dict:
    ecfg = EvalConfig(candidates=str(out / f"data/{stem}_candidates.jsonl"), scores=scores, n_max=n_max,
                      out=str(out / f"bon_{key}.json"), title=f"{cfg.task}: {SET_TITLES.get(key, key)}")
    by_problem, tables = load_inputs(ecfg)
    report = evaluate(by_problem, tables, n_max, cfg.seed, cfg.bootstrap_samples)
    Path(ecfg.out).write_text(json.dumps(report, indent=2))
    table = markdown_table(report, weighted=False)
    Path(ecfg.out).with_suffix(".md").write_text(table)
    plot_report(report, Path(ecfg.out).with_suffix(".png"), ecfg.title)
    result = {"title": SET_TITLES.get(key, key), "table": table, "n": report["n"],
              "first_sample": report["baselines"]["first_sample"][0],
              "pass_at_n": report["baselines"]["pass_at_n"][-1],
              "self_consistency": report["baselines"]["self_consistency"][-1],
              "baselines_ci": report["baselines_ci"],
              "verifiers": {name: {"best_of_n": m["best_of_n"], "best_of_n_ci": m["best_of_n_ci"],
                                   "within_problem": m["within_problem"], "auroc": m["auroc"],
                                   "acc@0.5": m["accuracy_at_0.5"]} for name, m in report["methods"].items()},
              "comparisons": [compare(report, a, b, cfg.bootstrap_samples, cfg.seed) for a, b in COMPARISONS
                              if a in report["per_problem"] and b in report["per_problem"]]}
    if "genrm_cot" in scores:
        result["k_curve"] = k_curve(by_problem, scores["genrm_cot"], cfg.cot_k_curve, n_max, cfg.seed,
                                    cfg.bootstrap_samples)
        plot_k_curve(result["k_curve"], n_max, out / f"k_curve_{key}.png", ecfg.title)
    return result


def evaluate_sets(cfg, out: Path, sets, scores: dict[str, dict[str, str]]) -> dict:
    results = {key: evaluate_set(cfg, out, key, stem, n_max, scores[key]) for key, stem, n_max in sets}
    reports = {"sets": results, "targets": check_targets(cfg.task, results)}
    if any(PAIR in r["verifiers"] for r in results.values()):
        reports["targets_pair"] = check_targets(cfg.task, results, cot=PAIR)
    return reports


def _cmp(result: dict, a: str, b: str) -> dict | None:
    return next((c for c in result["comparisons"] if c["a"] == a and c["b"] == b), None)


def _rises(curve: list[float]) -> bool:
    return all(y >= x - 1e-9 for x, y in zip(curve, curve[1:], strict=False))


def check_targets(task: str, sets: dict, cot: str = "genrm_cot") -> list[dict]:
    """The issue's targets for this task, each with the measured numbers and met / not met; `cot` names
    the verifier that stands for GenRM-CoT (the report's, or the pooled pair)."""
    rows = []
    label = "GenRM-CoT" if cot == "genrm_cot" else cot

    def add(name: str, met: bool | None, measured: str) -> None:
        rows.append({"target": name, "met": met, "measured": measured})

    for key in ("indist", "ood"):
        r = sets.get(key)
        if r is None or cot not in r["verifiers"]:
            continue
        best = r["verifiers"][cot]["best_of_n"]
        where = "in distribution" if key == "indist" else "out of distribution"
        if r["pass_at_n"] == 0:  # the policy solves none: no verifier can pick anything, no target is met
            add(f"{where}: any Best-of-N target", False, f"the policy solves none of these problems (Pass@{r['n'][-1]} = 0)")
            if key == "ood":
                add("out of distribution: policy Pass@16 >= 25%", False, "0.0")
            continue
        if task == "word_sort":
            add(f"{where}: {label} Best-of-{r['n'][-1]} > majority voting", best[-1] > r["self_consistency"],
                f"{best[-1]:.1f} vs {r['self_consistency']:.1f}")
            continue
        add(f"{where}: {label} Best-of-N rises monotonically with N", _rises(best),
            " -> ".join(f"{v:.1f}" for v in best))
        add(f"{where}: {label} >= self-consistency at N={r['n'][-1]}", best[-1] >= r["self_consistency"] - 1e-9,
            f"{best[-1]:.1f} vs {r['self_consistency']:.1f}")
        for a, b in ((cot, "genrm_direct"), ("genrm_direct", "orm")):
            c = _cmp(r, a, b)
            if c is not None:
                add(f"{where}: {a} > {b}, the 90% interval of the gap above 0", c["clear"],
                    f"{c['difference']:+.1f} [{c['ci'][0]:+.1f}, {c['ci'][1]:+.1f}]")
        if key == "ood":
            add("out of distribution: policy Pass@16 >= 25%", r["pass_at_n"] >= 25, f"{r['pass_at_n']:.1f}")
            add(f"out of distribution: {label} Best-of-16 >= first sample + 15", best[-1] >= r["first_sample"] + 15,
                f"{best[-1]:.1f} vs {r['first_sample']:.1f} + 15")
        if key == "indist":
            within = r["verifiers"][cot]["within_problem"]
            add(f"in distribution: {label} correct-over-wrong within a problem >= 90%",
                within is not None and within >= 90, "-" if within is None else f"{within:.1f}%")
    return rows


def plot_k_curve(curve: dict, n_max: int, path: Path, title: str, interval: str = "90% CI",
                 per_seed: dict[int, list[float]] | None = None) -> None:
    """Best-of-n_max against K with an error bar per K (`curve["ci"]`: [low, high]); with `per_seed`,
    each seed's curve as a thin grey line behind it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.3))
    ks, ys = curve["k"], curve["best_of_n_max"]
    for i, values in enumerate((per_seed or {}).values()):
        ax.plot(ks, values, color="gray", alpha=0.5, lw=1, marker=".", label="each seed" if i == 0 else None)
    lo = [y - c[0] for y, c in zip(ys, curve["ci"], strict=True)]
    hi = [c[1] - y for y, c in zip(ys, curve["ci"], strict=True)]
    ax.errorbar(ks, ys, yerr=[lo, hi], marker="o", capsize=3, label="mean" if per_seed else None)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("K (verification rationales per candidate)")
    ax.set_ylabel(f"% problems solved, Best-of-{n_max}")
    how = "every choice of K votes, " if curve.get("votes") == EVERY_K_SUBSET else ""
    ax.set_title(f"{title}\nGenRM-CoT against inference-time compute\n({how}{interval})", fontsize=9)
    ax.grid(alpha=0.3)
    if per_seed:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_aggregate_k_curve(entry: dict, seeds: list[int], path: Path) -> None:
    """The K curve over seeds: mean ± sd, each seed's curve behind it."""
    curve = entry["k_curve"]
    stats = curve["best_of_n_max"]
    means = [x["mean"] for x in stats]
    plot_k_curve({**curve, "best_of_n_max": means, "ci": [[x["mean"] - x["sd"], x["mean"] + x["sd"]] for x in stats]},
                 entry["n"][-1], path, entry["title"], interval=f"mean ± sd over seeds {seeds}",
                 per_seed={s: [x["values"][i] for x in stats] for i, s in enumerate(seeds)})


# ---- writing ------------------------------------------------------------------------------------
def _targets_md(targets: list[dict]) -> str:
    rows = ["| target | measured | met |", "|---|---|---|"]
    for t in targets:
        rows.append(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(rows) + "\n"


def _comparisons_md(result: dict) -> str:
    rows = [f"| Best-of-{result['n'][-1]} | difference | paired 90% CI | clear |", "|---|---|---|---|"]
    for c in result["comparisons"]:
        rows.append(f"| {c['a']} - {c['b']} | {c['difference']:+.1f} | [{c['ci'][0]:+.1f}, {c['ci'][1]:+.1f}] | "
                    f"{'yes' if c['clear'] else 'no'} |")
    return "\n".join(rows) + "\n"


def _numerics_md(summary: dict) -> str:
    """Where the numbers were made: a re-run is bitwise equal only on the same torch build and kernels."""
    fact = summary.get("numerics")
    if not fact:
        return ""
    where = fact.get("cuda_device") or f"{fact['cpu_capability']} CPU kernels, {fact['threads']} threads"
    if fact.get("cpu") and not fact.get("cuda_device"):  # recorded since HW1: the same kernels differ by processor
        where += f", {fact['cpu']}" + (f", MKL_CBWR={fact['mkl_cbwr']}" if fact.get("mkl_cbwr") else "")
    return f" Numerics: torch {fact['torch']}, {where}."


def _gate_md(summary: dict) -> str:
    """The GenRM-CoT training gate's checks: dev separation after each training length."""
    checks = summary.get("verifier_checks")
    if not checks:
        return ""
    return " GenRM-CoT gate, dev separation (p(Yes) right - wrong) by steps: " + "; ".join(
        f"{name} " + " -> ".join(f"{c['separation']:.2f} at {c['steps']}" for c in runs) for name, runs in checks.items()) + "."


def _k_votes_md(curve: dict) -> str:
    """How the K curve was read: reports made before the every-subset estimator used the first K votes."""
    return " (each K averaged over every choice of K of the candidate's rationales)" if curve.get("votes") == EVERY_K_SUBSET else ""


def write_report(summary: dict, path: Path) -> None:
    lines = [f"# GenRM reproduction: {summary['task']}, seed {summary['seed']}", "",
             f"Stage time {summary['stage_minutes_total']} min. Policy: {Path(summary['policy']['chosen']).name} "
             f"(sampled dev accuracy {summary['policy']['checks'][-1]['dev_sampled_accuracy']:.2f}, target "
             f"{summary['policy']['target']}).{_numerics_md(summary)}{_gate_md(summary)}", "", "## Targets", "",
             _targets_md(summary["targets"])]
    if "targets_pair" in summary:
        lines += ["Targets with both GenRM-CoTs pooled (genrm_cot_pair):", "", _targets_md(summary["targets_pair"])]
    for r in summary["sets"].values():
        lines += [f"## {r['title']}", "", r["table"], _comparisons_md(r)]
        if "k_curve" in r:
            lines += [f"GenRM-CoT Best-of-N at N = n_max against K{_k_votes_md(r['k_curve'])}: " + ", ".join(
                f"K={k}: {v:.1f}" for k, v in zip(r["k_curve"]["k"], r["k_curve"]["best_of_n_max"], strict=True)), ""]
    path.write_text("\n".join(lines))


# ---- several seeds ------------------------------------------------------------------------------
def aggregate(summaries: list[dict]) -> dict:
    """Mean and sd over seeds of every Best-of-N number, comparison and target."""
    def ms(values):
        values = [v for v in values if v is not None]
        if not values:
            return None
        return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                "values": values}

    out = {"seeds": [s["seed"] for s in summaries], "stage_minutes": [s["stage_minutes_total"] for s in summaries],
           "sets": {}}
    for key, first in summaries[0]["sets"].items():
        rs = [s["sets"][key] for s in summaries]
        entry = {"title": first["title"], "n": first["n"],
                 **{b: ms([r[b] for r in rs]) for b in ("first_sample", "pass_at_n", "self_consistency")},
                 "verifiers": {}, "comparisons": {}}
        for name in first["verifiers"]:
            entry["verifiers"][name] = {
                "best_of_n": [ms([r["verifiers"][name]["best_of_n"][i] for r in rs]) for i in range(len(first["n"]))],
                "within_problem": ms([r["verifiers"][name]["within_problem"] for r in rs]),
                "auroc": ms([r["verifiers"][name]["auroc"] for r in rs])}
        for c in first["comparisons"]:
            same = [next(x for x in r["comparisons"] if x["a"] == c["a"] and x["b"] == c["b"]) for r in rs]
            entry["comparisons"][f"{c['a']} - {c['b']}"] = {**ms([x["difference"] for x in same]),
                                                           "clear_in": sum(x["clear"] for x in same)}
        if "k_curve" in first:
            votes = {"votes": first["k_curve"]["votes"]} if "votes" in first["k_curve"] else {}
            entry["k_curve"] = {"k": first["k_curve"]["k"], **votes, "best_of_n_max": [
                ms([r["k_curve"]["best_of_n_max"][i] for r in rs]) for i in range(len(first["k_curve"]["k"]))]}
        out["sets"][key] = entry
    for field in ("targets", "targets_pair"):
        if field not in summaries[0]:
            continue
        targets = {}
        for s in summaries:
            for t in s[field]:
                targets.setdefault(t["target"], []).append(bool(t["met"]))
        out[field] = [{"target": name, "met_in": sum(v), "runs": len(v)} for name, v in targets.items()]
    return out


def _pm(x) -> str:
    return "-" if x is None else f"{x['mean']:.1f} ± {x['sd']:.1f}"


def plot_aggregate(entry: dict, seeds: list[int], path: Path) -> None:
    """Best-of-N mean over seeds with a ±sd band per verifier; the baselines at N = n_max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = entry["n"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, v in entry["verifiers"].items():
        mean = [x["mean"] for x in v["best_of_n"]]
        sd = [x["sd"] for x in v["best_of_n"]]
        (line,) = ax.plot(ns, mean, marker="o", label=name)
        ax.fill_between(ns, [m - d for m, d in zip(mean, sd, strict=True)], [m + d for m, d in zip(mean, sd, strict=True)],
                        color=line.get_color(), alpha=0.12)
    for shift, (key, label, style) in enumerate((("self_consistency", "majority voting", "s"),
                                                 ("pass_at_n", "Pass@N (oracle)", "^"), ("first_sample", "first sample", "x"))):
        if entry.get(key):  # side by side just right of N = n_max, so the error bars do not overlap
            ax.errorbar([ns[-1] * (1.06 + 0.06 * shift)], [entry[key]["mean"]], yerr=[entry[key]["sd"]], fmt=style, color="black",
                        capsize=3, label=f"{label}, N={ns[-1]}")
    finish_bon_plot(fig, ax, ns, f"{entry['title']}\nBest-of-N, mean ± sd over seeds {seeds}", path, legend_size=7)


def write_aggregate(agg: dict, path: Path) -> None:
    lines = [f"# GenRM reproduction over seeds {agg['seeds']} (mean ± sd)", "",
             "Stage minutes per seed: " + ", ".join(f"{m}" for m in agg["stage_minutes"]), "",
             "| target | met in |", "|---|---|"]
    lines += [f"| {t['target']} | {t['met_in']}/{t['runs']} |" for t in agg["targets"]]
    if "targets_pair" in agg:
        lines += ["", "Targets with both GenRM-CoTs pooled (genrm_cot_pair):", "", "| target | met in |", "|---|---|"]
        lines += [f"| {t['target']} | {t['met_in']}/{t['runs']} |" for t in agg["targets_pair"]]
    for r in agg["sets"].values():
        ns = r["n"]
        lines += ["", f"## {r['title']}", "", "| method | " + " | ".join(f"N={n}" for n in ns)
                  + " | within a problem | AUROC |", "|" + "---|" * (len(ns) + 3)]
        for name, v in r["verifiers"].items():
            auc = "-" if v["auroc"] is None else f"{v['auroc']['mean']:.3f} ± {v['auroc']['sd']:.3f}"
            lines.append(f"| {name} | " + " | ".join(_pm(x) for x in v["best_of_n"])
                         + f" | {_pm(v['within_problem'])} | {auc} |")
        for b in ("self_consistency", "pass_at_n", "first_sample"):
            lines.append(f"| {b} (N={ns[-1]}) | " + " | ".join("" for _ in ns[:-1]) + f" | {_pm(r[b])} | | |")
        lines += ["", "| comparison at N = n_max | difference | 90% CI above 0 in |", "|---|---|---|"]
        lines += [f"| {name} | {_pm(c)} | {c['clear_in']}/{len(agg['seeds'])} |" for name, c in r["comparisons"].items()]
        if "k_curve" in r:
            lines += ["", f"GenRM-CoT Best-of-N at N = n_max against K{_k_votes_md(r['k_curve'])}: " + ", ".join(
                f"K={k}: {_pm(v)}" for k, v in zip(r["k_curve"]["k"], r["k_curve"]["best_of_n_max"], strict=True))]
    path.write_text("\n".join(lines) + "\n")
