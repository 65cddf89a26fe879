"""Retrieval metrics of a ReID embedding under the Market-1501 protocol, NumPy only.

Distances between embeddings, the rank of every true match, average precision
(scikit-learn's and the Market-1501 MATLAB code's), the CMC curve, and
`evaluate()`, which combines them over a query and a gallery set. Vectorised
over batches of queries: distances come from one matrix product per batch, and
the rank of every true match is found with one sort per batch and a binary
search, so Market-1501 scale takes about a second on a laptop.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np

# The metrics of loss.cdist, computed here with NumPy alone.
METRICS = ('euclidean', 'sqeuclidean', 'cityblock', 'cosine')


def unit_rows(x):
    """The rows of `x` (n, D) scaled to length 1; zero rows stay zero, as in `loss.cdist`."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def pairwise_distances(a, b, metric):
    """All distances between the rows of `a` (n, D) and `b` (m, D): (n, m) float32.

    Non-negative by construction (negative zero included), so that the bit
    patterns of the results sort like the values.
    """
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    if metric in ('euclidean', 'sqeuclidean'):
        d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * (a @ b.T)
        np.maximum(d, 0, out=d)
        if metric == 'euclidean':
            np.sqrt(d + 1e-12, out=d)
    elif metric == 'cosine':
        d = 1 - unit_rows(a) @ unit_rows(b).T
        np.maximum(d, 0, out=d)
    elif metric == 'cityblock':
        d = np.empty((len(a), len(b)), np.float32)
        for start in range(0, len(b), 512):
            block = b[start:start + 512]
            d[:, start:start + 512] = np.abs(a[:, None] - block[None]).sum(-1)
    else:
        raise NotImplementedError('Unknown metric `{}`.'.format(metric))
    d += np.float32(0)  # Turns -0.0 into +0.0.
    return d


def average_query_expansion(query_embs, gallery_embs, k, alpha=3.0, batch_size=256):
    """Average query expansion as fast-reid does it (Radenović et al. 2018):
    each query becomes the weighted mean of itself (weight 1) and its `k`
    nearest gallery embeddings by cosine similarity s, weighted by s^alpha.

    Unlike fast-reid, which expands the gallery too, the gallery stays as it
    is, so expanded queries are compared with the embeddings embed.py wrote.

    Args:
        query_embs: (Q, D) embeddings.
        gallery_embs: (G, D) embeddings.
        k (int): Neighbours per query, at most G.
        alpha (float): The exponent of the weights.

    Returns:
        (Q, D) float32 expanded query embeddings.
    """
    query_embs = np.asarray(query_embs, np.float32)
    gallery_embs = np.asarray(gallery_embs, np.float32)
    unit_gallery = unit_rows(gallery_embs)
    expanded = np.empty_like(query_embs)
    for start in range(0, len(query_embs), batch_size):
        query = query_embs[start:start + batch_size]
        similarity = unit_rows(query) @ unit_gallery.T
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        weights = np.power(np.take_along_axis(similarity, nearest, axis=1), alpha)
        total = query + np.einsum('bk,bkd->bd', weights, gallery_embs[nearest])
        expanded[start:start + batch_size] = total / (1 + weights.sum(axis=1, keepdims=True))
    return expanded


def metric_distances(query_embs, gallery_embs, metric):
    """`distances(query_indices) -> (b, G)`: the `metric` distances of those
    queries to the whole gallery, as `evaluate` takes them."""
    def distances(query_indices):
        return pairwise_distances(query_embs[query_indices], gallery_embs, metric)
    return distances


def cmc_at(cmc, k):
    """The top-k matching rate, k counted from 1; galleries shorter than k give
    their last value."""
    return cmc[min(k, len(cmc)) - 1]


def _row_keys(d, rows):
    """Order-preserving int64 keys of non-negative float32 values `d`, grouped by
    `rows`: sorting the keys sorts by row, then value."""
    return (rows.astype(np.int64) << 32) | d.view(np.int32).astype(np.int64)


