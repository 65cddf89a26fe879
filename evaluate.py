#!/usr/bin/env python3
"""Evaluate a ReID embedding: mAP and CMC under the Market-1501 protocol.

The command line over `evaluation/metrics.py`: reads the CSVs and the HDF5 embeddings,
optionally re-ranks, evaluates, and writes the results and pictures.
"""

import argparse
import os
import sys

import numpy as np

if __package__ in (None, ''):
    # Run from a checkout (`python evaluate.py`): its folder is the package triplet_reid.
    import checkout
    checkout.register()

from triplet_reid import cli
from triplet_reid.cli import flags
from triplet_reid.storage import files
from triplet_reid.inputs import embeddings_file, tracklets
from triplet_reid import excluders
from triplet_reid.evaluation import metrics
from triplet_reid.cli import progress
from triplet_reid.excluders import EXCLUDER_CHOICES

parser = argparse.ArgumentParser(allow_abbrev=False, description='Evaluate a ReID embedding.')

parser.add_argument(
    '--excluder', required=True, choices=EXCLUDER_CHOICES,
    help='Excluder function to mask certain matches. Especially for multi-'
         'camera datasets, one often excludes pictures of the query person from'
         ' the gallery if it is taken from the same camera. The `diagonal`'
         ' excluder should be used if this is *not* required.')

parser.add_argument(
    '--query_dataset', required=True,
    help='Path to the query dataset csv file: images, or a tracklet CSV (one row a frame, '
         'with a track column), whose tracklets embed.py embeds one a row; evaluate '
         'tracklets with --excluder tracklets.')

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
    '--metric', required=True, choices=metrics.METRICS,
    help='Which metric to use for the distance between embeddings.')

parser.add_argument(
    '--filename',
    help='Optional name of the json file to store the results in: mAP, mINP, the CMC, the '
         'per-query APs and the verification figures (true-positive rates and distance '
         'thresholds at false-positive rates 1e-4 to 1e-1, and the equal error rate, over all '
         'query-gallery pairs the excluder keeps).')

