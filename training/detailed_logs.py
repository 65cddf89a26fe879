"""train.py --detailed_logs: memory-mapped NumPy arrays of every training batch.

Each array is a raw file with its dtype and shape described in a JSON file
beside it (lbtoolbox's format), so that the embeddings, losses and file names
of every step can be read back with `np.memmap` for analysis.
"""

import os
import shutil

import numpy as np

from triplet_reid import cli
from triplet_reid.storage import files, json_files


def shape_text(shape):
    """A shape as a message shows it, whatever its length."""
    return str(shape) if len(shape) <= 8 else '({}, … {} sizes)'.format(
        ', '.join(map(str, shape[:4])), len(shape))


def create_or_resize_dat(basename, dtype, shape):
    """A writeable memory-mapped array in `basename` with its description in
    `basename.json` (lbtoolbox's format), grown along the first axis when it
    exists and is shorter."""
    dtype = np.dtype(dtype)
    shape = tuple(shape)
    if os.path.isfile(basename + '.json') and os.path.isfile(basename):
        remedy = 'delete `{}` and its .json to start the detailed log afresh'.format(basename)
        old = json_files.read_json(basename + '.json', remedy)
        if not isinstance(old.get('shape'), list) or not isinstance(old.get('dtype'), str) or \
                not all(type(n) is int and 0 <= n < 2 ** 48 for n in old['shape']):
            raise cli.UserError('`{}.json` is corrupt (no `shape` list of sizes and `dtype` '
                                'string); {}.'.format(basename, remedy))
        old_shape = tuple(old['shape'])
        if old_shape[1:] != shape[1:] or old['dtype'] != dtype.str:
            raise cli.UserError('the detailed log `{}` has shape {} and dtype {}, which '
                                'does not fit {} {}.'.format(basename, shape_text(old_shape),
                                                             old['dtype'], shape, dtype.str))
        # What the description claims is believed only where the array's file
        # holds it: a claim of petabytes would grow the file to that size. (A
        # kill after growing the file and before describing it leaves a file
        # larger than its description, which is fine.)
        if old_shape[0] * int(np.prod(shape[1:])) * dtype.itemsize > os.path.getsize(basename):
            raise cli.UserError('`{}.json` describes an array of shape {} that its file `{}` '
                                'of {} bytes does not hold; {}.'.format(
                                    basename, shape_text(old_shape), basename,
                                    os.path.getsize(basename), remedy))
        shape = (max(old_shape[0], shape[0]),) + shape[1:]
        mode = 'r+'
    else:
        mode = 'w+'
    size = int(np.prod(shape)) * dtype.itemsize
    if mode == 'r+' and os.path.getsize(basename) < size:
        os.truncate(basename, size)
    array = np.memmap(basename, mode=mode, dtype=dtype, shape=shape)
    files.write_json(basename + '.json', {'dtype': dtype.str, 'shape': list(shape)})
    return array


NAMES = ('embeddings', 'losses', 'fids')


def check_space(experiment_root, iterations, batch_size, embedding_dim, max_fid_len):
    """Refuses detailed logs that would not fit on the disk once filled (the
    arrays are sparse files, which take their space as training fills them),
    before anything is written.

    Raises:
        UserError naming the space needed and free.
    """
    size = iterations * batch_size * (4 * embedding_dim + 4 + max_fid_len)
    folder = os.path.abspath(experiment_root)
    while not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    size -= sum(os.path.getsize(os.path.join(folder, name)) for name in NAMES
                if os.path.isfile(os.path.join(folder, name)))
    free = shutil.disk_usage(folder).free
    if size > free:
        raise cli.UserError('--detailed_logs over {} iterations needs {:.3g} GiB more, but '
                            'only {:.3g} GiB are free under `{}`; train fewer iterations or '
                            'without --detailed_logs.'.format(iterations, size / 2 ** 30,
                                                              free / 2 ** 30, folder))


def open_logs(experiment_root, iterations, batch_size, embedding_dim, max_fid_len):
    """The three arrays of --detailed_logs, one row per iteration:
    (embeddings (I, B, D) float32, losses (I, B) float32, fids (I, B) bytes)."""
    return (create_or_resize_dat(os.path.join(experiment_root, 'embeddings'), np.float32,
                                 (iterations, batch_size, embedding_dim)),
            create_or_resize_dat(os.path.join(experiment_root, 'losses'), np.float32,
                                 (iterations, batch_size)),
            create_or_resize_dat(os.path.join(experiment_root, 'fids'),
                                 'S{}'.format(max_fid_len), (iterations, batch_size)))
