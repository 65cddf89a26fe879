"""Multi-camera association: each camera's tracks joined into one global
identity per person. TensorFlow-free.

A track is one row of a tracklet file (`embed.py --frames ... --tracklets`):
its camera, its first and last frame and its embedding. Tracks are joined
by their appearance (cosine distance of the embeddings) under the
constraints that make two tracks two people whatever they look like:

- one camera sees two tracks at overlapping frames (two people at once);
- a person is in one camera at a time: the tracks of one identity, in the
  order of the shared clock, never overlap;
- with a camera topology (`inputs/topology.py`), a person leaves one camera
  for another only along a link of the topology, arriving between its least
  and most travel time; a person seen again by the same camera (who left
  and came back) is always possible.

With `matrix`, other distances take the cosine distances' place: associate.py
--rerank gives the k-reciprocal re-ranked ones (Zhong et al.), in which two
tracks are close when their nearest neighbours are shared.

The clustering is greedy average linkage: the pairs of tracks closer than
`threshold` in increasing distance, each joining the two identities it
links when their average distance (every track of one against every track
of the other) is within `threshold` too and the joined identity keeps the
constraints. It needs the distances of close pairs only, computed in blocks,
so that tens of thousands of tracks fit in memory. Joining the two identities
nearest on average first instead (constrained agglomerative clustering, with
a heap of the identities' distances) scored a little lower on the rendered
camera network of bench/mtmc.py (IDF1 93.9% against 94.3% at 0.4).
"""

import bisect
import logging
from dataclasses import dataclass

import numpy as np

from triplet_reid.cli import UserError
from triplet_reid.inputs import embeddings_file

log = logging.getLogger('associate')

# The rows of the distance matrix computed at once: 1024 rows of 20,000
# tracks take 80 MB of float32 (and twice that for their order).
BLOCK = 1024

# The nearest tracks within the threshold that each track is compared with:
# a model that embeds everyone alike (or a threshold of 2) would otherwise
# make every pair of tens of thousands of tracks a candidate.
NEIGHBOURS = 100


@dataclass(frozen=True)
class Tracks:
    """The tracks to associate: cameras (T,) names, tracks (T,) ids within
    their camera, starts and ends (T,) times on the shared clock (frames or
    seconds, see `inputs.topology`), embeddings (T, D) L2-normalised."""
    cameras: np.ndarray
    tracks: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    embeddings: np.ndarray


def normalised(embeddings, where):
    """`embeddings` (T, D) scaled to unit length, refusing NaN, infinite and
    zero vectors (no direction to compare), naming `where` they came from."""
    embeddings = np.asarray(embeddings, np.float64)
    bad = ~np.isfinite(embeddings).all(axis=1)
    if bad.any():
        raise UserError('{} holds {} embeddings with NaN or infinite values (the first is row '
                        '{}); embed the tracks again with a working model.'.format(
                            where, int(bad.sum()), int(np.flatnonzero(bad)[0])))
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    if (norms == 0).any():
        raise UserError('{} holds an embedding of zeros (row {}), which has no direction to '
                        'compare.'.format(where, int(np.flatnonzero(norms[:, 0] == 0)[0])))
    return (embeddings / norms).astype(np.float32)


def close_pairs(embeddings, threshold, neighbours=NEIGHBOURS, matrix=None):
    """(distances, first, second) of the pairs i < j of unit `embeddings`
    (T, D) whose cosine distance 1 - eᵢ·eⱼ (or distance in `matrix`, (T, T)
    symmetric, when given) is at most `threshold`, each among the
    `neighbours` nearest of i or of j, in increasing distance (ties by
    index), computed `BLOCK` rows at a time."""
    count = len(embeddings)
    distances, firsts, seconds = [], [], []
    for start in range(0, count, BLOCK):
        block = 1.0 - embeddings[start:start + BLOCK] @ embeddings.T if matrix is None else \
            matrix[start:start + BLOCK].copy()
        rows = np.arange(len(block))
        block[rows, rows + start] = np.inf
        if count > neighbours:
            columns = np.argpartition(block, neighbours - 1, axis=1)[:, :neighbours]
        else:
            columns = np.broadcast_to(np.arange(count), block.shape)
        near = np.take_along_axis(block, columns, axis=1)
        row, position = np.nonzero(near <= threshold)
        column = columns[row, position]
        distances.append(near[row, position])
        firsts.append(np.minimum(row + start, column))
        seconds.append(np.maximum(row + start, column))
    distances, firsts, seconds = (np.concatenate(a) for a in (distances, firsts, seconds))
    _, unique = np.unique(firsts.astype(np.int64) * count + seconds, return_index=True)
    distances, firsts, seconds = distances[unique], firsts[unique], seconds[unique]
    order = np.lexsort((seconds, firsts, distances))
    return distances[order], firsts[order], seconds[order]


