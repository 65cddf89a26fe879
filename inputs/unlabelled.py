"""The crops of a training set without identity labels, for train.py
--pseudo_labels, with what else is known of them: their cameras, tracks and
frames (free supervision from footage) and, for measuring only, their true
identities. TensorFlow-free.

A training set is one of:
  - a folder of crops (searched recursively), which is also the image root;
  - a dataset CSV of `identity,relative/path` rows, whose identities are
    kept for measuring only;
  - a CSV of `relative/path` rows;
  - a CSV whose first line names its columns: `path` and any of `identity`,
    `camera`, `track` (an empty field or -1: no track) and `frame` (an
    integer; with tracks, two tracks of one camera whose frames overlap are
    two people).
"""

import os
from dataclasses import dataclass

import numpy as np

from triplet_reid import common
from triplet_reid.cli import UserError, patterns
from triplet_reid.cli.flags import as_list


@dataclass(frozen=True)
class Crops:
    """The crops to cluster: (N,) paths relative to `image_root`, and (N,)
    arrays of what is known of them, or None: `identities` (strings, for
    measuring only), `cameras` (strings), `tracks` (strings, '' for none) and
    `frames` (int64)."""
    fids: np.ndarray
    image_root: str
    identities: object = None
    cameras: object = None
    tracks: object = None
    frames: object = None

    def subset(self, keep):
        """The crops of the boolean mask or indices `keep`."""
        return Crops(self.fids[keep], self.image_root,
                     *(None if values is None else values[keep]
                       for values in (self.identities, self.cameras, self.tracks, self.frames)))


def check_tracks(crops, csv_file):
    """Refuses a track column that contradicts itself: one track with two
    crops in one frame of one camera (a track has one box per frame)."""
    if crops.tracks is None or crops.frames is None:
        return
    cameras = crops.cameras if crops.cameras is not None else np.full(len(crops.fids), '')
    seen = {}
    for line, key in enumerate(zip(cameras, crops.tracks, crops.frames), 2):
        if key[1] in ('', '-1'):
            continue
        if key in seen:
            raise UserError('`{}` lines {} and {}: track `{}`{} has two crops in frame {}, but a '
                            'track is one person seen once a frame; give one of them another '
                            'track.'.format(csv_file, seen[key], line, key[1],
                                            ' of camera `{}`'.format(key[0]) if key[0] else '',
                                            key[2]))
        seen[key] = line


def read_set(train_set, image_root):
    """The crops of one training set (see the module's docstring) with its
    image root (None for a folder: the folder itself)."""
    if os.path.isdir(train_set):
        if image_root is not None and os.path.abspath(image_root) != os.path.abspath(
                train_set):
            raise UserError('--train_set `{}` is a folder of crops, which is its own image '
                            'root; leave out --image_root `{}`.'.format(train_set, image_root))
        root = os.path.abspath(train_set)
        fids = np.array([os.path.relpath(p, root) for p in common.find_images([train_set])])
        return Crops(fids, root)
    if image_root is None:
        raise UserError('you did not specify the `--image_root` argument, the folder that the '
                        'paths of `{}` are relative to.'.format(train_set))
    columns, names = common.read_crop_table(train_set)
    if names is None:
        return Crops(columns['path'], image_root, identities=columns.get('identity'))
    crops = Crops(common.checked_paths(columns['path'], train_set, 2), image_root,
                  columns.get('identity'), columns.get('camera'), columns.get('track'),
                  common.checked_frames(columns['frame'], train_set) if 'frame' in columns
                  else None)
    check_tracks(crops, train_set)
    return crops


def cameras_from_paths(fids, camera_regex):
    """(N,) the first group of `camera_regex` searched in each path."""
    regexp = patterns.compile(camera_regex, '--camera_regex')
    cameras = []
    for fid in fids:
        match = regexp.search(fid)
        if match is None or match.group(1) is None:
            raise UserError('the path `{}` has no camera that --camera_regex `{}` finds (its '
                            'first group); fix the regex or give a `camera` column.'.format(
                                fid, camera_regex))
        cameras.append(match.group(1))
    return np.array(cameras)


def read_crops(train_set, image_root, camera_regex=None):
    """The crops of train.py's --train_set and --image_root (a path each, or
    lists; several sets are joined as `common.merge_datasets` joins them,
    their tracks and identities kept apart).

    Raises:
        UserError naming the file and line of what cannot be read.
    """
    sets = as_list(train_set)
    roots = as_list(image_root) if image_root else [None]
    if len(sets) > 1 and len(roots) == 1:
        roots = roots * len(sets)
    if len(roots) != len(sets):
        common.training_sets(sets, roots)  # Raises the usual message.
    parts = [read_set(s, r) for s, r in zip(sets, roots)]
    if len(parts) == 1:
        crops = parts[0]
    else:
        for part in parts:
            for name in ('identities', 'cameras', 'tracks', 'frames'):
                if (getattr(part, name) is None) != (getattr(parts[0], name) is None):
                    raise UserError('the training sets {} do not all give {}; give every set '
                                    'the same columns.'.format(', '.join(sets), name))
        _, fids, root = common.merge_datasets([
            (np.zeros(len(p.fids), str), p.fids, p.image_root, s) for p, s in zip(parts, sets)])

        def joined(name, number_them=True):
            # One set's camera `1` or track `7` is not another's; no track stays none.
            if getattr(parts[0], name) is None:
                return None
            return np.concatenate([np.array([v if v in ('', '-1') else '{}:{}'.format(i, v)
                                             for v in getattr(p, name)])
                                   if number_them else getattr(p, name)
                                   for i, p in enumerate(parts, 1)])
        crops = Crops(fids, root, joined('identities'), joined('cameras'), joined('tracks'),
                      joined('frames', number_them=False))
    missing = [f for f in crops.fids if not os.path.lexists(os.path.join(crops.image_root, f))]
    if missing:
        raise UserError('{} of the {} crops of {} are missing under the image root `{}`, for '
                        'example {}. Check `--image_root`.'.format(
                            len(missing), len(crops.fids), ', '.join(sets), crops.image_root,
                            ', '.join('`{}`'.format(f) for f in missing[:3])))
    if camera_regex is not None and crops.cameras is None:
        crops = Crops(crops.fids, crops.image_root, crops.identities,
                      cameras_from_paths(crops.fids, camera_regex), crops.tracks, crops.frames)
    return crops
