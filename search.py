#!/usr/bin/env python3
"""Search a gallery for the images most like some query images.

Embeds the query images with the experiment's own preprocessing, ranks the
gallery embeddings that embed.py wrote (with their file names), and prints
the top-k gallery files of each query with their distances:

    python search.py --experiment_root EXP --gallery EXP/images_embeddings.h5 \\
        --query person.jpg [--top_k 10] [--output results.json] [--plot results.png]

With --index, large galleries are searched through an approximate
nearest-neighbour index that the first such search builds and saves beside
the gallery (see gallery.load_or_build_index). A gallery grows without
rebuilding its index, and shrinks:

    python search.py append --gallery GALLERY.h5 --embeddings NEW_embeddings.h5
    python search.py remove --gallery GALLERY.h5 --pattern '^cam3/'

The mode comes first (`search` when none is given); the earlier spellings
`--append FILE` and `--remove REGEX` without a mode choose those modes.
"""

import argparse
import csv
import io
import json
import sys

if __package__ in (None, ''):
    # Run from a checkout (`python search.py`): its folder is the package triplet_reid.
    import checkout
    checkout.register()

from triplet_reid import cli
from triplet_reid import common
from triplet_reid.storage import files
from triplet_reid.inputs import embeddings_file
from triplet_reid.cli import flags
from triplet_reid.evaluation import metrics
from triplet_reid.cli import progress, startup

MODES = ('search', 'append', 'remove')


