"""Benchmarks and the fuzz run (python -m bench.fuzz), run from the checkout."""
