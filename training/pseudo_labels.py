"""Pseudo-identities for unlabelled crops: k-reciprocal Jaccard distances over
a nearest-neighbour graph, clustered by DBSCAN (issue 46's building block).

The clustering baselines of unsupervised re-id (SpCL, Cluster Contrast)
embed the unlabelled training crops, measure the Jaccard distance of their
k-reciprocal encodings (Zhong et al., as `evaluation/rerank.py` does for
evaluation) and cluster those with DBSCAN, leaving outliers out. Their code
holds the (N, N) distances densely, which needs 40 GB at 100,000 crops. The
distance is below 1 only between crops whose encodings share a neighbour,
however, so everything here is sparse:

- each crop's k1 + 1 nearest neighbours come from faiss (exactly up to
  `EXACT_LIMIT` crops, through an inverted-file index beyond);
- the encodings V are a sparse (N, N) matrix with a few dozen non-zeros a
  row, weighted by the softmax of the negative squared distances over each
  crop's expanded k-reciprocal set and averaged over its k2 nearest (local
  query expansion), as SpCL's `compute_jaccard_distance` does;
- the Jaccard distances are measured between each crop and its k1 nearest
  neighbours (a k-nearest-neighbour graph, as the distance of two crops that
  are no near neighbours either way is close to 1), a block of pairs at a
  time, and DBSCAN reads them as a sparse precomputed graph.

NumPy, SciPy, faiss and scikit-learn; no TensorFlow.
"""

import numpy as np
import scipy.sparse

# Up to this many crops, the neighbours are found exactly: faiss's brute
# force costs N² D, 16 s at 50,000 × 512 and about a minute at 100,000 on
# two cores, and an inverted file that looks at 64 of its 4·√N lists took
# longer there and found fewer of the true neighbours (bench/RESULTS.md).
# Beyond, the inverted file keeps the time from growing with N².
EXACT_LIMIT = 120000
IVF_PROBES = 64


def normalized(embs):
    """(N, D) float32 rows scaled to unit length (zero rows stay zero)."""
    embs = np.asarray(embs, np.float32)
    norms = np.linalg.norm(embs, axis=1, keepdims=True)
    return embs / np.maximum(norms, 1e-12)


def camera_numbers(cameras):
    """(N,) int64 numbers 0..C-1 of the cameras (N,), in their sorted order."""
    return np.unique(np.asarray(cameras, str), return_inverse=True)[1].reshape(-1)


def camera_penalised(embs, cameras, penalty):
    """(queries, base) (N, D + cameras): the unit-length `embs` (N, D) with a
    one-hot of each crop's camera appended, scaled by -penalty / 2 in the
    queries, so that 2 - 2 × a query's inner product with a base row is the
    squared distance of the two crops plus `penalty` when one camera saw
    both. Searched by `nearest_neighbours`, a crop's neighbours then include
    more crops of other cameras, where the same person looks least alike."""
    camera = camera_numbers(cameras)
    onehot = np.eye(camera.max(initial=0) + 1, dtype=np.float32)[camera]
    return np.hstack([embs, -penalty / 2 * onehot]), np.hstack([embs, onehot])


def nearest_neighbours(embs, k, base=None):
    """Each row's k nearest rows, itself first: ((N, k) int64 indices, (N, k)
    float32 squared Euclidean distances), for unit-length `embs` (N, D); or,
    with `base` (N, D), the rows of `base` of the largest inner products with
    the queries `embs`, at the distances 2 - 2 × inner product
    (`camera_penalised`)."""
    import faiss
    n, dim = embs.shape
    k = min(k, n)
    metric = faiss.METRIC_L2 if base is None else faiss.METRIC_INNER_PRODUCT
    base = embs if base is None else base
    if n <= EXACT_LIMIT:
        index = faiss.IndexFlat(dim, metric)
    else:
        lists = int(4 * np.sqrt(n))
        index = faiss.IndexIVFFlat(faiss.IndexFlat(dim, metric), dim, lists, metric)
        # faiss trains its k-means on at most 256 points a list anyway.
        sample = np.random.default_rng(0).choice(n, min(n, 64 * lists), replace=False)
        index.train(base[np.sort(sample)])
        index.nprobe = IVF_PROBES
    index.add(base)
    distances, indices = index.search(embs, k)
    if metric == faiss.METRIC_INNER_PRODUCT:
        distances = 2 - 2 * distances
    # A crop whose nearest is a duplicate of it may list the duplicate first;
    # the crop itself goes first so that rank 0 is always the crop.
    indices, distances = _self_first(indices, distances)
    return indices, np.maximum(distances, 0)


