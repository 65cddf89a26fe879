#!/usr/bin/env python3
"""Evaluate a ReID embedding: mAP and CMC under the Market-1501 protocol.

Vectorised over batches of queries: distances come from one matrix product
per batch, and the rank of every true match is found with one sort per batch
and a binary search, so Market-1501 scale takes about a second on a laptop.
"""

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib import import_module

import h5py
import numpy as np

import common
from excluders import EXCLUDER_CHOICES

# The metrics of loss.cdist, computed here with NumPy alone.
METRICS = ('euclidean', 'sqeuclidean', 'cityblock')

parser = argparse.ArgumentParser(description='Evaluate a ReID embedding.')

parser.add_argument(
    '--excluder', required=True, choices=EXCLUDER_CHOICES,
    help='Excluder function to mask certain matches. Especially for multi-'
         'camera datasets, one often excludes pictures of the query person from'
         ' the gallery if it is taken from the same camera. The `diagonal`'
         ' excluder should be used if this is *not* required.')

parser.add_argument(
    '--query_dataset', required=True,
    help='Path to the query dataset csv file.')

parser.add_argument(
    '--query_embeddings', required=True,
    help='Path to the h5 file containing the query embeddings.')

parser.add_argument(
    '--gallery_dataset', required=True,
    help='Path to the gallery dataset csv file.')

parser.add_argument(
    '--gallery_embeddings', required=True,
    help='Path to the h5 file containing the gallery embeddings.')

parser.add_argument(
    '--metric', required=True, choices=METRICS,
    help='Which metric to use for the distance between embeddings.')

parser.add_argument(
    '--filename',
    help='Optional name of the json file to store the results in.')

parser.add_argument(
    '--batch_size', default=256, type=common.positive_int,
    help='Number of queries evaluated at once; memory grows with it times the gallery size.')

parser.add_argument(
    '--use_market_ap', action='store_true', default=False,
    help='When this flag is provided, the average precision is computed exactly'
         ' as done by the Market-1501 evaluation script, rather than the '
         'default scikit-learn implementation that gives slightly different '
         'scores.')

parser.add_argument(
    '--rerank', action='store_true', default=False,
    help='Re-rank the gallery with k-reciprocal encoding (Zhong et al., CVPR 2017) before '
         'evaluating. Runs at Market-1501 scale in well under 4 GiB of memory.')

parser.add_argument(
    '--rerank_k1', default=20, type=common.positive_int,
    help='k1 of re-ranking: the size of the k-reciprocal neighbourhoods.')

parser.add_argument(
    '--rerank_k2', default=6, type=common.positive_int,
    help='k2 of re-ranking: the neighbours averaged by local query expansion (1 turns it '
         'off); at most k1 + 1.')

parser.add_argument(
    '--rerank_lambda', default=0.3, type=common.unit_float,
    help='λ of re-ranking: the weight of the original distance against the Jaccard '
         'distance, in [0, 1].')

parser.add_argument(
    '--plot', metavar='DIR',
    help='Also draw DIR/rankings.png (the top-10 gallery images of some queries) and '
         'DIR/cmc.png (the CMC curve). Needs --image_root.')

parser.add_argument(
    '--image_root', type=common.readable_directory,
    help='The folder the CSV paths are relative to; only --plot reads images.')

parser.add_argument(
    '--plot_queries', default=8, type=common.positive_int,
    help='How many queries --plot shows, spread evenly over the query set.')


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
    elif metric == 'cityblock':
        d = np.empty((len(a), len(b)), np.float32)
        for start in range(0, len(b), 512):
            block = b[start:start + 512]
            d[:, start:start + 512] = np.abs(a[:, None] - block[None]).sum(-1)
    else:
        raise NotImplementedError('Unknown metric `{}`.'.format(metric))
    d += np.float32(0)  # Turns -0.0 into +0.0.
    return d


