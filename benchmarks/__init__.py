"""Deployer's benchmark suite: run it with ``benchmarks/run`` (see docs/benchmarks.md)."""
