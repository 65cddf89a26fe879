"""Video re-id sets: the tracklets of a CSV with one row per frame image.

A tracklet CSV names its columns in its first line: `path`, `identity`,
`camera` and `track`, and optionally `frame` (an integer that orders the
frames of a track; CSV order without it), as data/convert_video.py writes
MARS, iLIDS-VID, PRID-2011 and DukeMTMC-VideoReID and data/footage_crops.py
writes footage. A tracklet is the frames of one (identity, camera, track);
it is named `identity/camera/track`, in the embeddings file that embed.py
writes and in evaluation, whose `tracklets` excluder reads that name.
TensorFlow-free.
"""

from dataclasses import dataclass

import numpy as np

from triplet_reid import common
from triplet_reid.cli import UserError

REQUIRED = ('path', 'identity', 'camera', 'track')


@dataclass(frozen=True)
class Tracklets:
    """The tracklets of a set: (N,) frame paths `fids` grouped by tracklet
    (tracklet t owns `fids[bounds[t]:bounds[t + 1]]`, in frame order) and,
    for the T tracklets in order of their first row, `names`, `identities`
    and `cameras` (T,) strings."""
    fids: np.ndarray
    bounds: np.ndarray
    names: np.ndarray
    identities: np.ndarray
    cameras: np.ndarray

    @property
    def lengths(self):
        """(T,) the number of frames of each tracklet."""
        return np.diff(self.bounds)

    def frame_tracklets(self):
        """(N,) the tracklet of each frame of `fids`."""
        return np.repeat(np.arange(len(self.names)), self.lengths)

    def subset(self, keep):
        """The tracklets of the frames of the (N,) boolean mask `keep`; a
        tracklet left without frames is left out."""
        tracklet = self.frame_tracklets()[keep]
        kept = np.unique(tracklet)
        counts = np.bincount(np.searchsorted(kept, tracklet), minlength=len(kept))
        return Tracklets(self.fids[keep], np.concatenate([[0], np.cumsum(counts)]).astype(
            np.int64), self.names[kept], self.identities[kept], self.cameras[kept])


def is_tracklet_csv(csv_file):
    """Whether `csv_file` names its columns and has a `track` column."""
    names = common.header_of(common.read_text(csv_file))
    return names is not None and 'track' in names


def read_tracklets(csv_file, image_root=None):
    """The `Tracklets` of a tracklet CSV (see the module's docstring).

    Args:
        image_root (str or None): When given, every frame must exist under it.

    Raises:
        UserError naming the file (and line) of a CSV without the columns, of
        an empty field, of a name holding `/`, of a track with two rows of
        one frame, and of missing frames.
    """
    text = common.read_text(csv_file)
    names = common.header_of(text)
    missing = [c for c in REQUIRED if names is None or c not in names]
    if missing:
        raise UserError('`{}` is not a tracklet CSV: its first line must name the columns {} '
                        '(and optionally frame), and it lacks {}. data/convert_video.py writes '
                        'them.'.format(csv_file, ', '.join(REQUIRED), ', '.join(missing)))
    columns = common.read_columns(csv_file, names, text)
    paths = common.checked_paths(columns['path'], csv_file, 2)
    for key in ('identity', 'camera', 'track'):
        for line, value in enumerate(columns[key], 2):
            if not value or '/' in value:
                raise UserError('`{}` line {}: the {} `{}` is {}; every frame needs its {} '
                                'without a `/`, which tracklet names use.'.format(
                                    csv_file, line, key, value, 'empty' if not value else
                                    'not a plain name', key))
    frames = common.checked_frames(columns['frame'], csv_file) if 'frame' in columns \
        else np.arange(len(paths), dtype=np.int64)
    keys = ['{}/{}/{}'.format(*key) for key in zip(
        columns['identity'], columns['camera'], columns['track'])]
    unique, first, index = np.unique(keys, return_index=True, return_inverse=True)
    # Tracklets in the order of their first row, frames in frame order.
    rank = np.argsort(np.argsort(first, kind='stable'), kind='stable')[index]
    order = np.lexsort((frames, rank))
    twice = np.flatnonzero((np.diff(rank[order]) == 0) & (np.diff(frames[order]) == 0))
    if len(twice):
        a, b = sorted(order[twice[0]:twice[0] + 2])
        raise UserError('`{}` lines {} and {}: tracklet `{}` has two rows of frame {}; give each '
                        'frame of a track one row.'.format(csv_file, a + 2, b + 2, keys[a],
                                                           frames[a]))
    by_first = np.argsort(first, kind='stable')
    tracklets = Tracklets(
        fids=paths[order],
        bounds=np.concatenate([[0], np.cumsum(np.bincount(rank))]).astype(np.int64),
        names=unique[by_first], identities=columns['identity'][first[by_first]],
        cameras=columns['camera'][first[by_first]])
    if image_root is not None:
        common.check_images_exist(tracklets.fids, image_root, csv_file)
    return tracklets


def labelled_set(csv_file):
    """(identities, names) (N,) of an evaluation CSV: of its images, as
    `common.load_dataset` reads them, or of its tracklets, named
    `identity/camera/track` as embed.py names their embeddings."""
    if is_tracklet_csv(csv_file):
        found = read_tracklets(csv_file)
        return found.identities, found.names
    return common.load_dataset(csv_file, None)