def metric_distances(query_embs, gallery_embs, metric):
    """`distances(query_indices) -> (b, G)`: the `metric` distances of those
    queries to the whole gallery, the function evaluate() uses by default."""
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
        (rows, aps, first): the batch rows that have a true match, their
        average precision and the rank of their first true match.
    """
    rows, cols, n_less, n_le, rank = batch_ranks(d, matches)
    if len(rows) == 0:
        return rows, np.zeros(0), rows
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
            np.minimum.reduceat(rank, starts))


def evaluate(query_pids, query_fids, query_embs, gallery_pids, gallery_fids, gallery_embs,
             excluder, metric='euclidean', batch_size=256, use_market_ap=False, distances=None):
    """Average precision of every query and the CMC curve.

    Batches of `batch_size` queries are processed two at a time, one per
    thread: NumPy's sort releases the GIL, so both cores of a laptop work.
    `distances(query_indices) -> (b, G)` replaces the `metric` distances
    between the embeddings when given (re-ranking does so).

    Returns:
        A dict with `mAP`, `CMC` (G,) divided by the number of queries as the
        original, `aps` (one per query with a valid match) and `skipped` (the
        file names of queries without any).
    """
    _, codes = np.unique(np.concatenate([query_pids, gallery_pids]), return_inverse=True)
    q_codes, g_codes = codes[:len(query_pids)], codes[len(query_pids):]
    if distances is None:
        distances = metric_distances(query_embs, gallery_embs, metric)

    def run_batch(start):
        idx = np.arange(start, min(start + batch_size, len(query_pids)))
        d = distances(idx)
        mask = excluder(idx)
        np.putmask(d, mask, np.inf)
        matches = (g_codes[None] == q_codes[idx, None]) & ~mask
        rows, aps, first = batch_average_precision(d, matches, use_market_ap)
        return idx[rows], aps, first

    aps = np.full(len(query_pids), np.nan)
    first_hits = np.zeros(len(gallery_pids) + 1, np.int64)
    with ThreadPoolExecutor(2) as pool:
        for queries, batch_aps, first in pool.map(
                run_batch, range(0, len(query_pids), batch_size)):
            aps[queries] = batch_aps
            np.add.at(first_hits, first, 1)

    valid = ~np.isnan(aps)
    cmc = np.cumsum(first_hits)[:len(gallery_pids)] / len(query_pids)
    return {'mAP': float(np.mean(aps[valid])) if valid.any() else 0.0, 'CMC': cmc.tolist(),
            'aps': aps[valid].tolist(), 'skipped': [str(f) for f in query_fids[~valid]]}


def load_embeddings(path, expected_rows, csv_path):
    """The `emb` array of an HDF5 file written by embed.py, checked against its CSV."""
    try:
        with h5py.File(path, 'r') as f:
            if 'emb' not in f:
                raise common.UserError('`{}` holds no `emb` dataset; was it written by '
                                       'embed.py?'.format(path))
            embs = np.asarray(f['emb'], np.float32)
    except OSError as e:
        raise common.UserError('cannot read the embeddings `{}`: {}.'.format(path, e))
    if embs.ndim != 2 or len(embs) != expected_rows:
        raise common.UserError('`{}` holds {} embeddings but `{}` lists {} images; embed that '
                               'CSV again.'.format(path, len(embs), csv_path, expected_rows))
    return embs


def main(argv=None):
    args = parser.parse_args(argv)
    if args.plot is not None and args.image_root is None:
        parser.error('--plot draws the images, so it needs --image_root.')
    if args.rerank and args.rerank_k2 > args.rerank_k1 + 1:
        parser.error('--rerank_k2 must be at most --rerank_k1 + 1.')

    # Data.
    query_pids, query_fids = common.load_dataset(args.query_dataset, None)
    gallery_pids, gallery_fids = common.load_dataset(args.gallery_dataset, None)
    query_embs = load_embeddings(args.query_embeddings, len(query_fids), args.query_dataset)
    gallery_embs = load_embeddings(args.gallery_embeddings, len(gallery_fids),
                                   args.gallery_dataset)
    if query_embs.shape[1] != gallery_embs.shape[1]:
        raise common.UserError('the query embeddings have {} dimensions but the gallery '
                               'embeddings {}.'.format(query_embs.shape[1],
                                                       gallery_embs.shape[1]))
    excluder = import_module('excluders.' + args.excluder).excluder(query_fids, gallery_fids)

    # Distances. Re-ranking and the pictures need SciPy and Matplotlib, which
    # are imported only when asked for, to keep the plain command quick.
    if args.rerank:
        import rerank
        distances = rerank.reranker(query_embs, gallery_embs, args.metric, args.rerank_k1,
                                    args.rerank_k2, args.rerank_lambda)
    else:
        distances = metric_distances(query_embs, gallery_embs, args.metric)

    # Evaluation.
    result = evaluate(query_pids, query_fids, query_embs, gallery_pids, gallery_fids,
                      gallery_embs, excluder, args.metric, args.batch_size, args.use_market_ap,
                      distances)
    if result['skipped']:
        print('WARNING: {} queries have no valid match in the gallery and are excluded from '
              'the mAP, for example {}.'.format(len(result['skipped']),
                                                ', '.join(result['skipped'][:3])),
              file=sys.stderr)
    if args.filename is not None:
        summary = {'mAP': result['mAP'], 'CMC': result['CMC'], 'aps': result['aps']}
        if args.rerank:
            summary['rerank'] = {'k1': args.rerank_k1, 'k2': args.rerank_k2,
                                 'lambda': args.rerank_lambda}
        common.write_json(args.filename, summary)
    if args.plot is not None:
        import visualize
        os.makedirs(args.plot, exist_ok=True)
        valid = ~np.isin(query_fids, result['skipped'])
        queries = visualize.pick_queries(valid, args.plot_queries)
        visualize.plot_rankings(os.path.join(args.plot, 'rankings.png'), args.image_root,
                                query_pids, query_fids, gallery_pids, gallery_fids, excluder,
                                distances, queries)
        visualize.plot_cmc(os.path.join(args.plot, 'cmc.png'), result['CMC'], result['mAP'],
                           're-ranked' if args.rerank else args.metric)
    cmc = result['CMC']
    top = [cmc_at(cmc, k) for k in (1, 2, 5, 10)]
    print('mAP: {:.2%} | top-1: {:.2%} top-2: {:.2%} | top-5: {:.2%} | top-10: {:.2%}'.format(
        result['mAP'], *top))
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except common.UserError as e:
        print('error: {}'.format(e), file=sys.stderr)
        sys.exit(1)
