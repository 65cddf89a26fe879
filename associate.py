#!/usr/bin/env python3
"""Follow people across cameras: join each camera's tracks into one global
identity per person, and score tracks with global identities (IDF1, IDP,
IDR, HOTA) per camera and across cameras.

The command line over `serving/association.py` (the clustering under the
cameras' constraints), `inputs/topology.py` (which cameras connect, and how
long the walk takes) and `evaluation/mtmc.py` (the scores, by TrackEval).
Its input is the tracklet files of `embed.py --frames ... --tracklets`, one
a camera, and the MOT files of their boxes; see docs/tracking.md.
"""

import argparse
import csv
import io
import logging
import os

import numpy as np

if __package__ in (None, ''):
    # Run from a checkout (`python associate.py`): its folder is the package triplet_reid.
    import checkout
    checkout.register()

from triplet_reid import cli
from triplet_reid.cli import flags
from triplet_reid.storage import files, locks
from triplet_reid.inputs.footage import mot_line, read_boxes, read_detections

log = logging.getLogger('associate')

# The most tracks --rerank takes: it holds their (T, T) float32 distances,
# 3.4 GiB at 30,000.
MAX_RERANK_TRACKS = 30_000


def camera_file(arg):
    """`CAMERA=FILE`: a camera's name and a MOT file of its boxes."""
    camera, separator, path = arg.partition('=')
    if not separator or not path:
        raise argparse.ArgumentTypeError('`{}` is not CAMERA=FILE (such as cam1=cam1/gt/gt.txt)'
                                         .format(arg))
    return flags.camera(camera), flags.readable_path(path)


parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])

parser.add_argument(
    '--tracklets', nargs='+', default=[], type=flags.readable_path, metavar='H5',
    help='The tracklet files of the cameras (embed.py --frames ... --tracklets mean writes '
         'CAMERA_tracklets.h5), one row a track with its camera, first and last frame. Their '
         'tracks are joined into global identities, written to --output_dir.')

parser.add_argument(
    '--detections', nargs='*', default=[], type=camera_file, metavar='CAMERA=FILE',
    help='The MOT-Challenge file of each camera\'s boxes, as embed.py read it (the tracker\'s '
         'output or gt.txt); --output_dir gets CAMERA.txt, these boxes with each track\'s '
         'global identity as its id (boxes of no track, id -1, left out).')

parser.add_argument(
    '--frames', nargs='*', default=[], type=camera_file, metavar='CAMERA=DIR_OR_VIDEO',
    help='The frames of cameras of --detections (a folder of numbered images or a video, as '
         'embed.py --frames reads them): --output_dir then gets index.html, each global '
         'identity\'s tracks across cameras as thumbnails in time order.')

parser.add_argument(
    '--output_dir', default=None, metavar='DIR',
    help='Where the association is written, whole or not at all: tracks.csv (camera,track,'
         'global_id) and CAMERA.txt for each camera of --detections.')

parser.add_argument(
    '--threshold', type=flags.float_between(0, 2), default=0.4,
    help='The largest cosine distance (1 - cosine similarity of the tracks\' embeddings) at '
         'which two tracks, and two identities on average, are one person.')

parser.add_argument(
    '--rerank', action='store_true',
    help='Measure the tracks\' distances re-ranked by their k-reciprocal neighbours (Zhong et '
         'al., as evaluate.py --rerank does) instead of the plain cosine distance; --threshold '
         'is then a re-ranked distance. k1 should be about the tracks a person leaves in all '
         'cameras. Offline only; it holds all the tracks\' distances at once, 4 T² bytes (up '
         'to {:,} tracks).'.format(MAX_RERANK_TRACKS))

flags.add_rerank_settings(parser)

parser.add_argument(
    '--topology', default=None, type=flags.readable_path, metavar='JSON',
    help='The camera network: which cameras connect and the least and most travel time '
         'between them (see docs/tracking.md); tracks of cameras without a link are never '
         'joined. Without it any camera may follow any other, and the cameras\' frame numbers '
         'are taken as one shared clock.')

parser.add_argument(
    '--transit', choices=('estimate', 'any'), default='estimate',
    help='Without --topology, or with one that gives no links (only the cameras\' clocks): '
         '`estimate` links the cameras between which a first, stricter '
         'pass (half --threshold) saw people walk, with windows around the times they took, '
         'and logs them; `any` lets any camera follow any other at any time after.')

parser.add_argument(
    '--state', default=None, metavar='H5',
    help='Associate online: the tracks of --tracklets join the global identities of this '
         'state file (created when missing) one at a time, in order of their start, each the '
         'nearest identity it can be or a new one, and the state is written back whole (a kill '
         'leaves the old one; a rerun skips the tracks it holds). Two writers take turns. '
         '--output_dir then gets the tracks of the whole state.')

