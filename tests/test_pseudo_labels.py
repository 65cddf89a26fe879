"""Pseudo-identities of unlabelled crops: the nearest neighbours, the
k-reciprocal encodings and Jaccard distances against dense NumPy references
written from SpCL's `compute_jaccard_distance`, DBSCAN's clusters on
well-separated identities, and the scores that measure them."""

import numpy as np
import pytest

from triplet_reid.training import pseudo_labels


def separated(rng, identities=12, per_identity=6, dim=16, noise=0.1):
    """(embeddings (N, D), identities (N,)) of well-separated identities."""
    ids = np.repeat(np.arange(identities), per_identity)
    centres = rng.normal(size=(identities, dim))
    return (centres[ids] + noise * rng.normal(size=(len(ids), dim))).astype(np.float32), ids


def dense_encodings(embs, k1, k2, cameras=None, penalty=0.0):
    """SpCL's encodings, densely and row by row, from a brute-force ranking;
    with `cameras` (N,), two crops of one camera `penalty` farther apart."""
    n = len(embs)
    dist = ((embs[:, None] - embs[None]) ** 2).sum(-1)
    if cameras is not None:
        dist += penalty * (cameras[:, None] == cameras[None]) * (1 - np.eye(n))
    rank = np.argsort(dist, axis=1, kind='stable')

    def reciprocal(i, k):
        forward = rank[i, :k + 1]
        backward = rank[forward, :k + 1]
        return forward[np.where(backward == i)[0]]

    v = np.zeros((n, n))
    for i in range(n):
        members = reciprocal(i, k1)
        expansion = members
        for candidate in members:
            near = reciprocal(candidate, int(np.around(k1 / 2)))
            if len(np.intersect1d(near, members)) > 2 / 3 * len(near):
                expansion = np.append(expansion, near)
        expansion = np.unique(expansion)
        weight = np.exp(-dist[i, expansion])
        v[i, expansion] = weight / weight.sum()
    if k2 > 1:
        v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(n)])
    return v


def dense_jaccard(v):
    """1 - Σ min / Σ max between every two rows of dense V."""
    low = np.minimum(v[:, None], v[None]).sum(-1)
    high = np.maximum(v[:, None], v[None]).sum(-1)
    return 1 - low / high


def test_nearest_neighbours_are_exact_and_put_each_row_first():
    rng = np.random.default_rng(0)
    embs = pseudo_labels.normalized(rng.normal(size=(50, 8)))
    embs[7] = embs[3]  # A duplicate: each of the two must still come first in its own row.
    indices, distances = pseudo_labels.nearest_neighbours(embs, 6)
    expected = np.argsort(((embs[:, None] - embs[None]) ** 2).sum(-1), axis=1, kind='stable')
    assert (indices[:, 0] == np.arange(50)).all() and (distances[:, 0] == 0).all()
    assert {3, 7} <= set(indices[3, :2]) and {3, 7} <= set(indices[7, :2])
    for row in range(50):
        assert set(indices[row]) == set(expected[row, :6]) or row in (3, 7)


def test_beyond_the_exact_limit_an_inverted_file_finds_the_neighbours(monkeypatch):
    rng = np.random.default_rng(1)
    embs, _ = separated(rng, identities=100, per_identity=10, dim=32, noise=0.3)
    embs = pseudo_labels.normalized(embs)
    exact, _ = pseudo_labels.nearest_neighbours(embs, 10)
    monkeypatch.setattr(pseudo_labels, 'EXACT_LIMIT', 100)
    approximate, distances = pseudo_labels.nearest_neighbours(embs, 10)
    assert (approximate[:, 0] == np.arange(1000)).all()
    found = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approximate, exact)])
    assert found > 0.95
    assert (np.diff(distances[:, 1:], axis=1) >= -1e-5).all()


