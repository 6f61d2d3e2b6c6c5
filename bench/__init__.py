"""Benchmark entry points that run outside the CPU suite (e.g. on a lent GPU without Ray)."""
