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

The clustering is greedy average linkage: the pairs of tracks closer than
`threshold` in increasing distance, each joining the two identities it
links when their average distance (every track of one against every track
of the other) is within `threshold` too and the joined identity keeps the
constraints. It needs the distances of close pairs only, computed in blocks,
so that tens of thousands of tracks fit in memory.
"""

import bisect
import logging
from dataclasses import dataclass

import numpy as np

from triplet_reid.cli import UserError

log = logging.getLogger('associate')

# The rows of the distance matrix computed at once: 2048 rows of 20,000
# tracks take 160 MB of float32.
BLOCK = 2048


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


def close_pairs(embeddings, threshold):
    """(distances, first, second) of the pairs i < j of unit `embeddings`
    (T, D) whose cosine distance 1 - eᵢ·eⱼ is at most `threshold`, in
    increasing distance (ties by index), computed `BLOCK` rows at a time."""
    distances, firsts, seconds = [], [], []
    for start in range(0, len(embeddings), BLOCK):
        block = 1.0 - embeddings[start:start + BLOCK] @ embeddings[start:].T
        rows, columns = np.nonzero(block <= threshold)
        columns = columns + start
        rows = rows + start
        keep = columns > rows
        distances.append(block[rows[keep] - start, columns[keep] - start])
        firsts.append(rows[keep])
        seconds.append(columns[keep])
    distances, firsts, seconds = (np.concatenate(a) for a in (distances, firsts, seconds))
    order = np.lexsort((seconds, firsts, distances))
    return distances[order], firsts[order], seconds[order]


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


def keeps_constraints(visits, topology):
    """Whether one person can have made `visits` [(start, end, camera)]
    sorted by start: none overlaps the next, and with a `topology`
    (`inputs.topology.Topology`) each move to another camera follows one of
    its links within its travel times."""
    for (start, end, camera), (next_start, _, next_camera) in zip(visits, visits[1:]):
        if next_start <= end:
            return False
        if topology is not None and next_camera != camera and not topology.allows(
                camera, next_camera, next_start - end):
            return False
    return True


def associate(tracks, threshold, topology=None):
    """Global identities of `tracks` (`Tracks`): (T,) int64, numbered from 0
    in the order of each identity's first track.

    Args:
        tracks: the tracks, their embeddings of unit length.
        threshold: the largest cosine distance at which two tracks, and two
            identities on average, are one person.
        topology: an `inputs.topology.Topology`, or None for no links
            (any camera may follow any other, at any time after).
    """
    identities = [Identity(index, tracks) for index in range(len(tracks.cameras))]
    owner = list(range(len(identities)))

    def find(index):
        while owner[index] != index:
            owner[index] = owner[owner[index]]
            index = owner[index]
        return index

    distances, firsts, seconds = close_pairs(tracks.embeddings, threshold)
    joined = 0
    for first, second in zip(firsts, seconds):
        a, b = find(int(first)), find(int(second))
        if a == b:
            continue
        one, other = identities[a], identities[b]
        if average_distance(one, other) > threshold:
            continue
        visits = list(one.visits)
        for visit in other.visits:
            bisect.insort(visits, visit)
        if not keeps_constraints(visits, topology):
            continue
        keep, drop = (a, b) if len(one.members) >= len(other.members) else (b, a)
        kept = identities[keep]
        kept.members += identities[drop].members
        kept.total = one.total + other.total
        kept.visits = visits
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