def read_tracks(paths, topology):
    """The `serving.association.Tracks` of the tracklet files `paths`.

    Raises:
        UserError for a file without tracks' fields, of another model or
        dimension than the first, a track in two files or rows, frames that
        run backwards, and NaN embeddings.
    """
    parts, first, seen = [], None, {}
    for path in paths:
        found = embeddings_file.read(path, 'the tracklets')
        missing = [key for key in ('camera', 'track', 'frame', 'last_frame')
                   if key not in found.fields]
        if missing:
            raise UserError('`{}` has no `{}` of its rows; associate the tracklet files of '
                                'embed.py --frames ... --tracklets.'.format(path, missing[0]))
        if first is not None:
            if found.emb.shape[1] != first[1].emb.shape[1]:
                raise UserError('`{}` holds {}-d embeddings and `{}` {}-d ones; associate '
                                    'the tracks of one model.'.format(
                                        path, found.emb.shape[1], first[0],
                                        first[1].emb.shape[1]))
            differs = embeddings_file.origin_difference(first[1].origin, found.origin)
            if differs:
                raise UserError('`{}` and `{}` were embedded by {}; associate the tracks of '
                                    'one model.'.format(first[0], path, differs))
        first = first or (path, found)
        fields = found.fields
        for row, (camera, track, start, end) in enumerate(zip(
                fields['camera'], fields['track'], fields['frame'], fields['last_frame'])):
            key = (str(camera), int(track))
            if key in seen:
                raise UserError('track {} of camera `{}` is in `{}` row {} and in `{}`; each '
                                    'track is one row of one file.'.format(
                                        track, camera, path, row, seen[key]))
            seen[key] = '{} row {}'.format(path, row)
            if end < start:
                raise UserError('`{}` row {}: track {} of camera `{}` ends at frame {} before '
                                    'it starts at {}; its frames run backwards.'.format(
                                        path, row, track, camera, end, start))
        parts.append((fields, normalised(found.emb, '`{}`'.format(path))))
    cameras = np.concatenate([np.asarray(f['camera'], dtype=object) for f, _ in parts])
    if topology is not None:
        topology.check_cameras(set(cameras), ', '.join(paths))
    frames = [np.concatenate([f[key] for f, _ in parts]).astype(np.int64)
              for key in ('frame', 'last_frame')]
    if topology is None:
        starts, ends = (f.astype(np.float64) for f in frames)
    else:
        starts, ends = (np.array([topology.times(c, np.array([f]))[0]
                                  for c, f in zip(cameras, fs)]) for fs in frames)
    return Tracks(cameras.astype(str), np.concatenate([f['track'] for f, _ in parts]),
                  starts, ends, np.concatenate([e for _, e in parts]))


class Identity:
    """One global identity while clustering: its tracks' indices, the sum
    of their embeddings, and their visits [(start, end, camera)] in the
    order of the shared clock."""

    def __init__(self, index, tracks):
        self.members = [index]
        self.total = tracks.embeddings[index].astype(np.float64)
        self.visits = [(float(tracks.starts[index]), float(tracks.ends[index]),
                        str(tracks.cameras[index]))]


def average_distance(first, second):
    """The mean cosine distance between every track of one `Identity` and
    every track of the other: 1 - (Σa · Σb) / (|a| |b|) for unit vectors."""
    return 1.0 - float(first.total @ second.total) / (len(first.members) * len(second.members))


