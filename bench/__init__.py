"""Benchmarks, run from the repository root as modules so that their names
never shadow the scripts they measure: `.venv/bin/python -m bench.train`."""
