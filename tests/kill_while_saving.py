"""Runs train.py and kills it (SIGKILL, as the out-of-memory killer or a
power cut would) at one moment of writing one checkpoint: fault injection,
not timing. Used by test_train.py as

    python kill_while_saving.py MOMENT STEP TRAIN_ARGS...

MOMENT is one of MOMENTS; STEP the number of the checkpoint whose saving is
killed. The hooks replace TensorFlow's own functions (private APIs, see
docs/private_apis.md), so that the kill falls between the steps of its save.
"""
import os
import signal
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import checkout
checkout.register()

import tensorflow as tf  # noqa: E402
from tensorflow.python.checkpoint import checkpoint_management, functional_saver  # noqa: E402
from tensorflow.python.lib.io import file_io  # noqa: E402

# The moments of a save, in order: its shards are written into `<prefix>_temp`
# but not merged; merged into `<prefix>.index` and `.data-*` but not named by
# the `checkpoint` index; the index's temporary file written but not renamed;
# the index renamed into place, before the old checkpoints are swept.
MOMENTS = ('shards', 'merged', 'index', 'indexed')


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def install(moment, step):
    target = 'checkpoint-{}'.format(step)
    real_io_ops = functional_saver.gen_io_ops

    class IoOps:
        def __getattr__(self, name):
            return getattr(real_io_ops, name)

        def merge_v2_checkpoints(self, prefixes, prefix, **kwargs):
            ours = tf.get_static_value(prefix).decode().endswith(target)
            if ours and moment == 'shards':
                die()
            result = real_io_ops.merge_v2_checkpoints(prefixes, prefix, **kwargs)
            if ours and moment == 'merged':
                die()
            return result

    real_update = checkpoint_management.update_checkpoint_state_internal
    real_atomic_write = file_io.atomic_write_string_to_file

    def update(save_dir, model_checkpoint_path, *args, **kwargs):
        if str(model_checkpoint_path).endswith(target) and moment == 'index':
            def half_written(filename, contents, overwrite=True):
                with open(filename + '.tmp' + uuid.uuid4().hex, 'w') as f:
                    f.write(str(contents)[:len(str(contents)) // 2])
                die()
            checkpoint_management.file_io.atomic_write_string_to_file = half_written
        real_update(save_dir, model_checkpoint_path, *args, **kwargs)
        checkpoint_management.file_io.atomic_write_string_to_file = real_atomic_write
        if str(model_checkpoint_path).endswith(target) and moment == 'indexed':
            die()

    functional_saver.gen_io_ops = IoOps()
    checkpoint_management.update_checkpoint_state_internal = update


if __name__ == '__main__':
    install(sys.argv[1], int(sys.argv[2]))
    from triplet_reid import train
    train.main(sys.argv[3:])
    sys.exit('the run ended without being killed')