def follows(first, second, topology):
    """Whether one person can make the visit `second` (start, end, camera)
    after `first`: it starts after `first` ends, and with a `topology` a
    move to another camera follows its links within their travel times."""
    (_, end, camera), (start, _, other) = first, second
    if start <= end:
        # At once: only in two cameras that see one place.
        return topology is not None and other != camera and topology.together(camera, other)
    return topology is None or other == camera or topology.allows(camera, other, start - end)


def meets_at_once(visits, others, topology):
    """Whether, for a topology of cameras that see one place at once, every
    visit of `others` that meets one of `visits` in time is in a camera
    that sees the same place as that one's: neighbours in the order of the
    clock are not enough, as a long visit in one camera spans several."""
    return all(u[2] != v[2] and topology.together(u[2], v[2])
               for v in others for u in visits if u[0] <= v[1] and v[0] <= u[1])


def can_join(visits, others, topology):
    """Whether the sorted `visits` and `others` of two identities are one
    person's: each of `others` against its neighbours once both are one
    sorted list, found by bisection (the rest were neighbours before), so
    that a large identity costs a search, not a copy."""
    if topology is not None and topology.overlaps and not meets_at_once(visits, others,
                                                                         topology):
        return False
    for index, visit in enumerate(others):
        at = bisect.bisect_left(visits, visit)
        before = visits[at - 1] if at else None
        if index and (before is None or others[index - 1] > before):
            before = others[index - 1]
        after = visits[at] if at < len(visits) else None
        if index + 1 < len(others) and (after is None or others[index + 1] < after):
            after = others[index + 1]
        if (before is not None and not follows(before, visit, topology)) or (
                after is not None and not follows(visit, after, topology)):
            return False
    return True


def associate(tracks, threshold, topology=None, constraints=True, matrix=None):
    """Global identities of `tracks` (`Tracks`): (T,) int64, numbered from 0
    in the order of each identity's first track.

    Args:
        tracks: the tracks, their embeddings of unit length.
        threshold: the largest cosine distance at which two tracks, and two
            identities on average, are one person.
        topology: an `inputs.topology.Topology`, or None for no links
            (any camera may follow any other, at any time after).
        constraints: whether a person is in one place at a time; without,
            appearance alone joins tracks (what the constraints add is
            measured against it: bench/mtmc.py).
        matrix: (T, T) symmetric distances to use in place of the cosine
            distances (the re-ranked ones: `evaluation.rerank.reranked_matrix`).
    """
    identities = [Identity(index, tracks) for index in range(len(tracks.cameras))]
    owner = list(range(len(identities)))

    def find(index):
        while owner[index] != index:
            owner[index] = owner[owner[index]]
            index = owner[index]
        return index

    distances, firsts, seconds = close_pairs(tracks.embeddings, threshold, matrix=matrix)
    joined = 0
    for first, second in zip(firsts, seconds):
        a, b = find(int(first)), find(int(second))
        if a == b:
            continue
        one, other = identities[a], identities[b]
        average = average_distance(one, other) if matrix is None else float(
            matrix[np.ix_(one.members, other.members)].mean())
        if average > threshold:
            continue
        keep, drop = (a, b) if len(one.visits) >= len(other.visits) else (b, a)
        kept, dropped = identities[keep], identities[drop]
        if constraints and not can_join(kept.visits, dropped.visits, topology):
            continue
        kept.members += dropped.members
        kept.total = one.total + other.total
        for visit in dropped.visits:
            bisect.insort(kept.visits, visit)
        owner[drop] = keep
        joined += 1
    roots = np.array([find(index) for index in range(len(identities))])
    _, first_of, numbered = np.unique(roots, return_index=True, return_inverse=True)
    # Identities numbered by their first track, so that the numbers do not
    # depend on which root the union kept.
    rank = np.empty(len(first_of), np.int64)
    rank[np.argsort(first_of, kind='stable')] = np.arange(len(first_of))
    log.info('%d tracks in %d identities (%d pairs within %.3f, %d joins).',
             len(roots), len(first_of), len(distances), threshold, joined)
    return rank[numbered]


# The estimated topology's first pass joins tracks within this fraction of
# the threshold: the confident matches whose transit times it measures.
CONFIDENT = 0.5

# Each estimated window reaches this fraction of its observed spread (and
# of its bounds) beyond the least and most transit times observed.
MARGIN = 0.5