@pytest.mark.parametrize('k2', [1, 3])
def test_encodings_and_jaccard_distances_match_the_dense_reference(k2):
    rng = np.random.default_rng(2)
    embs = pseudo_labels.normalized(separated(rng, identities=6, per_identity=5, dim=8,
                                              noise=0.6)[0])
    k1 = 6
    rank, _ = pseudo_labels.nearest_neighbours(embs, k1 + 1)
    v = pseudo_labels.encodings(embs, rank, k1, k2)
    expected = dense_encodings(embs.astype(np.float64), k1, k2)
    np.testing.assert_allclose(v.toarray(), expected, atol=1e-5)
    np.testing.assert_allclose(np.asarray(v.sum(axis=1)).ravel(), 1, atol=1e-5)

    reference = dense_jaccard(expected)
    graph = {(i, j) for i in range(len(embs)) for j in rank[i]}
    graph |= {(j, i) for i, j in graph}
    for below in (1.0, 0.6):
        distances = pseudo_labels.jaccard_distances(v, rank, below, block=7)
        coo = distances.tocoo()
        stored = set(zip(coo.row.tolist(), coo.col.tolist()))  # stored zeros too
        np.testing.assert_allclose(coo.data, reference[coo.row, coo.col], atol=1e-5)
        # Exactly the graph's pairs closer than `below`, each row with itself.
        assert stored == {(i, j) for i, j in graph if reference[i, j] < below - 1e-6} | {
            (i, i) for i in range(len(embs))}
        assert (distances != distances.T).nnz == 0
        np.testing.assert_allclose(distances.diagonal(), 0, atol=1e-6)


def test_a_camera_penalty_matches_the_dense_reference():
    rng = np.random.default_rng(3)
    embs = pseudo_labels.normalized(separated(rng, identities=6, per_identity=6, dim=8,
                                              noise=0.6)[0])
    cameras = np.tile(['a', 'b', 'c'], 12)
    queries, base = pseudo_labels.camera_penalised(embs, cameras, 0.3)
    rank, distances = pseudo_labels.nearest_neighbours(queries, 7, base)
    dist = ((embs[:, None] - embs[None]) ** 2).sum(-1) + 0.3 * (
        cameras[:, None] == cameras[None]) * (1 - np.eye(36))
    expected = np.argsort(dist, axis=1, kind='stable')[:, :7]
    assert (rank == expected).all()
    np.testing.assert_allclose(distances, np.take_along_axis(dist, expected, 1), atol=1e-5)
    v = pseudo_labels.encodings(queries, rank, 6, 3, base)
    np.testing.assert_allclose(v.toarray(), dense_encodings(embs.astype(np.float64), 6, 3,
                                                            cameras, 0.3), atol=1e-5)


def test_a_camera_penalty_joins_a_person_across_cameras():
    # Each camera shifts the crops it sees about as far as people differ:
    # without the penalty most crops cluster with their camera, with it by person.
    rng = np.random.default_rng(4)
    people, shift = rng.normal(size=(10, 16)), 0.7 * rng.normal(size=(2, 16))
    ids, cameras = np.repeat(np.arange(10), 8), np.tile(np.repeat([0, 1], 4), 10)
    embs = pseudo_labels.normalized(people[ids] + shift[cameras] +
                                    0.2 * rng.normal(size=(80, 16)))
    scores = {}
    for penalty in (0.0, 0.5):
        labels = pseudo_labels.cluster(pseudo_labels.jaccard_graph(
            embs, 7, 1, cameras=cameras, camera_penalty=penalty), 0.5, 3)
        scores[penalty] = pseudo_labels.pairwise_scores(labels, ids)
    assert scores[0.0]['recall'] < 0.5 < 0.6 < scores[0.5]['recall'], scores
    assert scores[0.5]['precision'] > scores[0.0]['precision'], scores


