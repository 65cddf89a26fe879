"""SIGKILL at random moments, resume, and get bit-identical weights (small version
of `python -m bench.fault_injection`, which does 20 kills), with the strong
baseline's flags on; and SIGKILL at each moment of a checkpoint's save."""

import os
import signal
import subprocess
import sys

import pytest

from triplet_reid.experiment import checkpoints
from triplet_reid import train
from bench import fault_injection
from conftest import ROOT, base_args, checkpoint_steps, logged_iterations


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


def test_a_kill_at_any_moment_of_a_save_resumes_from_the_newest_complete_one(tmp_path,
                                                                           tiny_dataset):
    from kill_while_saving import MOMENTS
    csv_path, image_root = tiny_dataset
    # (moment, checkpoint killed while saving): the newest complete checkpoint it leaves.
    # (After the index is renamed, resuming is the ordinary one that other tests cover.)
    cases = {(moment, 2): 1 if moment == 'shards' else 2 for moment in MOMENTS[:-1]}
    cases[('shards', 0)] = None
    runs = {}
    for moment, step in cases:
        root = str(tmp_path / '{}-{}'.format(moment, step))
        args = base_args(root, csv_path, image_root, 3, '--checkpoint_frequency', '1')
        runs[moment, step] = root, args, subprocess.Popen(
            [sys.executable, os.path.join(ROOT, 'tests', 'kill_while_saving.py'), moment,
             str(step)] + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            cwd=ROOT)
    for case, (root, args, process) in runs.items():
        assert process.wait(timeout=120) == -signal.SIGKILL, (case, process.stderr.read())
        process.stderr.close()
        newest = checkpoints.newest_checkpoint(root)
        resumed = cases[case]
        assert newest == (None if resumed is None else os.path.join(root, 'checkpoint-{}'.format(
            resumed))), case
        assert train.main(args) == 0
        # The killed run logged its iterations up to the save; the rerun those after it.
        assert [i for i, _ in logged_iterations(root)] == list(range(1, case[1] + 1)) + list(
            range((resumed or 0) + 1, 4)), case
        assert checkpoint_steps(root) == [0, 1, 2, 3], case
        assert not [name for name in os.listdir(root) if 'tmp' in name or 'temp' in name], case