def transit_times(tracks, identities):
    """{(camera, other): [gaps]} of `identities` (T,): the time from each
    identity's visit of one camera to its next visit, in another camera."""
    gaps = {}
    for identity in np.unique(identities):
        rows = np.flatnonzero(identities == identity)
        rows = rows[np.argsort(tracks.starts[rows], kind='stable')]
        for row, following in zip(rows, rows[1:]):
            camera, other = str(tracks.cameras[row]), str(tracks.cameras[following])
            gap = float(tracks.starts[following] - tracks.ends[row])
            if camera != other and gap > 0:  # Not two cameras seeing one place at once.
                gaps.setdefault(tuple(sorted((camera, other))), []).append(gap)
    return gaps


def estimate_topology(tracks, threshold, base=None, matrix=None):
    """The camera links of `tracks` estimated from a first pass (constrained,
    within `CONFIDENT` of `threshold`): each pair of cameras between which a
    confident identity walked, with a window around the transit times
    observed (`MARGIN` beyond them), on the tracks' own clock. Pairs that no
    confident identity walked between are not linked. `base`, a topology
    without links (its clock and its cameras that see one place at once),
    constrains the first pass and is kept; `matrix` is `associate`'s.

    Returns:
        (`inputs.topology.Topology`, {pair: observed gaps}).
    """
    from triplet_reid.inputs.topology import Topology
    gaps = transit_times(tracks, associate(tracks, threshold * CONFIDENT, base, matrix=matrix))
    windows = {}
    for (camera, other), observed in gaps.items():
        least, most = min(observed), max(observed)
        spread = max(most - least, MARGIN * most, 1.0) * MARGIN
        windows[camera, other] = windows[other, camera] = (max(0.0, least - spread),
                                                           most + spread)
    if base is None:
        return Topology('frames', {}, windows), gaps
    return Topology(base.clock, base.cameras, windows, base.overlaps), gaps


# The state of online association: an HDF5 file of the tracks taken so far
# (`STATE_TRACKS`: camera, track, start, end, identity) and of each global
# identity's sum of unit embeddings and count (`sums`, `counts`).
STATE_TRACKS = {'camera': object, 'track': np.int64, 'start': np.float64, 'end': np.float64,
                'identity': np.int64}


@dataclass
class State:
    """Online association's state (see `STATE_TRACKS`): the tracks'
    columns {name: array}, `sums` (I, D) float64 and `counts` (I,)."""
    columns: dict
    sums: np.ndarray
    counts: np.ndarray

    @staticmethod
    def empty(dim):
        return State({name: np.zeros(0, kind) for name, kind in STATE_TRACKS.items()},
                     np.zeros((0, dim)), np.zeros(0, np.int64))


def read_state(path):
    """The `State` of the file `path`, checked as a file from elsewhere is.

    Raises:
        UserError for a file that is not a state this project wrote, or one
        whose columns disagree.
    """
    import h5py
    from triplet_reid.storage import files
    files.check_regular(path, 'the association state', 'pass the --state that associate.py '
                        'wrote, or a new path to start one')
    try:
        with h5py.File(path, 'r') as f:
            columns = {name: files.stored_values(f[name], path) for name in STATE_TRACKS}
            sums, counts = (files.stored_values(f[name], path) for name in ('sums', 'counts'))
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise UserError('`{}` is not an association state that associate.py wrote ({}); pass '
                        'its --state, or a new path to start one.'.format(path, e))
    columns['camera'] = np.array([c.decode('utf-8') if isinstance(c, bytes) else str(c)
                                  for c in columns['camera']], dtype=object)
    lengths = {len(column) for column in columns.values()}
    identities = columns['identity']
    if (len(lengths) != 1 or sums.ndim != 2 or counts.shape != (len(sums),) or (
            len(identities) and (identities.min() < 0 or identities.max() >= len(sums)))
            or not np.isfinite(sums).all()):
        raise UserError('`{}` is damaged: its columns, sums and counts disagree; start a new '
                        'state from the tracklet files.'.format(path))
    return State(columns, np.asarray(sums, np.float64), np.asarray(counts, np.int64))


