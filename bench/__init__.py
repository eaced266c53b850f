"""Benchmarks and the fuzz run: `python -m bench.<name>` from the checkout (see the README)."""
