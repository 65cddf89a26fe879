"""SIGKILL at random moments, resume, and get bit-identical weights (small version
of `python -m bench.fault_injection`, which does 20 kills), with the strong
baseline's flags on."""

import pytest

from bench import fault_injection


# Every flag of the strong baseline that draws at random or keeps state
# beside the model: the identity classifier, the centers and their optimizer,
# random erasing, warm-up, weight decay and GeM's exponent. (The run crops
# with --crop_augment, so --pad_crop, its alternative, is left out.)
STRONG = ('--head_name', 'bnneck', '--id_loss_weight', '1', '--center_loss_weight', '5e-4',
          '--random_erasing', '0.5', '--warmup_iterations', '10', '--weight_decay', '5e-4',
          '--pooling', 'gem')


@pytest.mark.slow
def test_killed_and_resumed_run_is_bit_identical(tmp_path):
    result = fault_injection.fault_injection(str(tmp_path), kills=3, iterations=40, max_delay=0.3,
                                             extra=STRONG)
    assert result['kills'] == 3
    assert result['weights_identical'], result
    assert result['detailed_logs_identical'], result
    assert result['embeddings_identical'], result