def with_mode(argv):
    """`argv` with its mode first. Without one, the earlier spellings keep
    working: `--append FILE` appends, `--remove REGEX` removes, anything
    else searches (argparse then refuses the flags of another mode)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in MODES + ('-h', '--help'):
        return argv
    for mode in ('append', 'remove'):
        if any(arg == '--' + mode or arg.startswith('--' + mode + '=') for arg in argv):
            return [mode] + argv
    return ['search'] + argv


parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split('\n')[0],
                                 epilog='Without a MODE, search.py searches; `--append FILE` '
                                        'and `--remove REGEX` choose those modes.')
modes = parser.add_subparsers(dest='mode', required=True, metavar='MODE',
                              help='search (the default), append or remove; `search.py MODE '
                                   '--help` lists its flags.')
# --gallery, which every mode takes.
gallery_flag = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
gallery_flag.add_argument(
    '--gallery', required=True,
    help='An HDF5 file that embed.py wrote (with --images or --dataset) with the same '
         'experiment: its `emb` and `fids` are the gallery.')

appending = modes.add_parser(
    'append', parents=[gallery_flag], allow_abbrev=False,
    help='Append new embeddings to the gallery and its indexes.',
    description='Append the embeddings file that embed.py wrote for new images to --gallery.')
appending.add_argument(
    '--embeddings', '--append', dest='append', required=True, metavar='EMBEDDINGS',
    help='The embeddings file that embed.py wrote for the new images (with the gallery\'s '
         'experiment, checkpoint and test-time augmentation); they are appended to the '
         '--gallery and added to the indexes saved beside it without rebuilding those. Two '
         'appenders at once take turns; a kill leaves the old gallery.')

removing = modes.add_parser(
    'remove', parents=[gallery_flag], allow_abbrev=False,
    help='Remove gallery images by file name.',
    description='Remove the gallery images whose file name matches a regular expression.')
removing.add_argument(
    '--pattern', '--remove', dest='remove', required=True, metavar='REGEX',
    help='Remove the gallery images whose file name matches this regular expression (searched '
         'anywhere in the name, for example `^cam3/`). faiss\'s graph cannot delete, so the '
         'saved indexes are removed and the next --index search builds one anew.')

searching = modes.add_parser(
    'search', parents=[gallery_flag], allow_abbrev=False,
    help='Search the gallery for query images or stored query embeddings.',
    description='Rank the gallery for each query and print the top-k.')
queries = searching.add_mutually_exclusive_group(required=True)

searching.add_argument(
    '--experiment_root', default=None,
    help='The trained experiment: its args.json and checkpoints (required with --query).')

queries.add_argument(
    '--query', default=None, nargs='+', metavar='IMAGE',
    help='Query image files, or folders of them (searched recursively, sorted).')

queries.add_argument(
    '--query_embeddings', default=None, metavar='EMBEDDINGS',
    help='Instead of --query images, search for the rows of this embeddings file that embed.py '
         'wrote with the gallery\'s checkpoint: tracks of camera footage (--tracklets) for a '
         'track-to-track search, or images embedded before. Needs no --experiment_root; the '
         'distance is --metric (euclidean by default).')

searching.add_argument(
    '--checkpoint', default=None,
    help='A checkpoint of the experiment other than the newest (such as `best`); it must be '
         'the one that embedded the gallery.')

searching.add_argument(
    '--top_k', default=10, type=flags.positive_int,
    help='How many gallery images to list per query.')

searching.add_argument(
    '--metric', default=None, choices=metrics.METRICS,
    help='The distance; the experiment\'s training metric by default.')

searching.add_argument(
    '--threshold', default=None, type=flags.float_between(0, 1e6),
    help='Mark the results at most this far from the query as matches (for example '
         'evaluate.py\'s `threshold_at_fpr` for the false-positive rate you accept). Always '
         'on the plain --metric distance, also with --rerank.')

searching.add_argument(
    '--rerank', action='store_true', default=False,
    help='Re-rank with k-reciprocal encoding over the queries and the whole gallery (as '
         'evaluate.py --rerank; slow for large galleries: it finds every gallery image\'s '
         'neighbours).')

searching.add_argument(
    '--index', action='store_true', default=False,
    help='Search through an approximate nearest-neighbour index (faiss\'s HNSW graph) instead '
         'of measuring every gallery embedding, for galleries of hundreds of thousands of '
         'images and more. It is built on the first such search and saved beside the gallery '
         '(`GALLERY.l2.index`, `.cosine.index` or `.l1.index`, by --metric), and rebuilt when '
         'the gallery\'s embeddings change. The distances printed are exact.')

searching.add_argument(
    '--index_candidates', default=64, type=flags.positive_int,
    help='With --index: how many candidates the graph search keeps (HNSW\'s efSearch, at '
         'least --top_k). More finds more of the exact top-k, more slowly.')

searching.add_argument(
    '--output', default=None,
    help='Also write the results: `.json` gives a list of {"query": path, "results": [{"file": '
         '..., "distance": ...}, ...]}, `.csv` one row per query and rank.')

searching.add_argument(
    '--plot', default=None,
    help='Also draw the rankings into this PNG file: each query, then its top-k gallery '
         'images (green border within --threshold).')

searching.add_argument(
    '--batch_size', default=256, type=flags.positive_int,
    help='Images embedded at once.')

searching.add_argument(
    '--max_image_pixels', default=flags.MAX_IMAGE_PIXELS, type=flags.positive_int,
    help='Refuse query images whose headers declare more pixels than this, before decoding '
         'them.')

searching.add_argument(
    '--html', default=None, metavar='DIR',
    help='Also write DIR/index.html, one self-contained page with each query and its top-k '
         'results as thumbnails, their distances, the matches within --threshold and the '
         'threshold as a line.')

searching.add_argument(
    '--quiet', action='store_true', default=False,
    help='No progress bars (they are drawn only on a terminal, and only for work that takes '
         'more than a second).')


def results_table(queries, gallery_fids, nearest, distances, threshold, plain=None):
    """[{'query': path, 'results': [{'file', 'distance'(, 'match')}, ...]}, ...].

    `threshold` applies to the `plain` distances (Q, k) when given: a
    verification threshold is on the metric's own scale, not the re-ranked
    one."""
    plain = distances if plain is None else plain
    table = []
    for query, indices, dists, plains in zip(queries, nearest, distances, plain):
        rows = []
        for index, distance, plain_distance in zip(indices, dists, plains):
            row = {'file': gallery_fids[index], 'distance': float(distance)}
            if threshold is not None:
                row['match'] = bool(plain_distance <= threshold)
            rows.append(row)
        table.append({'query': query, 'results': rows})
    return table


def write_output(path, table):
    if path.lower().endswith('.csv'):
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator='\n')
        match = 'match' in table[0]['results'][0]
        writer.writerow(['query', 'rank', 'file', 'distance'] + (['match'] if match else []))
        for entry in table:
            for position, row in enumerate(entry['results'], 1):
                writer.writerow([entry['query'], position, row['file'], row['distance']] +
                                ([row['match']] if match else []))
        files.atomic_write(path, buffer.getvalue())
    else:
        files.atomic_write(path, json.dumps(table, indent=2) + '\n')


def check_outputs(args, queries, inputs=()):
    """Refuses outputs that cannot be written, that would replace an input (the
    gallery, a query image) or an experiment's file, or each other, before any
    work."""
    outputs = []
    if args.output is not None:
        outputs.append(('--output', args.output, args.output.lower().rsplit('.', 1)[-1]))
    if args.plot is not None:
        outputs.append(('--plot', args.plot, 'png'))
    if args.html is not None:
        outputs += files.files_of_folder_output(args.html, '--html', ['index.html'], 'html')
    files.check_outputs(outputs, [('--gallery', args.gallery)] + list(inputs) + [
        ('--query', query) for query in queries])


def check_arguments(args):
    """Refuses what argparse cannot: --query without --experiment_root,
    pictures of stored queries, an --output of another kind than JSON or
    CSV, and --index with --rerank."""
    if args.query_embeddings is not None and (args.plot is not None or args.html is not None):
        searching.error('--query_embeddings names its queries, which are no images: leave out '
                        '--plot and --html')
    if args.query is not None and args.experiment_root is None:
        searching.error('--query needs the --experiment_root that embeds the images')
    if args.output is not None and not args.output.lower().endswith(('.json', '.csv')):
        raise cli.UserError('--output `{}` must end in .json or .csv.'.format(args.output))
    if args.index and args.rerank:
        raise cli.UserError('--rerank compares every gallery image with every other, which '
                            'an index is there to avoid; leave out one of --index and '
                            '--rerank.')


def check_query_embeddings(query_embs, gallery_embs, gallery_path, queries):
    """Refuses query embeddings (Q, D) of other dimensions than the gallery's,
    or with values that are not finite (named by the `queries` files)."""
    if query_embs.shape[1] != gallery_embs.shape[1]:
        raise cli.UserError('the experiment embeds into {} dimensions but the gallery `{}` '
                            'has {}; embed the gallery with this experiment.'.format(
                                query_embs.shape[1], gallery_path, gallery_embs.shape[1]))
    embeddings_file.check_finite(query_embs, 'the query embeddings', 'the checkpoint is broken; '
                                 'use an earlier one (--checkpoint)', queries)


def print_table(table, metric, rerank, threshold):
    """Prints each query's ranked gallery files and distances, marking those within `threshold`."""
    for entry in table:
        print('{} ({} distance{}):'.format(
            entry['query'], 're-ranked' if rerank else metric,
            ', * within {}{}'.format(threshold, ' of {} distance'.format(metric)
                                     if rerank else '')
            if threshold is not None else ''))
        for position, row in enumerate(entry['results'], 1):
            print('  {:3d}  {:10.4f}{} {}'.format(position, row['distance'],
                                                  ' *' if row.get('match') else '  ',
                                                  row['file']))


