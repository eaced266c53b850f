"""Benchmarks: `python -m bench.ingest` (see the README)."""