def batch_ranks(d, matches):
    """Ranks of the true matches of each query among its gallery.

    Args:
        d: (b, G) float32 distances, `inf` where excluded.
        matches: (b, G) bool, true matches that are not excluded.

    Returns:
        (rows, cols, n_less, n_le, rank): for every true match, ordered by
        row, then distance, then gallery index, its query row and gallery
        column, the number of gallery entries strictly closer, the number at
        most as close, and its position in a stable sort of the row.
    """
    sorted_d = np.sort(d, axis=1)
    rows, cols = np.nonzero(matches)
    if not len(rows):
        empty = np.zeros(0, np.int64)
        return rows, cols, empty, empty, empty
    dp = d[rows, cols]
    order = np.lexsort((cols, dp, rows))
    rows, cols, dp = rows[order], cols[order], dp[order]
    n_less = np.empty(len(rows), np.int64)
    n_le = np.empty(len(rows), np.int64)
    bounds = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1], True])
    for start, end in zip(bounds[:-1], bounds[1:]):
        row = sorted_d[rows[start]]
        n_less[start:end] = np.searchsorted(row, dp[start:end], 'left')
        n_le[start:end] = np.searchsorted(row, dp[start:end], 'right')
    rank = n_less.copy()
    for i in np.flatnonzero(n_le - n_less > 1):
        # Exact ties: a stable sort keeps gallery order among equal distances.
        rank[i] += np.count_nonzero(d[rows[i], :cols[i]] == dp[i])
    return rows, cols, n_less, n_le, rank


def batch_average_precision(d, matches, use_market_ap):
    """Average precision and first-hit rank of each query in a batch.

    Args:
        d: (b, G) float32 distances, `inf` where excluded.
        matches: (b, G) bool, true matches that are not excluded.
        use_market_ap (bool): The Market-1501 AP instead of scikit-learn's.

    Returns:
        (rows, aps, first, inps): the batch rows that have a true match, their
        average precision, the rank of their first true match and their
        inverse negative penalty (Ye et al., TPAMI 2021: the number of true
        matches over the rank, counted from 1, of the hardest one).
    """
    rows, cols, n_less, n_le, rank = batch_ranks(d, matches)
    if len(rows) == 0:
        return rows, np.zeros(0), rows, np.zeros(0)
    # Matches come ordered by query, then distance, then gallery index, which
    # is also the order of their stable ranks.
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    counts = np.diff(np.r_[starts, len(rows)])
    first_of_row = np.repeat(starts, counts)
    if use_market_ap:
        # The Market-1501 MATLAB code: the trapezoid rule over a stable ranking.
        j = np.arange(len(rows)) - first_of_row + 1
        precision = j / (rank + 1)
        previous = np.where(rank > 0, (j - 1) / np.maximum(rank, 1), 1.0)
        terms = (precision + previous) / 2
    else:
        # scikit-learn: the precision at each distinct distance threshold, so
        # tied matches all count at the threshold that includes them all.
        keys = _row_keys(d[rows, cols], rows)
        terms = (np.searchsorted(keys, keys, 'right') - first_of_row) / n_le
    return (rows[starts], np.add.reduceat(terms, starts) / counts,
            np.minimum.reduceat(rank, starts), counts / (np.maximum.reduceat(rank, starts) + 1))


def evaluate(query_pids, query_fids, gallery_pids, distances, excluder, *, use_market_ap=False,
             batch_size=256, progress=None):
    """Average precision of every query, the CMC curve and mINP.

    Args:
        query_pids (Q,), query_fids (Q,), gallery_pids (G,): the identities
            and the query file names (which name the skipped queries).
        distances: `distances(query_indices (b,)) -> (b, G)` float distances,
            such as `metric_distances(query_embs, gallery_embs, metric)` or
            `rerank.reranker(...)`.
        excluder: `excluder(query_indices (b,)) -> (b, G)` bool, True for the
            gallery entries the protocol ignores for those queries.
        use_market_ap: Market-1501's trapezoidal AP instead of scikit-learn's.
        batch_size: queries per batch. Batches are processed two at a time,
            one per thread: NumPy's sort releases the GIL, so both cores of a
            laptop work.
        progress: called with (done, total) queries after each batch.

    Returns:
        A dict with `mAP`, `mINP`, `CMC` (G,) divided by the number of
        queries as the original, `aps` and `inps` (one per query with a valid
        match) and `skipped` (the file names of queries without any).
    """
    return _evaluate(query_pids, query_fids, gallery_pids, distances, excluder, use_market_ap,
                     batch_size, progress, pairs=False)[0]


