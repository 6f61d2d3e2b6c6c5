"""`genrm-rl reproduce`: the end-to-end GenRM reproduction on the embedded default (README's main job).

    genrm-rl reproduce --config configs/quickstart.yaml          # last-letter, one seed, ~20 min on 2 CPU cores
    genrm-rl reproduce --config configs/word_sort.yaml           # word sorting
    genrm-rl reproduce --config configs/paper_cpu.yaml           # 3 seeds, mean ± sd
    genrm-rl reproduce --config configs/gpu_preset.yaml          # larger models on GPU nodes
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path


def run(cfg) -> dict:
    """One seed (`cfg.seed`), or each of `cfg.seeds` in output_dir/seed-S and their mean ± sd."""
    from jobs.paper_report import aggregate, plot_aggregate, plot_aggregate_k_curve, write_aggregate
    from jobs.pipeline import Pipeline

    if not cfg.seeds:
        return Pipeline(cfg).run()
    summaries = [Pipeline(dataclasses.replace(cfg, seed=s, seeds=[], output_dir=f"{cfg.output_dir}/seed-{s}")).run()
                 for s in cfg.seeds]
    agg = aggregate(summaries)
    out = Path(cfg.output_dir)
    (out / "aggregate.json").write_text(json.dumps(agg, indent=2))
    write_aggregate(agg, out / "report.md")
    for key, entry in agg["sets"].items():
        plot_aggregate(entry, agg["seeds"], out / f"bon_{key}.png")
        if "k_curve" in entry:
            plot_aggregate_k_curve(entry, agg["seeds"], out / f"k_curve_{key}.png")
    return {"seeds": summaries, "aggregate": agg, "output_dir": str(out)}


def print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.markdown import Markdown

    console = Console()
    out = summary["output_dir"]
    console.print(Markdown(Path(out, "report.md").read_text()))
    console.print(f"report: {out}/report.md   summary: {out}/{'aggregate' if 'aggregate' in summary else 'summary'}.json")


def main(argv=None, prog="python -m jobs.reproduce") -> int:
    from genrm_rl.config import parse_cli
    from jobs._common import setup_logging
    from jobs.pipeline import ReproduceConfig

    cfg = parse_cli(ReproduceConfig, argv, prog, "Generator -> policy candidates -> GenRM-CoT/GenRM/ORM/DPO -> Best-of-N.")
    setup_logging()
    print_summary(run(cfg))
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