def _self_first(indices, distances):
    """Moves each row's own index to its front (or puts it there when the
    search missed it, at distance 0)."""
    rows = np.arange(len(indices))
    own = indices == rows[:, None]
    position = np.where(own.any(axis=1), own.argmax(axis=1), indices.shape[1] - 1)
    for array, own_value in ((indices, rows), (distances, np.zeros(len(rows), np.float32))):
        keep = np.ones(array.shape, bool)
        keep[rows, position] = False
        rest = array[keep].reshape(len(rows), -1)
        array[:] = np.concatenate([own_value[:, None].astype(array.dtype), rest], axis=1)
    return indices, distances


def _reciprocal(rank, i, k):
    """The k-reciprocal neighbours of row i: those of its k + 1 nearest that
    have i among their own k + 1 nearest."""
    forward = rank[i, :k + 1]
    return forward[(rank[forward, :k + 1] == i).any(axis=1)]


def encodings(embs, rank, k1, k2, base=None):
    """The k-reciprocal encodings V: (N, N) sparse float32 CSR, rows summing to 1.

    Args:
        embs: (N, D) unit-length embeddings.
        rank: (N, k1 + 1) nearest neighbours, each row's own index first.
        k1: the size of the k-reciprocal sets; k2: the neighbours averaged
            in the local query expansion (1 for none).
        base: with `embs` as queries, what `rank` was searched in
            (`camera_penalised`), whose distances then weigh the encodings.
    """
    n = len(embs)
    base = embs if base is None else base
    half = int(round(k1 / 2))
    rows, cols, values = [], [], []
    for i in range(n):
        members = _reciprocal(rank, i, k1)
        expanded = [members]
        for candidate in members:
            near = _reciprocal(rank, candidate, half)
            if len(np.intersect1d(near, members)) > 2 / 3 * len(near):
                expanded.append(near)
        members = np.unique(np.concatenate(expanded))
        weights = np.exp(-np.where(members == i, 0, 2 - 2 * base[members] @ embs[i]))
        rows.append(np.full(len(members), i))
        cols.append(members)
        values.append(weights / weights.sum())
    v = scipy.sparse.csr_matrix((np.concatenate(values).astype(np.float32),
                                 (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    # The expansion averages at most the neighbours that `rank` holds.
    k2 = min(k2, rank.shape[1])
    if k2 > 1:
        expansion = scipy.sparse.csr_matrix(
            (np.full(n * k2, 1 / k2, np.float32), (np.repeat(np.arange(n), k2),
                                                   rank[:, :k2].reshape(-1))), shape=(n, n))
        v = (expansion @ v).tocsr()
    return v


def jaccard_distances(v, rank, below=1.0, block=65536):
    """The Jaccard distances 1 - Σ min(V_i, V_j) / Σ max(V_i, V_j) between
    each row of V and its nearest neighbours, kept where they are below
    `below`: (N, N) sparse float32 CSR, symmetric.

    Args:
        v: (N, N) sparse encodings whose rows sum to 1 (`encodings`).
        rank: (N, k) nearest neighbours, each row's own index first; the
            pairs (i, rank[i, j]) are the graph measured. Crops that are not
            near neighbours either way share too little of their encodings
            for any eps that clusters.
        below: pairs this far apart or farther are left out, as DBSCAN with
            an eps below it never uses them; so the graph holds at most k
            pairs a row.
        block: pairs measured at once (their rows of V are gathered).

    Each row keeps its own entry, a stored 0: DBSCAN counts stored zeros
    (a crop and itself, or two identical crops) as neighbours.
    """
    v = v.tocsr()
    n, k = rank.shape
    first = np.repeat(np.arange(n), k - 1)
    second = rank[:, 1:].reshape(-1)
    pairs = np.unique(np.stack([np.minimum(first, second), np.maximum(first, second)]), axis=1)
    pairs = pairs[:, pairs[0] != pairs[1]]
    shared = np.empty(pairs.shape[1], np.float32)
    for start in range(0, pairs.shape[1], block):
        i, j = pairs[:, start:start + block]
        shared[start:start + block] = np.asarray(v[i].minimum(v[j]).sum(axis=1)).ravel()
    # Rows sum to 1, so Σ max = 2 - Σ min.
    distance = (1 - shared / (2 - shared)).clip(0, 1)
    keep = distance < below
    rows = np.concatenate([pairs[0, keep], pairs[1, keep], np.arange(n)])
    cols = np.concatenate([pairs[1, keep], pairs[0, keep], np.arange(n)])
    values = np.concatenate([distance[keep], distance[keep], np.zeros(n, np.float32)])
    # Built sorted by row, so that no two entries meet and nothing is summed.
    return scipy.sparse.csr_matrix((values, (rows, cols)), shape=(n, n))


def jaccard_graph(embs, k1=30, k2=6, below=1.0, cameras=None, camera_penalty=0.0):
    """`jaccard_distances` of the encodings of `embs` (N, D) between each crop
    and its k1 nearest: (N, N) sparse. With `cameras` (N,) and a
    `camera_penalty`, crops of one camera are that much farther apart
    (`camera_penalised`)."""
    embs, base = normalized(embs), None
    if cameras is not None and camera_penalty:
        embs, base = camera_penalised(embs, cameras, camera_penalty)
    rank, _ = nearest_neighbours(embs, k1 + 1, base)
    k1 = rank.shape[1] - 1
    return jaccard_distances(encodings(embs, rank, k1, k2, base), rank, below)


def cluster(distances, eps=0.6, min_samples=4):
    """DBSCAN over sparse precomputed distances (N, N): (N,) int64 labels
    0..C-1 numbered by first appearance, -1 for the outliers."""
    from sklearn.cluster import DBSCAN
    return renumber(DBSCAN(eps=eps, min_samples=min_samples,
                           metric='precomputed').fit_predict(distances))


def constrain_by_tracks(labels, tracks, cameras, frames):
    """Pseudo-labels that obey camera footage's free supervision: every crop
    of one track is one person (must-link), and two tracks seen at the same
    time by one camera are two people (cannot-link).

    Each track takes the label most of its clustered crops have (the
    smallest on a tie); a track whose crops were all outliers becomes a
    pseudo-identity of its own. Of tracks that share a label and overlap in
    time in one camera, the one with the most crops keeps it and the others
    become pseudo-identities of their own.

    Args:
        labels: (N,) int pseudo-labels, -1 for outliers (`cluster`).
        tracks: (N,) track ids, unique within a camera; crops of no track
            (None or -1) keep their labels.
        cameras: (N,) the camera of each crop.
        frames: (N,) int frame of each crop.

    Returns:
        (N,) int64 labels, numbered by first appearance, -1 for outliers.
    """
    labels = np.asarray(labels, np.int64).copy()
    keys = [None if track is None or track == -1 else (camera, track)
            for camera, track in zip(cameras, tracks)]
    members = {}
    for index, key in enumerate(keys):
        if key is not None:
            members.setdefault(key, []).append(index)
    fresh = labels.max(initial=-1) + 1
    for key, indices in members.items():
        votes = labels[indices][labels[indices] >= 0]
        if len(votes):
            values, counts = np.unique(votes, return_counts=True)
            labels[indices] = values[np.argmax(counts)]
        else:
            labels[indices], fresh = fresh, fresh + 1
    frames = np.asarray(frames)
    kept = {}  # (label, camera) -> the frame spans of the tracks that keep it
    for key, indices in sorted(members.items(), key=lambda item: (-len(item[1]), str(item[0]))):
        span = frames[indices].min(), frames[indices].max()
        spans = kept.setdefault((labels[indices[0]], key[0]), [])
        if any(span[0] <= other[1] and other[0] <= span[1] for other in spans):
            labels[indices], fresh = fresh, fresh + 1
            kept[(labels[indices[0]], key[0])] = [span]
        else:
            spans.append(span)
    return renumber(labels)


def renumber(labels):
    """(N,) int64 labels numbered 0..C-1 by first appearance, -1 kept."""
    labels = np.asarray(labels)
    found = labels >= 0
    _, first, inverse = np.unique(labels[found], return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    renumbered = np.full(len(labels), -1, np.int64)
    renumbered[found] = order[inverse]
    return renumbered


def pairwise_scores(labels, identities):
    """How pseudo-labels (N,) match true identities (N,), for measuring only:
    pairwise precision and recall (of the pairs in one cluster, how many are
    one identity; of the pairs of one identity, how many share a cluster;
    outliers share no cluster) and the normalised mutual information."""
    from sklearn.metrics import normalized_mutual_info_score
    labels = np.asarray(labels)
    _, identities = np.unique(np.asarray(identities), return_inverse=True)

    def pairs(counts):
        return int((counts * (counts - 1) // 2).sum())

    found = labels >= 0
    joint = np.unique(np.stack([labels[found], identities[found]]), axis=1,
                      return_counts=True)[1] if found.any() else np.zeros(0, np.int64)
    together = pairs(joint)
    clustered = pairs(np.unique(labels[found], return_counts=True)[1])
    same = pairs(np.unique(identities, return_counts=True)[1])
    # Outliers are clusters of their own for the mutual information.
    singletons = np.where(found, labels, labels.max(initial=-1) + 1 + np.arange(len(labels)))
    return {'precision': together / clustered if clustered else 0.0,
            'recall': together / same if same else 0.0,
            'nmi': float(normalized_mutual_info_score(identities, singletons))}