parser.add_argument(
    '--ground_truth', nargs='*', default=[], type=camera_file, metavar='CAMERA=FILE',
    help='Score tracks against these MOT files with global identities: those of --output_dir '
         'just written, or of --mot_tracks. Prints IDF1, IDP, IDR and HOTA per camera and '
         'across cameras.')

parser.add_argument(
    '--mot_tracks', nargs='*', default=[], type=camera_file, metavar='CAMERA=FILE',
    help='Tracks with global identities to score against --ground_truth (any tracker\'s '
         'MOT files), instead of an association of --tracklets.')


def check_arguments(args):
    """Refuses flags that do not make a run."""
    if not args.tracklets and not args.ground_truth:
        raise cli.UserError('give --tracklets to associate, or --ground_truth with --mot_tracks '
                            'to score tracks.')
    if args.tracklets and args.output_dir is None and args.state is None:
        raise cli.UserError('--tracklets needs --output_dir, where the association is written '
                            '(or --state, to associate online).')
    if args.state is not None and not args.tracklets:
        raise cli.UserError('--state takes the tracks of --tracklets.')
    if args.mot_tracks and args.tracklets:
        raise cli.UserError('--mot_tracks scores a tracker\'s own files; with --tracklets the '
                            'association is scored. Give one of them.')
    if args.ground_truth and not (args.mot_tracks or args.detections):
        raise cli.UserError('--ground_truth scores boxes: give --mot_tracks, or --detections '
                            'with --tracklets.')
    missing = sorted({camera for camera, _ in args.frames} - {c for c, _ in args.detections})
    if missing:
        raise cli.UserError('--frames of camera `{}` need its --detections, whose boxes the '
                            'thumbnails show.'.format(missing[0]))
    for flag in ('detections', 'ground_truth', 'mot_tracks', 'frames'):
        cameras = [camera for camera, _ in getattr(args, flag)]
        twice = sorted({c for c in cameras if cameras.count(c) > 1})
        if twice:
            raise cli.UserError('--{} names camera `{}` twice.'.format(flag, twice[0]))
    inputs = [('--tracklets', path) for path in args.tracklets]
    if args.output_dir is not None:
        # An earlier association's folder is replaced; any other is refused.
        files.check_folder_output(args.output_dir, '--output_dir', 'associate.py', True)
        files.check_not_input(args.output_dir, '--output_dir', inputs)
    if args.state is not None:
        files.check_output(args.state, '--state', 'hdf5', inputs)
    if args.rerank and args.rerank_k2 > args.rerank_k1 + 1:
        raise cli.UserError('--rerank_k2 must be at most --rerank_k1 + 1.')
    if args.rerank and args.state is not None:
        raise cli.UserError('--rerank works offline: online, each track is compared with the '
                            'identities held, whose neighbours are not; leave out --rerank or '
                            '--state.')


def associate_online(args, tracks, topology):
    """Adds `tracks` to the state file --state under its lock (see
    `serving.association.add_tracks`); returns the (`Tracks`, identities)
    of the whole state, without embeddings, for --output_dir."""
    from triplet_reid.serving import association
    if topology is None:
        log.info('Online association without --topology: any camera may follow any other.')
    with locks.locked(args.state, 'the association state'):
        # Read under the lock: the other writer's tracks are in it now.
        state = (association.read_state(args.state) if os.path.exists(args.state) else
                 association.State.empty(tracks.embeddings.shape[1]))
        held = len(state.counts)
        state, found, skipped = association.add_tracks(state, tracks, args.threshold, topology)
        association.write_state(args.state, state)
    print('{} tracks of {} cameras: {} joined the {} global identities held, {} opened new ones, '
          '{} were held already; `{}` holds {} identities of {} tracks.'.format(
              len(found), len(set(tracks.cameras)), int((found < held).sum()) -
              skipped, held, len(state.counts) - held, skipped, args.state, len(state.counts),
              len(state.columns['track'])))
    columns = state.columns
    return association.Tracks(columns['camera'].astype(str), columns['track'],
                              columns['start'], columns['end'], None), columns['identity']