parser.add_argument(
    '--batch_size', default=256, type=flags.positive_int,
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

flags.add_rerank_settings(parser)

parser.add_argument(
    '--camera_regex', default=None,
    help='With `--excluder folders`: the regular expression whose first group, searched in '
         'each file name, is its camera, as given to `data/convert.py folders`; same-camera '
         'matches of the same identity are then ignored.')

parser.add_argument(
    '--aqe', default=0, type=flags.nonnegative_int, metavar='K',
    help='Average query expansion (as fast-reid): replace each query embedding by the weighted '
         'mean of itself and its K nearest gallery embeddings (cosine similarity to the power '
         '--aqe_alpha as weights) before ranking, or before --rerank. 0: off.')

parser.add_argument(
    '--aqe_alpha', default=3.0, type=flags.float_between(0, 100),
    help='The exponent of the --aqe weights (fast-reid: 3).')

parser.add_argument(
    '--plot', metavar='DIR',
    help='Also draw DIR/rankings.png (the top-10 gallery images of some queries), '
         'DIR/cmc.png (the CMC curve) and DIR/roc.png (the verification ROC curve). Needs '
         '--image_root.')

parser.add_argument(
    '--image_root', type=flags.readable_directory,
    help='The folder the CSV paths are relative to; only --plot reads images.')

parser.add_argument(
    '--plot_queries', default=8, type=flags.positive_int,
    help='How many queries --plot shows, spread evenly over the query set.')

parser.add_argument(
    '--html', metavar='DIR',
    help='Also write DIR/index.html, one self-contained page: the figures, the CMC and ROC '
         'pictures, and the ranked galleries of the worst, the best and some random queries '
         'with distances, matches, junk and the threshold at 0.1%% false positives marked. '
         'Needs --image_root.')

parser.add_argument(
    '--html_queries', default=4, type=flags.positive_int,
    help='How many queries --html shows of each kind (worst, best, random).')

parser.add_argument(
    '--quiet', action='store_true', default=False,
    help='No progress bars (they are drawn only on a terminal, and only for work that takes '
         'more than a second).')


def load_embeddings(path, csv_fids, csv_path):
    """The `emb` array (N, D) of an HDF5 file written by embed.py, checked
    against the N rows of its CSV, and its origin (see `embeddings_file`)."""
    stored = embeddings_file.read(path)
    embs, fids, origin = stored.emb, stored.fids, stored.origin
    if embs.ndim != 2:
        raise cli.UserError('the `emb` of `{}` has the shape {}, not (images, dimensions) as '
                            'embed.py writes it.'.format(path, embs.shape))
    if len(embs) != len(csv_fids):
        raise cli.UserError('`{}` holds {} embeddings but `{}` lists {} images; embed that '
                            'CSV again.'.format(path, len(embs), csv_path, len(csv_fids)))
    if fids is not None:
        differ = np.flatnonzero(np.asarray(fids, dtype=object) != np.asarray(csv_fids, object))
        if len(differ):
            row = differ[0]
            raise cli.UserError(
                '`{}` embeds other images than `{}` lists, in {} of its {} rows: row {} is `{}` '
                'there and `{}` in the CSV. Embed that CSV again.'.format(
                    path, csv_path, len(differ), len(fids), row + 1, fids[row], csv_fids[row]))
    embeddings_file.check_finite(
        embs, 'the embeddings `{}`'.format(path), 'an evaluation of them would mean nothing; '
        'embed `{}` again with a checkpoint from before training diverged'.format(csv_path))
    return embs, origin


def check_arguments(args):
    """Refuses outputs that cannot be written or would replace an input, and
    impossible re-ranking sizes, before any work."""
    for flag in ('plot', 'html'):
        if getattr(args, flag) is not None and args.image_root is None:
            parser.error('--{} draws the images, so it needs --image_root.'.format(flag))
    outputs = [] if args.filename is None else [('--filename', args.filename, 'json')]
    if args.plot is not None:
        outputs += files.files_of_folder_output(
            args.plot, '--plot', ['rankings.png', 'cmc.png', 'roc.png'], 'png')
    if args.html is not None:
        outputs += files.files_of_folder_output(args.html, '--html', ['index.html'], 'html')
    files.check_outputs(outputs, [(flag, getattr(args, flag[2:])) for flag in (
        '--query_dataset', '--query_embeddings', '--gallery_dataset', '--gallery_embeddings')])
    if args.rerank and args.rerank_k2 > args.rerank_k1 + 1:
        parser.error('--rerank_k2 must be at most --rerank_k1 + 1.')


def write_results(args, result, verification):
    """Writes --filename's JSON: the figures, the metric of their distances
    (and so of the verification thresholds), and the re-ranking and query
    expansion settings that made them."""
    summary = {'mAP': result['mAP'], 'mINP': result['mINP'], 'CMC': result['CMC'],
               'aps': result['aps'], 'metric': args.metric,
               'verification': verification and {key: verification[key] for key in (
                   'tpr_at_fpr', 'eer', 'threshold_at_fpr')}}
    if args.rerank:
        summary['rerank'] = {'k1': args.rerank_k1, 'k2': args.rerank_k2,
                             'lambda': args.rerank_lambda}
    if args.aqe:
        summary['aqe'] = {'k': args.aqe, 'alpha': args.aqe_alpha}
    files.write_json(args.filename, summary)


def draw(args, result, verification, query, gallery, excluder, distances):
    """--plot's pictures: rankings, CMC and ROC. `query` and `gallery` are
    (pids, fids) pairs. Matplotlib is imported only here, to keep the plain
    command quick."""
    from triplet_reid.evaluation import visualize
    os.makedirs(args.plot, exist_ok=True)
    valid = ~np.isin(query[1], result['skipped'])
    queries = visualize.pick_queries(valid, args.plot_queries)
    visualize.plot_rankings(os.path.join(args.plot, 'rankings.png'), args.image_root,
                            *query, *gallery, excluder, distances, queries)
    visualize.plot_cmc(os.path.join(args.plot, 'cmc.png'), result['CMC'], result['mAP'],
                       're-ranked' if args.rerank else args.metric)
    if verification:
        visualize.plot_roc(os.path.join(args.plot, 'roc.png'), verification,
                           're-ranked' if args.rerank else args.metric)


def print_figures(result, verification):
    """The figures' lines on stdout."""
    cmc = result['CMC']
    top = [metrics.cmc_at(cmc, k) for k in (1, 2, 5, 10)]
    print('mAP: {:.2%} | top-1: {:.2%} top-2: {:.2%} | top-5: {:.2%} | top-10: {:.2%} | '
          'mINP: {:.2%}'.format(result['mAP'], *top, result['mINP']))
    if verification:
        print('verification: EER {:.2%} | TPR {} at FPR {}'.format(
            verification['eer'], ' '.join('{:.2%}'.format(verification['tpr_at_fpr'][r])
                                          for r in metrics.FALSE_POSITIVE_RATES),
            ' '.join(metrics.FALSE_POSITIVE_RATES)))


def write_html(args, result, verification, query, gallery, excluder, distances):
    """--html's page. `query` and `gallery` are (pids, fids) pairs."""
    from triplet_reid.evaluation import html_report
    cmc = result['CMC']
    figures = [('mAP', '{:.2%}'.format(result['mAP']))] + [
        ('top-{}'.format(k), '{:.2%}'.format(metrics.cmc_at(cmc, k))) for k in (1, 5, 10)] + [
        ('mINP', '{:.2%}'.format(result['mINP'])),
        ('queries', '{} ({} without a match left out)'.format(len(query[0]),
                                                              len(result['skipped'])))]
    if verification:
        figures.append(('EER', '{:.2%}'.format(verification['eer'])))
        for rate in metrics.FALSE_POSITIVE_RATES:
            threshold = verification['threshold_at_fpr'][rate]
            figures.append(('at FPR {}'.format(rate), 'TPR {:.2%}, threshold {}'.format(
                verification['tpr_at_fpr'][rate],
                'none' if threshold is None else '{:.4g}'.format(threshold))))
    label = 're-ranked' if args.rerank else args.metric
    figures.append(('distance', label))
    path = html_report.evaluation_report(args.html, args.image_root, query, gallery, excluder,
                                         distances, result, verification, figures, label,
                                         args.html_queries)
    print('Wrote the report {}.'.format(path), file=sys.stderr)


def load_data(args):
    """The query and the gallery, each (pids, fids, embeddings), checked to
    come from one network and to have the same dimensions."""
    # A tracklet CSV gives its tracklets, as embed.py embeds them.
    query_pids, query_fids = tracklets.labelled_set(args.query_dataset)
    gallery_pids, gallery_fids = tracklets.labelled_set(args.gallery_dataset)
    query_embs, query_origin = load_embeddings(args.query_embeddings, query_fids,
                                               args.query_dataset)
    gallery_embs, gallery_origin = load_embeddings(args.gallery_embeddings, gallery_fids,
                                                   args.gallery_dataset)
    difference = embeddings_file.origin_difference(query_origin, gallery_origin)
    if difference:
        print('WARNING: the query and gallery embeddings come from {}; their distances mean '
              'little. Embed both with one checkpoint.'.format(difference), file=sys.stderr)
    if query_embs.shape[1] != gallery_embs.shape[1]:
        raise cli.UserError('the query embeddings have {} dimensions but the gallery '
                            'embeddings {}.'.format(query_embs.shape[1],
                                                    gallery_embs.shape[1]))
    return (query_pids, query_fids, query_embs), (gallery_pids, gallery_fids, gallery_embs)


def check_neighbours(args, queries, gallery):
    """Refuses --aqe and --rerank neighbourhoods larger than the `queries`
    and `gallery` images hold."""
    if args.aqe > gallery:
        raise cli.UserError('--aqe {} asks for more neighbours than the {} gallery '
                            'images.'.format(args.aqe, gallery))
    total = queries + gallery
    if args.rerank and max(args.rerank_k1 + 1, args.rerank_k2) > total:
        raise cli.UserError('re-ranking looks at the {} nearest of all query and gallery '
                            'images, but there are only {}; lower --rerank_k1 (and '
                            '--rerank_k2).'.format(max(args.rerank_k1 + 1, args.rerank_k2),
                                                   total))


def check_skipped(result, excluder, queries):
    """Refuses an evaluation in which none of the `queries` has a true match,
    and warns about the queries without one."""
    if len(result['skipped']) == queries:
        raise cli.UserError(
            'none of the {} queries has a true match in the gallery that the excluder `{}` '
            'keeps, so there is nothing to evaluate; check that query and gallery share '
            'identities and that the excluder fits the dataset.'.format(queries, excluder))
    if result['skipped']:
        print('WARNING: {} queries have no valid match in the gallery and are excluded from '
              'the mAP, for example {}.'.format(len(result['skipped']),
                                                ', '.join(result['skipped'][:3])),
              file=sys.stderr)


def main(argv=None):
    args = parser.parse_args(argv)
    check_arguments(args)

    # Data.
    (query_pids, query_fids, query_embs), (gallery_pids, gallery_fids, gallery_embs) = \
        load_data(args)
    if args.excluder == 'folders' and args.camera_regex is None:
        print('WARNING: without --camera_regex, the excluder `folders` ignores only each '
              'query\'s own image, as `diagonal` does.', file=sys.stderr)
    excluder = excluders.load(args.excluder, query_fids, gallery_fids, args.camera_regex)
    check_neighbours(args, len(query_fids), len(gallery_fids))
    if args.aqe:
        query_embs = metrics.average_query_expansion(query_embs, gallery_embs, args.aqe,
                                                     args.aqe_alpha)

    # Distances. Re-ranking and the pictures need SciPy and Matplotlib, which
    # are imported only when asked for, to keep the plain command quick.
    if args.rerank:
        from triplet_reid.evaluation import rerank
        with progress.bar('Re-ranking: neighbours', 'image', args.quiet) as report:
            distances = rerank.reranker(query_embs, gallery_embs, args.metric, args.rerank_k1,
                                        args.rerank_k2, args.rerank_lambda, progress=report)
    else:
        distances = metrics.metric_distances(query_embs, gallery_embs, args.metric)

    # Evaluation.
    wanted = args.filename is not None or args.plot is not None or args.html is not None
    # The verification figures need every kept pair's distance (53 million at
    # Market-1501 scale, about 0.7 GB more), so only for the JSON or the plot.
    verification = None
    with progress.bar('Evaluating', 'query', args.quiet) as report:
        options = dict(use_market_ap=args.use_market_ap, batch_size=args.batch_size,
                       progress=report)
        if wanted:
            result, positive, negative = metrics.evaluate_with_pairs(
                query_pids, query_fids, gallery_pids, distances, excluder, **options)
        else:
            result = metrics.evaluate(query_pids, query_fids, gallery_pids, distances, excluder,
                                      **options)
    if wanted:
        verification = metrics.verification(
            positive, negative,
            curve_points=60 if args.plot is not None or args.html is not None else 0)
        del positive, negative
    check_skipped(result, args.excluder, len(query_fids))

    # Outputs.
    if args.filename is not None:
        write_results(args, result, verification)
    if args.plot is not None:
        draw(args, result, verification, (query_pids, query_fids),
             (gallery_pids, gallery_fids), excluder, distances)
    if args.html is not None:
        write_html(args, result, verification, (query_pids, query_fids),
                   (gallery_pids, gallery_fids), excluder, distances)
    print_figures(result, verification)
    return 0


def command():
    """`reid-evaluate`, the command that `pip install .` installs (pyproject.toml)."""
    cli.run(main)


if __name__ == '__main__':
    command()
