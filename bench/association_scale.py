#!/usr/bin/env python3
"""Benchmark: multi-camera association at scale, offline and online.

Offline: `--tracks` tracks (20,000) of people walking through `--cameras`
cameras (8) on one clock, 128-d embeddings (each person's direction plus
noise, a tenth of the people with a look-alike), joined by
serving/association.py's `associate` with the constraints; the seconds and
the peak resident memory of the process (which held nothing before).

With --rerank, the offline run first re-ranks the distances
(associate.py --rerank: their (T, T) matrix).

Online: a state of `--identities` global identities (100,000) with a track
each, to which `--new` tracks (1,000) are added one at a time by
`add_tracks`; the milliseconds a track, and the seconds to read and write
the state file around them.

    .venv/bin/python -m bench.association_scale --json bench/results/association_scale.json
    .venv/bin/python -m bench.association_scale --rerank \\
        --json bench/results/association_scale_rerank.json
"""

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def synthetic_tracks(count, cameras, seed, dim=128, per_person=8):
    """`Tracks` of `count` tracks, `per_person` a person, and their people."""
    from triplet_reid.serving.association import Tracks, normalised
    rng = np.random.default_rng(seed)
    people = count // per_person
    looks = rng.normal(size=(people, dim))
    twins = rng.choice(people, people // 10, replace=False)
    looks[twins] = looks[np.roll(twins, 1)] + rng.normal(0, 0.6, (len(twins), dim))
    person = np.repeat(np.arange(people), per_person)
    embeddings = looks[person] / np.sqrt(dim) + rng.normal(0, 0.045, (len(person), dim))
    starts = np.zeros(len(person))
    camera = rng.integers(cameras, size=len(person))
    for p in range(people):
        rows = np.arange(p * per_person, (p + 1) * per_person)
        starts[rows] = rng.uniform(0, 10_000) + np.cumsum(rng.uniform(60, 200, per_person))
    ends = starts + rng.uniform(20, 50, len(person))
    return Tracks(np.array(['cam{}'.format(c) for c in camera]), np.arange(len(person)),
                  starts, ends, normalised(embeddings, 'the benchmark')), person


def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def offline(args):
    from triplet_reid.evaluation.rerank import reranked_matrix
    from triplet_reid.serving.association import associate
    tracks, person = synthetic_tracks(args.tracks, args.cameras, args.seed)
    before = peak_mib()
    start = time.perf_counter()
    # associate.py --rerank: the (T, T) re-ranked distances first.
    matrix = reranked_matrix(tracks.embeddings, 'cosine') if args.rerank else None
    identities = associate(tracks, args.threshold, matrix=matrix)
    seconds = time.perf_counter() - start
    pure = np.mean([len(set(person[identities == i])) == 1 for i in np.unique(identities)])
    return dict(tracks=args.tracks, cameras=args.cameras, rerank=args.rerank,
                people=int(person.max() + 1),
                identities=int(len(np.unique(identities))), pure_identities=round(float(pure), 4),
                seconds=round(seconds, 2), peak_mib_before=round(before),
                peak_mib=round(peak_mib()))


def online(args):
    from triplet_reid.serving import association
    rng = np.random.default_rng(args.seed + 1)
    held, dim = args.identities, 128
    sums = rng.normal(size=(held, dim))
    sums /= np.linalg.norm(sums, axis=1, keepdims=True)
    starts = rng.uniform(0, 1e6, held)
    state = association.State({'camera': np.array(['cam{}'.format(i % args.cameras)
                                                   for i in range(held)], dtype=object),
                               'track': np.arange(held), 'start': starts,
                               'end': starts + 30, 'identity': np.arange(held)},
                              sums, np.ones(held, np.int64))
    new, _ = synthetic_tracks(args.new, args.cameras, args.seed + 2, dim=dim)
    new = association.Tracks(new.cameras, new.tracks + held, new.starts + 2e6,
                             new.ends + 2e6, new.embeddings)
    with tempfile.TemporaryDirectory(prefix='association-') as folder:
        path = os.path.join(folder, 'state.h5')
        association.write_state(path, state)
        start = time.perf_counter()
        state = association.read_state(path)
        read = time.perf_counter() - start
        start = time.perf_counter()
        state, found, _ = association.add_tracks(state, new, args.threshold)
        added = time.perf_counter() - start
        start = time.perf_counter()
        association.write_state(path, state)
        written = time.perf_counter() - start
    return dict(identities_held=held, new_tracks=args.new, ms_per_track=round(
        1000 * added / args.new, 2), read_s=round(read, 2), write_s=round(written, 2),
        new_identities=int(len(state.counts) - held))


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument('--tracks', type=int, default=20_000, help='Tracks offline.')
    parser.add_argument('--cameras', type=int, default=8, help='Cameras.')
    parser.add_argument('--identities', type=int, default=100_000,
                        help='Global identities held online.')
    parser.add_argument('--new', type=int, default=1_000, help='Tracks added online.')
    parser.add_argument('--threshold', type=float, default=0.4, help='Cosine distance.')
    parser.add_argument('--seed', type=int, default=0, help='Seed of the tracks.')
    parser.add_argument('--rerank', action='store_true',
                        help='Offline, associate the re-ranked distances (associate.py '
                             '--rerank), the time of their matrix included.')
    parser.add_argument('--json', help='Also write the figures to this JSON file.')
    args = parser.parse_args(argv)
    sys.path.insert(0, ROOT)
    import checkout
    checkout.register()
    rows = {'offline': offline(args), 'online': online(args)}
    print(json.dumps(rows, indent=1))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'machine': platform.processor() or platform.machine(),
                       'cpus': os.cpu_count(), **rows}, f, indent=2)
            f.write('\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
