"""k-reciprocal re-ranking (Zhong, Zheng, Cao, Li: "Re-ranking Person
Re-identification with k-reciprocal Encoding", CVPR 2017) in bounded memory.

The authors' code builds dense (N, N) matrices over the N = Q + G query and
gallery images, several of them at once, which needs tens of GiB at
Market-1501 scale (N = 23100). Everything the method uses is sparse or
needed only for the query rows, however:

- the k-reciprocal sets need only each image's k1 + 1 nearest neighbours,
  found block by block;
- the encodings V (and their query expansion) have a few dozen non-zeros
  per row, so they are SciPy sparse matrices;
- the Jaccard distance is needed only between queries and gallery images,
  and is computed a batch of queries at a time from a column index of V.

So the peak memory is that of one block of distances plus the sparse
encodings, a few hundred MiB at Market-1501 scale. Where the paper leaves a
choice open, this follows the authors' code: the original distance is the
squared Euclidean one (for `euclidean`) divided by its row's maximum, the
expansion condition is a strict `>` 2/3, and the half-size neighbourhoods use
round(k1 / 2) + 1 neighbours.

NumPy and SciPy only, like evaluation/metrics.py.
"""

import numpy as np
import scipy.sparse

from triplet_reid.evaluation import metrics


def base_distances(a, b, metric):
    """The original distance d(a_i, b_j) of re-ranking: (n, m) float32.

    The authors' code squares Euclidean distances, so `euclidean` gives the
    squared Euclidean distance here; other metrics are used as they are.
    """
    return metrics.pairwise_distances(a, b, 'sqeuclidean' if metric == 'euclidean' else metric)


def _pair_distances(a, b, metric):
    """base_distances between row-aligned pairs: a, b (n, D) -> (n,)."""
    if metric == 'cosine':
        return np.maximum(1 - (metrics.unit_rows(a) * metrics.unit_rows(b)).sum(1), 0)
    diff = a - b
    if metric == 'cityblock':
        return np.abs(diff).sum(1)
    return (diff * diff).sum(1)


def nearest_neighbours(embs, k, metric, block=512, progress=None):
    """The k nearest images of every image, itself included, and each row's maximum.

    Ties are broken by index, like a stable sort of the full row.

    Args:
        embs: (N, D) float32 embeddings.
        progress: None, or called with (done, N) rows after each block.

    Returns:
        rank: (N, k) int32 indices, nearest first.
        row_max: (N,) float32, the largest base distance of each row.
    """
    n = len(embs)
    rank = np.empty((n, k), np.int32)
    row_max = np.empty(n, np.float32)
    columns = np.arange(n, dtype=np.int64)
    for start in range(0, n, block):
        d = base_distances(embs[start:start + block], embs, metric)
        row_max[start:start + block] = d.max(1)
        # Non-negative float32 bit patterns sort like their values; the low
        # bits add the column, so one partition gives (distance, index) order.
        keys = (d.view(np.int32).astype(np.int64) << 32) | columns
        nearest = np.partition(keys, k - 1, axis=1)[:, :k]
        nearest.sort(axis=1)
        rank[start:start + block] = nearest & 0xFFFFFFFF
        if progress is not None:
            progress(min(start + block, n), n)
    return rank, row_max


def _reciprocal(rank, k):
    """(N, k) bool: whether rank[i, a] has i among its own k nearest."""
    neighbours = rank[:, :k]
    own = np.arange(len(rank))[:, None, None]
    return (rank[neighbours, :k] == own).any(-1)