def test_well_separated_identities_become_their_clusters_and_a_stray_an_outlier():
    rng = np.random.default_rng(3)
    embs, ids = separated(rng)
    embs = np.concatenate([embs, 10 * rng.normal(size=(1, embs.shape[1]))]).astype(np.float32)
    # Without query expansion, which would blend the stray's encoding with
    # its nearest identity's.
    labels = pseudo_labels.cluster(pseudo_labels.jaccard_graph(embs, k1=10, k2=1, below=0.6))
    assert labels[-1] == -1
    scores = pseudo_labels.pairwise_scores(labels[:-1], ids)
    assert scores == {'precision': 1.0, 'recall': 1.0, 'nmi': pytest.approx(1.0)}
    # Numbered by first appearance.
    assert list(labels[:-1]) == list(ids)


def test_too_strict_a_clustering_leaves_everything_out():
    rng = np.random.default_rng(4)
    embs, _ = separated(rng, identities=4, per_identity=3)
    labels = pseudo_labels.cluster(pseudo_labels.jaccard_graph(embs, k1=4, k2=1),
                                   min_samples=10)
    assert (labels == -1).all()


def test_pairwise_scores_by_hand():
    # Clusters {0, 1, 2} and {3, 4}, outlier 5; identities a a b b b b.
    labels = np.array([0, 0, 0, 1, 1, -1])
    identities = np.array(['a', 'a', 'b', 'b', 'b', 'b'])
    scores = pseudo_labels.pairwise_scores(labels, identities)
    # Pairs within clusters: 3 + 1; of one identity: (0,1) and (3,4). Pairs of
    # one identity: 1 (a) + 6 (b).
    assert scores['precision'] == pytest.approx(2 / 4)
    assert scores['recall'] == pytest.approx(2 / 7)
    assert 0 < scores['nmi'] < 1
    # Outliers count as clusters of their own, which share no pair.
    alone = pseudo_labels.pairwise_scores(np.full(3, -1), ['a', 'a', 'b'])
    assert alone['precision'] == alone['recall'] == 0.0 and alone['nmi'] < 1


def test_tracks_link_their_crops_and_keep_simultaneous_people_apart():
    # crop:       0  1  2   3  4   5   6   7   8  9  10  11
    labels = [0, 0, -1, 0, 1, -1, -1, 1, 0, 0, 0, 0]
    cameras = ['c1'] * 8 + ['c2'] * 2 + ['c1'] * 2
    tracks = [1, 1, 1, 2, 2, 3, 3, None, 1, 1, 4, 4]
    frames = [1, 2, 3, 2, 3, 10, 11, 5, 2, 3, 20, 21]
    constrained = pseudo_labels.constrain_by_tracks(labels, tracks, cameras, frames)
    # Track c1/1 takes its crops' label, outlier included. Track c1/2 (a tie,
    # so label 0) overlaps c1/1 in time in camera c1: it becomes a person of
    # its own. c1/3, all outliers, is one too. The untracked crop keeps its
    # label; c2/1 (another camera) and c1/4 (later) may share c1/1's.
    assert list(constrained) == [0, 0, 0, 1, 1, 2, 2, 3, 0, 0, 0, 0]
    # Without tracks, nothing changes but the numbering.
    assert list(pseudo_labels.constrain_by_tracks([3, -1, 3], [None] * 3, ['c'] * 3,
                                                  [1, 2, 3])) == [0, -1, 0]


def test_random_footage_always_obeys_both_constraints():
    rng = np.random.default_rng(5)
    n = 400
    cameras = rng.choice(['a', 'b', 'c'], n)
    tracks = rng.integers(0, 40, n)
    frames = rng.integers(0, 300, n)
    labels = rng.integers(-1, 8, n)
    constrained = pseudo_labels.constrain_by_tracks(labels, tracks, cameras, frames)
    spans = {}
    for camera, track in set(zip(cameras, tracks)):
        crops = (cameras == camera) & (tracks == track)
        assert len(set(constrained[crops])) == 1 and constrained[crops][0] >= 0
        spans[camera, track] = (frames[crops].min(), frames[crops].max(),
                                constrained[crops][0])
    for (camera, track), (start, end, label) in spans.items():
        for (other_camera, other), (other_start, other_end, other_label) in spans.items():
            if camera == other_camera and track != other and label == other_label:
                assert end < other_start or other_end < start
