"""The HDF5 embeddings file: the one format embed.py writes and evaluate.py
and search.py read.

Beside the original's `emb` (N, D), `emb_aug` (A, N, D) and
`augmentation_types`, a file holds `fids` (N,), the images' paths as UTF-8
strings (relative to the image root for a CSV, as found for --images); the
attribute `aggregator` names the aggregator when there is one, so that
search.py can embed its queries the same way; and the attributes
`ORIGIN_KEYS` name the experiment and checkpoint that made it. Embeddings
of camera footage also hold the `FIELDS` of each row (camera, frame, track,
box). Files are written whole or not at all. TensorFlow-free, so that evaluate.py starts
quickly.
"""

import os
from dataclasses import dataclass, field

import h5py
import numpy as np

from triplet_reid import cli
from triplet_reid.storage import files


ORIGIN_KEYS = ('experiment_root', 'checkpoint')

# What a row of footage holds beside its embedding (see inputs/footage.py): its
# camera, frame, track and box (left, top, width, height), and for a track's
# row the last frame and the number of crops; {name: type}.
FIELDS = {'camera': 'text', 'frame': 'int64', 'track': 'int64', 'box': 'float32',
          'last_frame': 'int64', 'crops': 'int64'}


def embedding_origin(experiment_root, checkpoint_path):
    """The HDF5 attributes that name the network that made embeddings: the
    experiment root's absolute path and the checkpoint's name within it."""
    root = os.path.realpath(experiment_root)
    return {'experiment_root': root,
            'checkpoint': os.path.relpath(os.path.realpath(checkpoint_path), root)}


def origin_difference(first, second):
    """Says how two origins (dicts of `ORIGIN_KEYS`, possibly partial, from
    files written before they were stored) differ, or None when they agree
    or cannot be compared."""
    if not all(key in first and key in second for key in ORIGIN_KEYS):
        return None
    if first['experiment_root'] != second['experiment_root']:
        return 'different experiments (`{}` and `{}`)'.format(first['experiment_root'],
                                                              second['experiment_root'])
    if first['checkpoint'] != second['checkpoint']:
        return 'different checkpoints of `{}` (`{}` and `{}`)'.format(
            first['experiment_root'], first['checkpoint'], second['checkpoint'])
    return None


def write(filename, emb, emb_aug, names, fids, aggregator=None, made_by=None, fields=None):
    """Writes the HDF5 file (see the module's description) through a
    temporary file, so a failure leaves none behind. `made_by` is
    `embedding_origin`'s dict; `fields` the rows' `FIELDS` that footage has.
    """
    try:
        with files.output(filename, suffix='.h5') as partial, h5py.File(partial, 'w') as f:
            f.create_dataset('emb', data=emb)
            f.create_dataset('fids', data=np.asarray(fids, dtype=object),
                             dtype=h5py.string_dtype())
            if emb_aug is not None:
                f.create_dataset('emb_aug', data=emb_aug)
            f.create_dataset('augmentation_types', data=np.asarray(names, dtype='S'))
            if aggregator is not None:
                f.attrs['aggregator'] = aggregator
            for key, value in (made_by or {}).items():
                f.attrs[key] = value
            for key, value in (fields or {}).items():
                text = FIELDS[key] == 'text'
                f.create_dataset(key, data=np.asarray(value, dtype=object) if text else value,
                                 dtype=h5py.string_dtype() if text else FIELDS[key])
    except OSError as e:
        raise cli.UserError('cannot write the embeddings `{}` ({}); is the disk full? '
                            'Nothing was written.'.format(filename, e))


@dataclass
class Embeddings:
    """What a file holds: `emb` (N, D) float32, the images' `fids` (None in
    files from before embed.py stored them), the augmentations' `names`, the
    `aggregator` (None when not stored) and the `origin` (`ORIGIN_KEYS`, as
    far as the file names them)."""
    emb: np.ndarray
    fids: list
    names: list
    aggregator: object = None
    origin: dict = field(default_factory=dict)
    fields: dict = field(default_factory=dict)