def search(args, query_embs, gallery_embs, metric):
    """The top --top_k gallery images of each query, through the gallery's
    index with --index: ((Q, k) indices, (Q, k) distances, re-ranked with
    --rerank, and (Q, k) plain distances)."""
    from triplet_reid.serving import gallery
    if args.index:
        with progress.bar('Building the index', 'image', args.quiet) as report:
            index = gallery.load_or_build_index(gallery_embs, metric, args.gallery, report)
        nearest, distances = gallery.search_index(index, query_embs, gallery_embs, metric,
                                                  args.top_k, args.index_candidates)
        return nearest, distances, distances
    return gallery.rank(query_embs, gallery_embs, metric, args.top_k, args.rerank)


def change_gallery(args):
    """The modes append and remove: change the gallery instead of searching it."""
    from triplet_reid.serving import gallery
    if args.mode == 'append':
        files.check_not_input(args.gallery, '--gallery', [('--append', args.append)])
        added, total, indexes = gallery.append(args.gallery, args.append)
        print('Appended {} images to `{}`, which holds {} now{}.'.format(
            added, args.gallery, total, '; added them to {}'.format(', '.join(
                '`{}`'.format(p) for p in indexes)) if indexes else ''), file=sys.stderr)
    else:
        removed, left = gallery.remove(args.gallery, args.remove)
        print('Removed {} images from `{}`, which holds {} now.'.format(
            removed, args.gallery, left), file=sys.stderr)
    return 0


