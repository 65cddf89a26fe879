"""SIGKILL at random moments, resume, and get bit-identical weights (small version
of `python -m bench.fault_injection`, which does 20 kills)."""

import pytest

from bench import fault_injection


@pytest.mark.slow
def test_killed_and_resumed_run_is_bit_identical(tmp_path):
    result = fault_injection.fault_injection(str(tmp_path), kills=3, iterations=40, max_delay=0.3)
    assert result['kills'] == 3
    assert result['weights_identical'], result
    assert result['detailed_logs_identical'], result
    assert result['embeddings_identical'], result