def encodings(embs, rank, row_max, k1, metric, block=1024):
    """The k-reciprocal encodings V: (N, N) sparse float32, rows summing to 1.

    V[i, j] is proportional to exp(-d(i, j) / row_max[i]) for j in the
    expanded k-reciprocal set R*(i, k1) of the paper (eq. 7-8), zero elsewhere.
    """
    n = len(embs)
    half = int(np.around(k1 / 2)) + 1
    reciprocal = _reciprocal(rank, k1 + 1)          # R(i, k1) as a mask on rank[i, :k1+1]
    half_reciprocal = _reciprocal(rank, half)      # R(c, k1/2) as a mask on rank[c, :half]
    rows, cols = [], []
    for start in range(0, n, block):
        neighbours = rank[start:start + block, :k1 + 1]                 # (b, k1+1)
        in_set = reciprocal[start:start + block]                         # (b, k1+1)
        candidates = rank[neighbours, :half]                             # (b, k1+1, half)
        candidate_set = half_reciprocal[neighbours]                      # (b, k1+1, half)
        # |R(c, k1/2) ∩ R(i, k1)| for every candidate c in R(i, k1).
        shared = (candidates[..., None] == neighbours[:, None, None, :]) & in_set[:, None, None]
        overlap = (shared.any(-1) & candidate_set).sum(-1)
        accept = in_set & (overlap > 2 / 3 * candidate_set.sum(-1))
        take = candidate_set & accept[..., None]
        local = np.arange(start, start + len(neighbours))
        rows += [np.broadcast_to(local[:, None], in_set.shape)[in_set],
                 np.broadcast_to(local[:, None, None], take.shape)[take]]
        cols += [neighbours[in_set], candidates[take]]
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    # Summing duplicates makes each (row, column) pair unique; the values are
    # replaced by the weights below.
    v = scipy.sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, n))
    v.sum_duplicates()
    row_of = np.repeat(np.arange(n), np.diff(v.indptr))
    weights = np.empty(v.nnz, np.float32)
    for start in range(0, v.nnz, 1 << 18):
        r, c = row_of[start:start + (1 << 18)], v.indices[start:start + (1 << 18)]
        weights[start:start + len(r)] = np.exp(
            -_pair_distances(embs[r], embs[c], metric) / np.maximum(row_max[r], 1e-12))
    v.data = weights
    return scipy.sparse.diags(1 / np.asarray(v.sum(1)).ravel()).dot(v).tocsr()


def query_expansion(v, rank, k2):
    """Local query expansion (eq. 11): each row becomes the mean of the rows
    of its k2 nearest images. v (N, N) sparse -> (N, N) sparse."""
    if k2 == 1:
        return v
    n = v.shape[0]
    average = scipy.sparse.csr_matrix(
        (np.full(n * k2, 1 / k2, np.float32), rank[:, :k2].ravel(),
         np.arange(0, n * k2 + 1, k2)), shape=(n, n))
    return average.dot(v).tocsr()