def evaluate_with_pairs(query_pids, query_fids, gallery_pids, distances, excluder, *,
                        use_market_ap=False, batch_size=256, progress=None):
    """`evaluate`, and the distances of the pairs that `verification` needs.

    Returns:
        (figures, positive, negative): `evaluate`'s dict; the float32
        distances of all query–gallery pairs of the same identity that the
        excluder keeps; and a (Q·G,) float32 array with the distances of those
        of different identities and `inf` in the places of all other pairs
        (filled in place, which spares a copy of 53 million distances at
        Market-1501 scale).
    """
    return _evaluate(query_pids, query_fids, gallery_pids, distances, excluder, use_market_ap,
                     batch_size, progress, pairs=True)


def _evaluate(query_pids, query_fids, gallery_pids, distances, excluder, use_market_ap,
              batch_size, progress, pairs):
    """`evaluate` and `evaluate_with_pairs`: (figures, positive, negative),
    the last two None without `pairs`."""
    _, codes = np.unique(np.concatenate([query_pids, gallery_pids]), return_inverse=True)
    q_codes, g_codes = codes[:len(query_pids)], codes[len(query_pids):]
    negative = np.empty((len(query_pids), len(gallery_pids)), np.float32) if pairs else None

    def run_batch(start):
        idx = np.arange(start, min(start + batch_size, len(query_pids)))
        d = distances(idx)
        mask = excluder(idx)
        np.putmask(d, mask, np.inf)
        same = g_codes[None] == q_codes[idx, None]
        matches = same & ~mask
        rows, aps, first, inps = batch_average_precision(d, matches, use_market_ap)
        positive = None
        if pairs:
            positive = d[matches].astype(np.float32)
            negative[idx[0]:idx[-1] + 1] = d
            np.putmask(negative[idx[0]:idx[-1] + 1], same, np.inf)
        return idx[rows], aps, first, inps, positive

    aps = np.full(len(query_pids), np.nan)
    inps = np.full(len(query_pids), np.nan)
    first_hits = np.zeros(len(gallery_pids) + 1, np.int64)
    positive = []
    starts = range(0, len(query_pids), batch_size)
    with ThreadPoolExecutor(2) as pool:
        for start, (queries, batch_aps, first, batch_inps, batch_positive) in zip(
                starts, pool.map(run_batch, starts)):
            aps[queries], inps[queries] = batch_aps, batch_inps
            np.add.at(first_hits, first, 1)
            positive.append(batch_positive)
            if progress is not None:
                progress(min(start + batch_size, len(query_pids)), len(query_pids))

    valid = ~np.isnan(aps)
    cmc = np.cumsum(first_hits)[:len(gallery_pids)] / len(query_pids)
    figures = {'mAP': float(np.mean(aps[valid])) if valid.any() else 0.0,
               'mINP': float(np.mean(inps[valid])) if valid.any() else 0.0, 'CMC': cmc.tolist(),
               'aps': aps[valid].tolist(), 'inps': inps[valid].tolist(),
               'skipped': [str(f) for f in np.asarray(query_fids)[~valid]]}
    if not pairs:
        return figures, None, None
    return (figures, np.concatenate(positive or [np.zeros(0, np.float32)]),
            negative.reshape(-1))


# The false-positive rates of the verification figures, as keys of the JSON.
FALSE_POSITIVE_RATES = ('0.0001', '0.001', '0.01', '0.1')


def _accepted_below(values, limits):
    """How many of the sorted `values` lie strictly below each of `limits`."""
    return np.searchsorted(values, limits, 'left')


