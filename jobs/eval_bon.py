"""`genrm-rl eval bon`: Best-of-N report (JSON), markdown table and plot from score files.

    genrm-rl eval bon --candidates c.jsonl --scores genrm_cot=a.jsonl --scores orm=b.jsonl \
        --n-max 16 --out report.json --plot bon.png
"""

from __future__ import annotations


def main(argv=None, prog="python -m jobs.eval_bon") -> int:
    from genrm_rl.config import parse_cli
    from genrm_rl.evaluation import EvalConfig, markdown_table, run_eval
    from jobs._common import split_subcommand

    _, rest = split_subcommand(list(argv or []), {"bon": "Best-of-N report from candidates + score files"}, prog)
    cfg = parse_cli(EvalConfig, rest, f"{prog} bon", "Best-of-N, self-consistency, Pass@N and verifier accuracy.")
    report = run_eval(cfg)
    print(markdown_table(report))
    print(f"report: {cfg.out}")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
