"""SIGKILL at random moments, resume, and get bit-identical weights (small version
of bench/fault_injection.py, which does 20 kills)."""

import importlib.util
import os

from conftest import ROOT


def test_killed_and_resumed_run_is_bit_identical(tmp_path):
    spec = importlib.util.spec_from_file_location(
        'fault_injection', os.path.join(ROOT, 'bench', 'fault_injection.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.fault_injection(str(tmp_path), kills=3, iterations=40, max_delay=0.3)
    assert result['kills'] == 3
    assert result['weights_identical'], result
    assert result['detailed_logs_identical'], result
    assert result['embeddings_identical'], result
