"""An experiment's checkpoints: finding the newest complete one, refusing
damaged ones or repairing what can be (the `checkpoint` index), and the
check that a trained root did not lose them.
"""

import dataclasses
import logging
import os
import re

import tensorflow as tf

from triplet_reid.cli import UserError

log = logging.getLogger('experiment')


@dataclasses.dataclass(frozen=True)
class CheckpointFile:
    """A checkpoint read once: its prefix and the shape of each of its
    variables by name, which tell its format and what it trained without
    opening it again. `read_checkpoint` makes one only for a complete
    checkpoint."""
    path: str
    shapes: dict

    @property
    def tf1(self):
        """Whether it is the TF1 original's: name-based, without TF2's object graph."""
        return '_CHECKPOINTABLE_OBJECT_GRAPH' not in self.shapes


def read_checkpoint(prefix):
    """The checkpoint `prefix` as a `CheckpointFile` when it has its index and
    every data shard, and every tensor in it reads back with the checksum it
    was written with (a truncated, damaged or half-renamed file fails here,
    as restoring would); None when it does not."""
    if not tf.io.gfile.exists(prefix + '.index'):
        return None
    shards = tf.io.gfile.glob(prefix + '.data-*-of-*')
    if not shards or len(shards) != int(shards[0].rsplit('-of-', 1)[1]):
        return None
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_dtype_map():
            reader.get_tensor(name)
        return CheckpointFile(prefix, reader.get_variable_to_shape_map())
    except (tf.errors.OpError, ValueError, IndexError):
        return None


def newest_checkpoint(directory, fallback=True, names_from=None):
    """The path of `newest_checkpoint_file`, or None."""
    found = newest_checkpoint_file(directory, fallback, names_from)
    return found.path if found else None


def newest_checkpoint_file(directory, fallback=True, names_from=None):
    """The newest complete checkpoint in `directory` (a `CheckpointFile`), or
    None when it holds none at all.

    The `checkpoint-<step>` files are scanned and the complete one of the
    highest step is taken: the `checkpoint` index names the newest one only
    once a save has ended, so a run killed between writing a checkpoint and
    updating the index leaves an index that names the one before. Newer
    checkpoints that are missing or damaged (or named by the index but gone)
    are skipped with a warning naming them, so that a run never silently
    starts over; without `fallback` (for embedding, where an older network
    would pass for the newest), that is an error naming the newest complete
    one instead. A lone incomplete `checkpoint-0` is what a new run killed
    while writing its first checkpoint leaves: with `fallback`, there is no
    checkpoint yet. `names_from` is the folder that --checkpoint names are
    relative to in the error (`directory` by default).

    Raises:
        UserError when checkpoint files exist but none is complete, or,
        without `fallback`, when the newest is not.
    """
    state, damaged = checkpoint_index(directory)
    if damaged:
        log.warning('The checkpoint index %s is damaged; the checkpoints are found by their '
                    'files instead.', os.path.join(directory, 'checkpoint'))
    # TensorFlow already puts `directory` before a relative path of the index.
    named = state.model_checkpoint_path if state else None
    steps = {int(m.group(1)) for name in tf.io.gfile.listdir(directory)
             for m in [re.fullmatch(r'checkpoint-(\d+)\.(index|data-.*)', name)] if m} \
        if tf.io.gfile.isdir(directory) else set()
    named_step = re.fullmatch(r'checkpoint-(\d+)', os.path.basename(named or ''))
    candidates = [os.path.join(directory, 'checkpoint-{}'.format(step))
                  for step in sorted(steps, reverse=True)]
    if named and (named_step is None or int(named_step.group(1)) not in steps):
        # Named by the index, but without files (or not named by step): the newest, and gone.
        candidates.insert(0, named)
    skipped = []
    for prefix in candidates:
        found = read_checkpoint(prefix)
        if found:
            problem = '{} {} missing or damaged'.format(', '.join(skipped),
                                                        'is' if len(skipped) == 1 else 'are')
            if skipped and not fallback:
                raise UserError('the newest checkpoint of `{}` is not usable: {}; pass '
                                '--checkpoint {} to use the newest complete one.'.format(
                                    directory, problem,
                                    os.path.relpath(prefix, names_from or directory)))
            if skipped:
                log.warning('Using %s, the newest complete checkpoint: %s.', prefix, problem)
            return found
        skipped.append(prefix + (' (the one the `checkpoint` index names)' if prefix == named
                                 else ''))
    if fallback and candidates == [os.path.join(directory, 'checkpoint-0')]:
        log.warning('Ignoring %s, the incomplete first checkpoint of a run that was stopped '
                    'while writing it.', candidates[0])
        return None
    if candidates:
        raise UserError('`{}` holds checkpoint files but no complete checkpoint ({} are damaged '
                        'or incomplete); restore them, or move them away to start over.'.format(
                            directory, ', '.join(skipped)))
    return None