def reranker(query_embs, gallery_embs, metric='euclidean', k1=20, k2=6, lambda_value=0.3,
             max_terms=1 << 22, progress=None):
    """Prepares re-ranking and returns `distances(query_indices) -> (b, G)`.

    The returned function gives the final distances of eq. 12,
    (1 - λ) d_J(p, g) + λ d(p, g), for a batch of queries; metrics.evaluate
    calls it in place of the plain distances. It only reads shared arrays, so
    several threads may call it at once.

    Args:
        query_embs, gallery_embs: (Q, D) and (G, D) embeddings; with
            `gallery_embs` None, the queries are compared with each other
            (G = Q), as associate.py compares tracks.
        metric: One of metrics.METRICS (`euclidean` is squared, see above).
        k1, k2, lambda_value: The paper's parameters.
        max_terms: Bounds the temporary arrays of one chunk of queries
            (about 40 bytes per term).
        progress: None, or called with (done, total) images of the
            preparation's nearest-neighbour search, its costly part.
    """
    if not 1 <= k2 <= k1 + 1:
        raise ValueError('k2 must lie between 1 and k1 + 1, got k1={}, k2={}'.format(k1, k2))
    num_query = len(query_embs)
    # One set compared with itself holds each image once, not twice: a copy
    # of each would be its own nearest neighbour and fill its k-reciprocal set.
    alone = gallery_embs is None
    embs = np.asarray(query_embs, np.float32) if alone else \
        np.concatenate([query_embs, gallery_embs]).astype(np.float32)
    gallery_embs = embs if alone else gallery_embs
    k1 = min(k1, len(embs) - 1)
    rank, row_max = nearest_neighbours(embs, max(k1 + 1, k2), metric, progress=progress)
    v = query_expansion(encodings(embs, rank, row_max, k1, metric), rank, k2)
    queries = v[:num_query]
    # Column j lists the gallery images using image j.
    gallery = (v if alone else v[num_query:]).tocsc()
    num_gallery = len(gallery_embs)

    def overlaps(query_indices):
        """Σ_j min(V[p, j], V[g, j]) over the images j that both use: (b, G)."""
        q = queries[query_indices]
        q_row = np.repeat(np.arange(len(query_indices)), np.diff(q.indptr))
        starts, ends = gallery.indptr[q.indices], gallery.indptr[q.indices + 1]
        lengths = ends - starts
        flat = np.repeat(ends - lengths.cumsum(), lengths) + np.arange(lengths.sum())
        both = np.minimum(np.repeat(q.data, lengths), gallery.data[flat])
        overlap = np.bincount(np.repeat(q_row, lengths) * num_gallery + gallery.indices[flat],
                              weights=both, minlength=len(query_indices) * num_gallery)
        return overlap.reshape(len(query_indices), num_gallery).astype(np.float32)

    # How many (query, gallery, image) triples each query's overlap touches;
    # queries are taken in chunks of at most `max_terms` of them, so that
    # images used by very many others (hubs) cannot blow up the memory.
    entry_rows = np.repeat(np.arange(num_query), np.diff(queries.indptr))
    terms = np.bincount(entry_rows, weights=np.diff(gallery.indptr)[queries.indices],
                        minlength=num_query)

    def distances(query_indices):
        query_indices = np.asarray(query_indices)
        overlap = np.empty((len(query_indices), num_gallery), np.float32)
        cumulative = np.cumsum(terms[query_indices])
        start = 0
        while start < len(query_indices):
            limit = (cumulative[start - 1] if start else 0) + max_terms
            end = max(start + 1, int(np.searchsorted(cumulative, limit, 'right')))
            overlap[start:end] = overlaps(query_indices[start:end])
            start = end
        jaccard = 1 - overlap / (2 - overlap)
        original = base_distances(embs[query_indices], gallery_embs, metric)
        original /= np.maximum(row_max[query_indices, None], 1e-12)
        final = (1 - lambda_value) * jaccard + lambda_value * original
        np.maximum(final, 0, out=final)
        return final + np.float32(0)   # Non-negative, and -0.0 becomes +0.0, for sorting.

    return distances


def reranked_matrix(embs, metric='cosine', k1=20, k2=6, lambda_value=0.3, block=1024):
    """The re-ranked distances of a set of embeddings among themselves,
    made symmetric (the mean of both directions, as re-ranking scales each
    row by its own farthest): (N, N) float32, 4 N² bytes. Small sets
    shrink k1 and k2 to what they hold.

    Args:
        embs: (N, D) embeddings; one or none have no neighbours to re-rank
            by, and their distances are zero.
        metric, k1, k2, lambda_value: as `reranker` takes them.
        block: rows computed at once.
    """
    if len(embs) < 2:
        return np.zeros((len(embs), len(embs)), np.float32)
    k1 = min(k1, len(embs) - 1)
    distances = reranker(embs, None, metric, k1, min(k2, k1 + 1), lambda_value)
    matrix = np.empty((len(embs), len(embs)), np.float32)
    for start in range(0, len(embs), block):
        matrix[start:start + block] = distances(np.arange(start, min(start + block, len(embs))))
    # Both directions averaged a pair of blocks at a time: `matrix += matrix.T`
    # would copy the whole matrix first.
    for start in range(0, len(embs), block):
        for other in range(start, len(embs), block):
            mean = (matrix[start:start + block, other:other + block] +
                    matrix[other:other + block, start:start + block].T) * np.float32(0.5)
            matrix[start:start + block, other:other + block] = mean
            matrix[other:other + block, start:start + block] = mean.T
    return matrix
