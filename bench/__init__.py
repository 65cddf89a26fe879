"""Benchmarks, run from the repository root as modules so that their names
never shadow the scripts they measure: `.venv/bin/python -m bench.train`.

Importing the package makes the checkout the package triplet_reid (see
checkout.py), from which every benchmark imports the library."""

import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
import checkout  # noqa: E402

checkout.register()