def checkpoint_index(directory):
    """The `checkpoint` index of `directory`: (its CheckpointState, or None
    when there is none or it cannot be read; whether it is there but
    damaged). TensorFlow's own warnings on a damaged one (its parser's raw
    messages) are held back: the caller says what it does about it."""
    tensorflow_log = logging.getLogger('tensorflow')
    level = tensorflow_log.level
    tensorflow_log.setLevel(logging.ERROR)
    try:
        state = tf.train.get_checkpoint_state(directory)
    except (tf.errors.OpError, ValueError, UnicodeDecodeError):
        state = None
    finally:
        tensorflow_log.setLevel(level)
    exists = tf.io.gfile.exists(os.path.join(directory, 'checkpoint'))
    return state, exists and (state is None or not state.model_checkpoint_path)


def remove_damaged_index(directory):
    """Removes the `checkpoint` index file of `directory` when it cannot be
    read, with a warning: it only lists the checkpoints, which
    `newest_checkpoint` finds without it, and the next save writes it anew."""
    path = os.path.join(directory, 'checkpoint')
    if checkpoint_index(directory)[1] and os.path.isfile(path):
        log.warning('Removing the damaged checkpoint index %s; the next checkpoint writes it '
                    'anew.', path)
        os.remove(path)


def find_checkpoint(experiment_root, checkpoint=None):
    """A checkpoint of the experiment, as a `CheckpointFile`.

    Args:
        experiment_root (str): A folder with `args.json` and checkpoints.
        checkpoint (str or None): A checkpoint name inside the root, or a
            folder of checkpoints inside it (such as `best`, giving its
            newest), or None for the latest.

    Raises:
        UserError when there is no such checkpoint.
    """
    if checkpoint is None:
        found = newest_checkpoint_file(experiment_root, fallback=False)
        if found is None:
            raise UserError('`{}` holds no checkpoint yet.'.format(experiment_root))
        return found
    path = os.path.join(experiment_root, checkpoint)
    if os.path.isdir(path):
        found = newest_checkpoint_file(path, fallback=False, names_from=experiment_root)
        if found is not None:
            return found
    if not tf.io.gfile.exists(path + '.index') and not tf.io.gfile.glob(path + '.data-*'):
        raise UserError('there is no checkpoint `{}` in `{}`.'.format(checkpoint, experiment_root))
    found = read_checkpoint(path)
    if found is None:
        newest = newest_checkpoint(os.path.dirname(path))
        raise UserError('the checkpoint `{}` is incomplete or damaged{}.'.format(
            path, '; the newest complete one is {}'.format(os.path.relpath(newest, experiment_root))
            if newest else ', and `{}` holds no complete one'.format(os.path.dirname(path))))
    return found


def check_checkpoints_not_lost(experiment_root):
    """Refuses to start over in an experiment root that trained (it holds
    TensorBoard events, which come after the first checkpoint) but holds no
    checkpoint; without events, a run stopped before its first checkpoint
    starts over with a warning."""
    if any(name.startswith('events.out.tfevents') for name in os.listdir(experiment_root)):
        raise UserError(
            '`{}` has trained (it holds TensorBoard events) but holds no checkpoint; were they '
            'deleted? Restore them to resume, or start a new experiment root.'.format(
                experiment_root))
    log.warning('`%s` holds args.json but no checkpoint; starting from iteration 0 with the '
                'stored arguments.', experiment_root)