def estimated_topology(tracks, threshold, base, matrix):
    """The topology `serving.association.estimate_topology` finds (on the
    clock of `base`, a topology without links, when given), told in the log."""
    from triplet_reid.serving.association import CONFIDENT, estimate_topology
    topology, gaps = estimate_topology(tracks, threshold, base, matrix)
    log.info('No links given: estimated the cameras\' links from a first pass at %.3f '
             '(--transit any leaves them out): %s.', threshold * CONFIDENT, '; '.join(
                 '{} – {}: {:g} to {:g} (walks of {})'.format(
                     a, b, *topology.links[a, b], ', '.join('{:g}'.format(g) for g in sorted(
                         observed)[:8]) + (' …' if len(observed) > 8 else ''))
                 for (a, b), observed in sorted(gaps.items())) or 'none seen, no camera '
             'joins another')
    return topology


def reranked(args, tracks):
    """The re-ranked distances of `tracks` among themselves (--rerank)."""
    from triplet_reid.evaluation.rerank import reranked_matrix
    count = len(tracks.cameras)
    if count > MAX_RERANK_TRACKS:
        raise cli.UserError('--rerank holds all the tracks\' distances at once: {:,} tracks '
                            'would take {:.1f} GiB, and it takes up to {:,}; associate them '
                            'without --rerank.'.format(count, 4 * count ** 2 / 2 ** 30,
                                                       MAX_RERANK_TRACKS))
    log.info('Re-ranking the distances of %d tracks.', count)
    return reranked_matrix(tracks.embeddings, 'cosine', args.rerank_k1, args.rerank_k2,
                           args.rerank_lambda)


def write_outputs(args, tracks, identities):
    """Writes tracks.csv and each camera's MOT file with global identities
    into --output_dir, whole or not at all."""
    global_id = {(c, int(t)): int(i) for c, t, i in zip(tracks.cameras, tracks.tracks,
                                                         identities)}
    mot, middles = {}, {}
    for camera, path in args.detections:
        if camera not in set(tracks.cameras):
            raise cli.UserError('--detections names camera `{}`, which no track of --tracklets '
                                'is from.'.format(camera))
        lines = []
        for detection in read_detections(path):
            if detection.track < 0:
                continue
            key = (camera, detection.track)
            if key not in global_id:
                raise cli.UserError('`{}` line {}: track {} of camera `{}` has no row in '
                                    '--tracklets; give the detections that embed.py '
                                    'embedded.'.format(path, detection.line, detection.track,
                                                       camera))
            middles.setdefault(key, []).append(detection)
            lines.append(mot_line(detection.frame, global_id[key], detection.box))
        mot[camera] = ''.join(lines)
    table = io.StringIO()
    writer = csv.writer(table, lineterminator='\n')
    writer.writerow(('camera', 'track', 'global_id'))
    writer.writerows(sorted((camera, track, identity)
                            for (camera, track), identity in global_id.items()))
    page = association_page(args, tracks, identities, middles) if args.frames else None

    def write(partial):
        with open(os.path.join(partial, 'tracks.csv'), 'w') as f:
            f.write(table.getvalue())
        if page is not None:
            with open(os.path.join(partial, 'index.html'), 'w', encoding='utf-8') as f:
                f.write(page)
        for camera, text in mot.items():
            with open(os.path.join(partial, camera + '.txt'), 'w') as f:
                f.write(text)
    files.write_folder(args.output_dir, write, 'associate.py')
    return {camera: os.path.join(args.output_dir, camera + '.txt') for camera in mot}


# The most identities index.html shows (those seen by the most cameras
# first): each is a strip of thumbnails inlined in the page.
MAX_PAGE_IDENTITIES = 500