def stored_queries(args, origin):
    """The rows of --query_embeddings: (names, embeddings (Q, D), metric),
    refused when another network or checkpoint made them than the gallery's."""
    stored = embeddings_file.read(args.query_embeddings, 'the query embeddings')
    if stored.fids is None or len(stored.fids) != len(stored.emb):
        raise cli.UserError('`{}` holds no names for its embeddings (an older embed.py?); '
                            'embed the queries again.'.format(args.query_embeddings))
    if not len(stored.emb):
        raise cli.UserError('--query_embeddings `{}` holds no embeddings, so there is nothing '
                            'to search for; embed the queries first.'.format(
                                args.query_embeddings))
    difference = embeddings_file.origin_difference(origin, stored.origin)
    if difference:
        raise cli.UserError('--query_embeddings `{}` and the gallery come from {}; their '
                            'distances mean nothing together. Embed both with one '
                            'checkpoint.'.format(args.query_embeddings, difference))
    check_outputs(args, [], [('--query_embeddings', args.query_embeddings)])
    return list(stored.fids), stored.emb, args.metric or 'euclidean'


def embed_queries(args, origin, augmentation):
    """The --query images embedded by the experiment with the gallery's
    test-time `augmentation`: (paths, embeddings (Q, D), metric)."""
    from triplet_reid.inputs import images
    from triplet_reid.models.inference import embed_files, load_experiment
    queries = common.find_images(args.query)
    image_root, fids = common.common_root(queries)
    images.decodable_mask(fids, image_root, False, remedy='or leave them out of --query',
                          max_pixels=args.max_image_pixels)
    check_outputs(args, queries)

    # The experiment's own preprocessing and checkpoint, and the gallery's
    # test-time augmentation, so that queries and gallery are embedded alike.
    model, train_args, checkpoint = load_experiment(args.experiment_root, args.checkpoint)
    difference = embeddings_file.origin_difference(
        origin, embeddings_file.embedding_origin(args.experiment_root, checkpoint))
    if difference:
        print('WARNING: the gallery and the queries are embedded by {}; their distances mean '
              'little. Embed the gallery with this checkpoint, or pass the gallery\'s '
              '--checkpoint.'.format(difference), file=sys.stderr)
    flip, crop, aggregator = augmentation
    query_embs, _, _ = embed_files(model, train_args, fids, image_root, flip, crop, aggregator,
                                   args.batch_size)
    return queries, query_embs, args.metric or train_args.get('metric', 'euclidean')


def main(argv=None):
    args = parser.parse_args(with_mode(argv))
    if args.mode == 'search':
        check_arguments(args)
    # TensorFlow comes only after the arguments parse, so that --help and a
    # mistyped flag answer at once (see startup.quiet_tensorflow).
    startup.quiet_tensorflow()
    if args.mode != 'search':
        return change_gallery(args)
    from triplet_reid.serving import gallery

    # Data: the gallery first, as it is the cheaper to find wrong; then the
    # queries, embedded by the experiment or stored.
    gallery_embs, gallery_fids, augmentation, origin, fields = gallery.load_gallery(args.gallery)
    if fields and (args.plot is not None or args.html is not None):
        raise cli.UserError('the gallery `{}` holds boxes or tracks of camera footage, whose '
                            'names are no image files to draw; leave out --plot and '
                            '--html.'.format(args.gallery))
    if args.query_embeddings is not None:
        queries, query_embs, metric = stored_queries(args, origin)
    else:
        queries, query_embs, metric = embed_queries(args, origin, augmentation)
    check_query_embeddings(query_embs, gallery_embs, args.gallery, queries)

    # Search.
    nearest, distances, plain = search(args, query_embs, gallery_embs, metric)
    table = results_table(queries, gallery_fids, nearest, distances, args.threshold, plain)
    print_table(table, metric, args.rerank, args.threshold)

    # Outputs.
    if args.output is not None:
        write_output(args.output, table)
    if args.plot is not None:
        from triplet_reid.evaluation import visualize
        visualize.plot_search(args.plot, table)
    if args.html is not None:
        from triplet_reid.evaluation import html_report
        path = html_report.search_report(args.html, table, args.threshold,
                                         're-ranked' if args.rerank else metric,
                                         line=not args.rerank)
        print('Wrote the report {}.'.format(path), file=sys.stderr)
    return 0


def command():
    """`reid-search`, the command that `pip install .` installs (pyproject.toml)."""
    cli.run(main)


if __name__ == '__main__':
    command()