def _equal_error_rate(pos, neg, n, ties):
    """The equal error rate of `verification`, from the sorted positive
    distances `pos` (P,) and the smallest sorted negative distances `neg`
    (L,) of `n` (the largest of them has `ties` more beyond `neg`)."""
    largest = neg[-1]

    def rates_at(thresholds):
        """False-positive and false-negative rates at thresholds ≤ `largest`."""
        accepted = np.searchsorted(neg, thresholds, 'right') + np.where(
            thresholds >= largest, ties, 0)
        return accepted / n, 1 - np.searchsorted(pos, thresholds, 'right') / len(pos)

    # FPR − FNR grows with the threshold and is not negative at `largest`:
    # find where it crosses zero among the negatives by bisection, and look at
    # every positive distance up to there (one beyond is strictly farther).
    low, high = 0, len(neg) - 1
    while low < high:
        middle = (low + high) // 2
        fpr, fnr = rates_at(neg[middle])
        low, high = (middle + 1, high) if fpr < fnr else (low, middle)
    candidates = np.concatenate([[-np.inf], pos[pos <= largest], neg[max(low - 1, 0):low + 1]])
    fpr, fnr = rates_at(candidates)
    best = np.argmin(np.abs(fpr - fnr))
    return float((fpr[best] + fnr[best]) / 2)


def verification(positive, negative, rates=FALSE_POSITIVE_RATES, curve_points=0):
    """Verification figures of pair distances: a pair counts as the same
    identity when its distance is at most the threshold.

    For each false-positive rate r, the highest true-positive rate (the share
    of same-identity pairs accepted) whose false-positive rate (the share of
    different-identity pairs accepted) does not exceed r, and the threshold
    that gives it: the largest pair distance below the (⌊r·N⌋+1)-th smallest
    negative distance (None when no pair lies below it). The equal error rate
    is where the false-positive and false-negative rates meet (their mean at
    the threshold where they are closest).

    Args:
        positive: (P,) distances of same-identity pairs.
        negative: (M,) distances of different-identity pairs, where `inf`
            marks a place that holds no pair; reordered in place.
        rates: false-positive rates, as strings (the JSON keys).
        curve_points (int): when positive, also return the ROC curve at this
            many false-positive rates spaced logarithmically from 1/N to 1.

    Returns:
        A dict {'tpr_at_fpr': {rate: tpr}, 'eer': float, 'threshold_at_fpr':
        {rate: threshold or None}} (and 'curve': {'fpr': [...], 'tpr': [...]}),
        or None when there are no pairs of either kind.
    """
    pos = np.sort(positive)
    n = int(np.count_nonzero(negative < np.inf))
    if not len(pos) or not n:
        return None

    def allowed(rate):
        """How many negatives a false-positive rate lets through."""
        return int(np.floor(float(rate) * n + 1e-9))

    # At Market-1501 scale the negatives are 53 million distances. The rates
    # need only the smallest ones in order (the largest rate's share), and so
    # does the equal error rate when the rates cross among them: select those
    # (about four times quicker than sorting all) and sort the rest only when
    # the crossing lies beyond, or for the curve.
    length = n if curve_points else min(n, max(map(allowed, rates)) + 1)
    negative.partition(length - 1)
    negative[:length].sort()
    largest = negative[length - 1]
    ties = np.count_nonzero(negative[length:] == largest)
    if length < n and (length + ties) / n < 1 - np.searchsorted(pos, largest, 'right') / len(pos):
        negative[length:].sort()
        length, ties = n, 0
    neg = negative[:length]
    largest = neg[-1]

    def tpr_and_threshold(rate):
        accept = allowed(rate)
        if accept >= n:
            return 1.0, float(max(pos[-1], largest))
        limit = neg[accept]
        below_pos = _accepted_below(pos, limit)
        below_neg = _accepted_below(neg, limit)
        candidates = ([pos[below_pos - 1]] if below_pos else []) + (
            [neg[below_neg - 1]] if below_neg else [])
        return below_pos / len(pos), float(max(candidates)) if candidates else None

    result = {'tpr_at_fpr': {}, 'threshold_at_fpr': {}}
    for rate in rates:
        result['tpr_at_fpr'][rate], result['threshold_at_fpr'][rate] = tpr_and_threshold(rate)

    result['eer'] = _equal_error_rate(pos, neg, n, ties)
    if curve_points:
        fprs = np.logspace(np.log10(1 / n), 0, curve_points)
        result['curve'] = {'fpr': fprs.tolist(),
                           'tpr': [tpr_and_threshold(f)[0] for f in fprs]}
    return result