def association_page(args, tracks, identities, boxes):
    """index.html of the association: each identity's tracks (of the cameras
    of --frames) as thumbnails of their middle box, in time order. `boxes`
    holds each (camera, track)'s detections."""
    from triplet_reid.evaluation import html_report
    from triplet_reid.inputs import footage
    boxes = {key: sorted(found, key=lambda d: d.frame) for key, found in boxes.items()}
    middle = {key: found[len(found) // 2] for key, found in boxes.items()}
    thumbs = {}
    for camera, path in args.frames:
        frames = footage.frame_source(path)
        wanted = {}
        for (c, track), d in middle.items():
            if c == camera:
                wanted.setdefault(d.frame, []).append((track, d.box))
        images = (footage.video_images if isinstance(frames, footage.VideoFile) else
                  footage.folder_images)(frames, sorted(wanted), None)
        for number, image in images:
            for track, box in wanted[number]:
                bounds = footage.clip_box(box, image.size, 0)
                if bounds is not None:
                    thumbs[camera, track] = html_report.image_uri(image.crop(bounds))
    members = {}
    for row, identity in enumerate(identities):
        key = (str(tracks.cameras[row]), int(tracks.tracks[row]))
        if key in thumbs:
            members.setdefault(int(identity), []).append((tracks.starts[row], key, row))
    shown = sorted(members, key=lambda i: (-len({k[0] for _, k, _ in members[i]}), i))
    strips = []
    for identity in shown[:MAX_PAGE_IDENTITIES]:
        cells = [(thumbs[key], '{} #{}'.format(*key), '{} track {}, frames {} to {}'.format(
            key[0], key[1], boxes[key][0].frame, boxes[key][-1].frame))
            for _, key, _ in sorted(members[identity])]
        strips.append(('Identity {}: {} tracks in {} cameras'.format(
            identity, len(cells), len({key[0] for _, key, _ in members[identity]})), cells))
    figures = [('tracks', str(len(identities))), ('global identities',
                                                   str(len(set(identities.tolist())))),
               ('shown', '{} (those seen by the most cameras first)'.format(len(strips)))]
    return html_report.association_page(figures, strips)


def check_one_place(truth, topology):
    """Refuses ground truth ({camera: `footage.Boxes`}) that puts one
    identity in two cameras at once on the clock of `topology`, unless they
    watch one place: each identity's runs of consecutive frames in a camera,
    compared across cameras."""
    visits = {}
    for camera, boxes in truth.items():
        times = topology.times(camera, boxes.frames) if camera in topology.cameras or \
            topology.clock == 'frames' else None
        if times is None:
            raise cli.UserError('the topology gives no clock of camera `{}` of '
                                '--ground_truth.'.format(camera))
        for identity in np.unique(boxes.ids):
            rows = np.flatnonzero(boxes.ids == identity)
            rows = rows[np.argsort(boxes.frames[rows], kind='stable')]
            breaks = np.flatnonzero(np.diff(boxes.frames[rows]) > 1) + 1
            for run in np.split(rows, breaks):
                visits.setdefault(int(identity), []).append(
                    (float(times[run[0]]), float(times[run[-1]]), camera,
                     int(boxes.lines[run[0]])))
    for identity, found in visits.items():
        found.sort()
        for index, first in enumerate(found):
            for second in found[index + 1:]:
                if second[0] > first[1]:
                    break
                if first[2] != second[2] and not topology.together(first[2], second[2]):
                    raise cli.UserError(
                        '`{}` line {}: identity {} is in camera `{}` while camera `{}` sees it '
                        '(`{}` line {}); ground truth puts a person in one place at a time (or '
                        'give the cameras that watch one place as "overlaps" in the '
                        'topology).'.format(truth[second[2]].path, second[3], identity,
                                            second[2], first[2], truth[first[2]].path,
                                            first[3]))


def print_scores(found):
    from triplet_reid.evaluation.mtmc import ALL_CAMERAS, SCORES
    print('| cameras | ' + ' | '.join(SCORES) + ' |')
    print('|---' * (len(SCORES) + 1) + '|')
    for camera in sorted(c for c in found if c != ALL_CAMERAS) + [ALL_CAMERAS]:
        print('| {} | '.format(camera) + ' | '.join(
            '{:.2%}'.format(found[camera][score]) for score in SCORES) + ' |')


def main(argv=None):
    args = parser.parse_args(argv)
    check_arguments(args)
    cli.setup_logging(buffer=False)

    # Topology.
    topology = None
    if args.topology is not None:
        from triplet_reid.inputs.topology import read_topology
        topology = read_topology(args.topology)

    # Association.
    tracks_files = dict(args.mot_tracks)
    if args.tracklets:
        from triplet_reid.serving import association
        tracks = association.read_tracks(args.tracklets, topology)
        if args.state is not None:
            tracks, identities = associate_online(args, tracks, topology)
        else:
            matrix = reranked(args, tracks) if args.rerank else None
            if (topology is None or topology.links is None) and args.transit == 'estimate':
                topology = estimated_topology(tracks, args.threshold, topology, matrix)
            identities = association.associate(tracks, args.threshold, topology, matrix=matrix)
            print('{} tracks of {} cameras joined into {} global identities.'.format(
                len(identities), len(set(tracks.cameras)), len(set(identities.tolist()))))
        if args.output_dir is not None:
            tracks_files = write_outputs(args, tracks, identities)
            print('Wrote `{}`.'.format(args.output_dir))

    # Scores.
    if args.ground_truth:
        from triplet_reid.evaluation import mtmc
        truth = {camera: read_boxes(path, 'ground truth') for camera, path in args.ground_truth}
        if topology is not None:
            check_one_place(truth, topology)
        print_scores(mtmc.evaluate(truth, {camera: read_boxes(path)
                                           for camera, path in tracks_files.items()}))
    return 0


def command():
    """`reid-associate`, the command that `pip install .` installs (pyproject.toml)."""
    cli.run(main)


if __name__ == '__main__':
    command()
