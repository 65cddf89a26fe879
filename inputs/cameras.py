"""The cameras of TransReID's side information embedding (SIE): each
image's camera, found in its path, as a row of the experiment's table of
cameras (`Experiment.sie_cameras`)."""

import numpy as np

from triplet_reid.cli import UserError
from triplet_reid.inputs.unlabelled import cameras_from_paths


def camera_key(name):
    """A camera's name as the table holds it: a number without its leading
    zeros (`03` and `3` are one camera), any other name as it is."""
    name = str(name).strip()
    return str(int(name)) if name.isdigit() else name


def sie_table(names):
    """The table of cameras of the (N,) camera `names` of a training set:
    each once, numbers in their order (2 before 10), then the other names
    in theirs."""
    keys = {camera_key(name) for name in names}
    return sorted(keys, key=lambda key: (not key.isdigit(), int(key) if key.isdigit() else 0,
                                         key))


def camera_indices(names, table):
    """(N,) int32 rows of `table` (a list of camera names) of the camera
    `names`, -1 for a camera that it lacks."""
    rows = {key: row for row, key in enumerate(table)}
    return np.array([rows.get(camera_key(name), -1) for name in names], np.int32)


def training_cameras(fids, camera_regex, table=None, source='--train_set'):
    """(table, (N,) int32 rows) of the training images `fids`: their cameras
    found by `camera_regex`, numbered in a new table, or in `table` (that of
    the experiment being resumed), which must hold them all.

    Raises:
        UserError for a path without a camera, or a camera `table` lacks.
    """
    names = cameras_from_paths(fids, camera_regex)
    if table is None:
        table = sie_table(names)
    rows = camera_indices(names, table)
    if (rows < 0).any():
        missing = sorted({camera_key(n) for n, r in zip(names, rows) if r < 0})
        raise UserError('{} holds images of the cameras {}, which the stored camera embedding '
                        '(--sie, cameras {}) has no rows for; resume with the training set it '
                        'began with, or start a new experiment root.'.format(
                            source, ', '.join(missing[:10]), ', '.join(table[:20])))
    return table, rows


def embedding_cameras(fids, camera_regex, table, warn=None, source='the images', names=None):
    """(N,) int32 rows of `table` of the images `fids` to embed, their
    cameras found by `camera_regex` (or given as `names`); -1, embedding
    without a camera, for a camera that `table` lacks (another dataset's),
    with a warning through `warn` (a function of the message).

    Raises:
        UserError for a path without a camera.
    """
    if names is None:
        names = cameras_from_paths(fids, camera_regex)
    rows = camera_indices(names, table)
    if (rows < 0).any() and warn is not None:
        warn('{} of {} are of cameras the camera embedding (SIE) did not learn ({}); they are '
             'embedded without one.'.format(int((rows < 0).sum()), source, ', '.join(
                 sorted({camera_key(n) for n, r in zip(names, rows) if r < 0})[:10])))
    return rows


def given_cameras(cameras, table, count):
    """(count,) int32 rows in `table` (a list of camera names, or None for a
    model without SIE) of the `cameras` a caller gives for `count` images,
    None for an image of no camera the table holds (-1: embedded without).

    Raises:
        UserError for a model without SIE, a count that differs, or a
        camera the table lacks.
    """
    if not table:
        raise UserError('this model has no camera embedding (SIE), so it takes no cameras; '
                        'leave them out.')
    cameras = list(np.asarray(cameras, dtype=object).reshape(-1))
    if len(cameras) != count:
        raise UserError('{} cameras were given for {} images; give one camera per '
                        'image.'.format(len(cameras), count))
    rows = camera_indices(['' if c is None else c for c in cameras], table)
    unknown = [c for c, r in zip(cameras, rows) if r < 0 and c is not None]
    if unknown:
        raise UserError('camera {!r} is not one of the {} cameras whose embedding the model '
                        'learnt ({}); pass None for an image of another camera, which then '
                        'embeds without one.'.format(unknown[0], len(table),
                                                     ', '.join(table[:20])))
    return rows