def write_state(path, state):
    """Writes `state` to `path` whole or not at all (a kill leaves the old one)."""
    import h5py
    from triplet_reid.storage import files
    with files.output(path, suffix='.h5', flag='--state') as partial, \
            h5py.File(partial, 'w') as f:
        for name in STATE_TRACKS:
            values = state.columns[name]
            if name == 'camera':
                f.create_dataset(name, data=np.asarray(values, dtype=object),
                                 dtype=h5py.string_dtype())
            else:
                f.create_dataset(name, data=values)
        f.create_dataset('sums', data=state.sums)
        f.create_dataset('counts', data=state.counts)


def add_tracks(state, tracks, threshold, topology=None):
    """Online association: each of `tracks` (`Tracks`, in order of their
    start) joins the nearest identity of `state` within `threshold` on
    average whose visits it keeps the constraints with, or opens a new one.
    Tracks that `state` holds already (a rerun after a kill) are skipped.

    Returns:
        (the new `State`, identities (T,) of `tracks`, count skipped).

    Raises:
        UserError for a track that `state` holds with other frames.
    """
    if state.sums.shape[1] != tracks.embeddings.shape[1]:
        raise UserError('the state holds {}-d identities and the tracks are {}-d; associate '
                        'the tracks of one model.'.format(state.sums.shape[1],
                                                          tracks.embeddings.shape[1]))
    columns = {name: list(values) for name, values in state.columns.items()}
    held = {(c, int(t)): row for row, (c, t) in enumerate(zip(columns['camera'],
                                                              columns['track']))}
    visits = {}
    for row, identity in enumerate(columns['identity']):
        visits.setdefault(int(identity), []).append(
            (float(columns['start'][row]), float(columns['end'][row]), columns['camera'][row]))
    # Room for new identities doubles when it runs out, so that adding one
    # copies no table of a hundred thousand.
    used = len(state.counts)
    total = np.zeros((max(2 * used, 1024), state.sums.shape[1]))
    total[:used] = state.sums
    counts = np.zeros(len(total), np.int64)
    counts[:used] = state.counts
    found, skipped = np.zeros(len(tracks.cameras), np.int64), 0
    for index in np.argsort(tracks.starts, kind='stable'):
        key = (str(tracks.cameras[index]), int(tracks.tracks[index]))
        visit = (float(tracks.starts[index]), float(tracks.ends[index]), key[0])
        if key in held:
            row = held[key]
            if (columns['start'][row], columns['end'][row]) != visit[:2]:
                raise UserError('track {} of camera `{}` is in the state already, from {:g} to '
                                '{:g}, and now from {:g} to {:g}; each track is added '
                                'once.'.format(key[1], key[0], columns['start'][row],
                                               columns['end'][row], *visit[:2]))
            found[index], skipped = columns['identity'][row], skipped + 1
            continue
        embedding = tracks.embeddings[index].astype(np.float64)
        identity = nearest_allowed(total[:used], counts[:used], embedding, visit, visits,
                                   threshold, topology)
        if identity is None:
            if used == len(total):
                total = np.concatenate([total, np.zeros_like(total)])
                counts = np.concatenate([counts, np.zeros_like(counts)])
            identity, used = used, used + 1
            visits[identity] = [visit]
        else:
            bisect.insort(visits[identity], visit)
        total[identity] += embedding
        counts[identity] += 1
        for name, value in zip(STATE_TRACKS, key + visit[:2] + (identity,)):
            columns[name].append(value)
        held[key] = len(columns['identity']) - 1
        found[index] = identity
    return State({name: np.array(columns[name], kind) for name, kind in STATE_TRACKS.items()},
                 total[:used], counts[:used]), found, skipped


def nearest_allowed(total, counts, embedding, visit, visits, threshold, topology):
    """The identity (an index of `total` (I, D) sums and `counts` (I,)) nearest
    `embedding` on average within `threshold` whose `visits` the new
    `visit` keeps the constraints with, or None."""
    if not len(counts):
        return None
    distances = 1.0 - (total @ embedding) / counts
    candidates = np.flatnonzero(distances <= threshold)
    for identity in candidates[np.argsort(distances[candidates], kind='stable')]:
        if can_join(visits[int(identity)], [visit], topology):
            return int(identity)
    return None
