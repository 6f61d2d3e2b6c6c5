"""Job entry points: `python -m jobs.<name> --config configs/<file>.yaml [overrides]`.

Each module's `main(argv)` parses a typed config (genrm_rl.config) and runs one job. These are
the programs that `ray job submit --working-dir . -- python -m jobs.<name> ...` starts.
"""