def read(path, what='the embeddings'):
    """The `Embeddings` of the file `path`; `what` names it in messages.

    Raises:
        UserError when it cannot be read or holds no `emb` dataset.
    """
    def strings(dataset):
        return [n.decode('utf-8') if isinstance(n, bytes) else str(n)
                for n in files.stored_values(dataset, path)]
    files.check_regular(path, what, 'pass an embeddings file that embed.py wrote')
    try:
        with h5py.File(path, 'r') as f:
            if not isinstance(f.get('emb'), h5py.Dataset):
                raise cli.UserError('`{}` holds no `emb` dataset; was it written by '
                                    'embed.py?'.format(path))
            # Booleans or integers convert to float32 without a word, and mean
            # nothing as embeddings.
            if f['emb'].dtype.kind != 'f':
                raise cli.UserError('the `emb` dataset of `{}` holds {} values, not '
                                    'floats as embed.py writes them; embeddings of another '
                                    'type mean nothing to compare.'.format(
                                           path, f['emb'].dtype))
            return Embeddings(
                emb=np.asarray(files.stored_values(f['emb'], path), np.float32),
                fids=strings(f['fids']) if 'fids' in f else None,
                names=strings(f['augmentation_types']) if 'augmentation_types' in f
                else ['original_resize'],
                aggregator=f.attrs.get('aggregator'),
                origin={key: str(f.attrs[key]) for key in ORIGIN_KEYS if key in f.attrs},
                fields={key: np.array(strings(f[key]) if kind == 'text' else
                                      files.stored_values(f[key], path))
                        for key, kind in FIELDS.items() if key in f})
    except (OSError, ValueError, TypeError) as e:
        raise cli.UserError('cannot read {} `{}`: {}.'.format(what, path, e))


def check_finite(embs, what, remedy, names=None):
    """Refuses embeddings (N, D) with NaN or infinite values, or values so
    large that the distances between them overflow float32 (a squared
    Euclidean distance sums D squared differences), naming the rows.

    Args:
        embs: (N, D) array.
        what (str): Names the embeddings' source in the message.
        remedy (str): What the user can do, one sentence without its full stop.
        names: Optional (N,) names of the rows (such as file names) to show
            beside their numbers.

    Raises:
        UserError when some value is not finite or too large.
    """
    embs = np.asarray(embs)
    with np.errstate(invalid='ignore'):
        largest = np.abs(embs).max(axis=1, initial=0) if embs.ndim == 2 else np.abs(embs)
    limit = np.sqrt(np.finfo(np.float32).max / (4 * max(embs.shape[-1], 1)))
    for bad, problem in ((np.flatnonzero(~np.isfinite(largest)),
                          'non-finite values (NaN or infinity)'),
                         (np.flatnonzero(largest > limit),
                          'values larger than {:.3g} in magnitude, whose distances overflow'
                          .format(limit))):
        if not len(bad):
            continue
        shown = ', '.join('{}{}'.format(i, ' ({})'.format(names[i]) if names is not None else '')
                          for i in bad[:5])
        raise cli.UserError('{}: {} of {} rows hold {}, row {}{}; {}.'.format(
            what, len(bad), len(embs), problem, shown, ', …' if len(bad) > 5 else '', remedy))


def read_augmented(path):
    """The augmented embeddings `emb_aug` (A, N, D) of the file `path`, or
    None when it holds none (`read` leaves them out, as searches never need
    them)."""
    files.check_regular(path, 'the embeddings', 'pass an embeddings file that embed.py wrote')
    try:
        with h5py.File(path, 'r') as f:
            if 'emb_aug' not in f:
                return None
            return np.asarray(files.stored_values(f['emb_aug'], path), np.float32)
    except (OSError, ValueError, TypeError) as e:
        raise cli.UserError('cannot read `{}`: {}.'.format(path, e))
