"""Multi-camera association (associate.py): the clustering under the
cameras' constraints, the topology file, and the scores against
hand-computed cases, on tracklet files written here."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import browse

from triplet_reid import associate
from triplet_reid import cli
from triplet_reid.evaluation import mtmc
from triplet_reid.inputs import embeddings_file
from triplet_reid.inputs.footage import read_boxes
from triplet_reid.inputs.topology import read_topology
from triplet_reid.serving.association import Tracks, associate as cluster, normalised


def tracks_of(rows, seed=0, noise=0.05):
    """`Tracks` of rows (camera, track, start, end, person): each person's
    embedding a random direction, each track's that plus `noise`."""
    rng = np.random.default_rng(seed)
    people = {person: rng.normal(size=16) for *_, person in rows}
    embeddings = np.array([people[p] / np.linalg.norm(people[p]) + rng.normal(0, noise, 16)
                           for *_, p in rows])
    return Tracks(np.array([r[0] for r in rows]), np.array([r[1] for r in rows]),
                  np.array([r[2] for r in rows], float), np.array([r[3] for r in rows], float),
                  normalised(embeddings, 'the test'))


def topology(tmp_path, content):
    path = tmp_path / 'topology.json'
    path.write_text(json.dumps(content))
    return str(path)


def test_tracks_of_one_person_join_and_two_people_stay_apart():
    rows = [('c1', 1, 0, 10, 'a'), ('c2', 1, 20, 30, 'a'), ('c3', 1, 40, 50, 'a'),
            ('c1', 2, 0, 10, 'b'), ('c2', 2, 15, 25, 'b')]
    identities = cluster(tracks_of(rows), 0.3)
    assert identities.tolist() == [0, 0, 0, 1, 1]


def test_one_camera_at_overlapping_frames_and_two_cameras_at_once_are_two_people():
    # Alike, but c1 sees both at frames 5 to 10, and c2 sees the third while c1
    # sees the first: three people however alike they look.
    rows = [('c1', 1, 0, 10, 'a'), ('c1', 2, 5, 15, 'a'), ('c2', 1, 8, 9, 'a')]
    identities = cluster(tracks_of(rows, noise=0.0), 0.3)
    assert len(set(identities.tolist())) == 3
    # Seen again by the same camera after leaving it: one person.
    rows = [('c1', 1, 0, 10, 'a'), ('c1', 2, 11, 15, 'a')]
    assert cluster(tracks_of(rows), 0.3).tolist() == [0, 0]


def test_a_topology_joins_only_linked_cameras_within_their_travel_times(tmp_path):
    path = topology(tmp_path, {'links': [{'cameras': ['c1', 'c2'], 'min': 5, 'max': 20}]})
    found = read_topology(path)
    rows = [('c1', 1, 0, 10, 'a'), ('c2', 1, 20, 30, 'a'),   # 10 frames later: linked.
            ('c1', 2, 0, 10, 'b'), ('c2', 2, 12, 30, 'b'),   # 2 later: too soon.
            ('c1', 3, 0, 10, 'c'), ('c3', 1, 20, 30, 'c')]   # No link to c3.
    identities = cluster(tracks_of(rows), 0.3, found).tolist()
    assert identities[0] == identities[1]
    assert identities[2] != identities[3] and identities[4] != identities[5]
    assert cluster(tracks_of(rows), 0.3).tolist() == [0, 0, 1, 1, 2, 2]


def test_a_topology_in_seconds_puts_each_camera_on_the_shared_clock(tmp_path):
    path = topology(tmp_path, {'clock': 'seconds', 'cameras': {
        'c1': {'fps': 10, 'start': 0}, 'c2': {'fps': 20, 'start': 100}},
        'links': [{'cameras': ['c2', 'c1'], 'min': 0, 'max': 60}]})
    found = read_topology(path)
    assert found.times('c2', np.array([1, 21])).tolist() == [100.0, 101.0]
    assert found.allows('c1', 'c2', 30) and not found.allows('c1', 'c2', 61)
    with pytest.raises(cli.UserError, match='names camera `c2`, which none of the tracks'):
        found.check_cameras({'c1', 'c3'}, 'x.h5')


@pytest.mark.parametrize('content, match', [
    ({'clock': 'hours'}, r'the clock is `hours`; it is "frames" or "seconds"'),
    ({'clock': 'seconds', 'cameras': {'c1': {'fps': 0}}},
     r'the fps of camera `c1` is `0`, which is not a finite number, above 0'),
    ({'links': [{'cameras': ['c1', 'c2'], 'min': 10, 'max': 5}]},
     r'link 1 \(c1 – c2\) takes at most 5.0 and at least 10.0; its max is below its min'),
    ({'links': [{'cameras': ['c1', 'c2'], 'min': -1, 'max': 5}]},
     r'the min of link 1 is `-1`, which is not a finite number, at least 0'),
    ({'links': [{'cameras': ['c1', 'c1'], 'min': 1, 'max': 5}]}, r'link 1 is not'),
    ({'links': [{'cameras': ['c1', 'c2'], 'min': 1, 'max': 5},
                {'cameras': ['c1', 'c2'], 'min': 1, 'max': 9}]}, r'link 2 joins c1 and c2 again'),
    ({'cameras': [], 'links': {}}, r'"cameras" is an object'),
    ({'roads': []}, r'holds `roads`'),
])
def test_bad_topologies_get_one_message_naming_the_setting(tmp_path, content, match):
    with pytest.raises(cli.UserError, match=match):
        read_topology(topology(tmp_path, content))


def mot(path, rows):
    """A MOT file of rows (frame, id, left, top, width, height)."""
    path.write_text(''.join('{},{},{},{},{},{},1,-1,-1,-1\n'.format(*r) for r in rows))
    return str(path)


def test_the_scores_count_a_person_with_two_ids_in_two_cameras_against_them(tmp_path):
    person = [(frame, 1, 10, 10, 20, 40) for frame in range(1, 5)]
    truth = {c: read_boxes(mot(tmp_path / (c + '_gt.txt'), person)) for c in ('c1', 'c2')}
    # Perfect within each camera, but with another global id in c2.
    tracks = {'c1': truth['c1'], 'c2': read_boxes(mot(tmp_path / 'c2.txt', [
        (f, 6, *box) for f, _, *box in person]))}
    found = mtmc.evaluate(truth, tracks)
    for camera in ('c1', 'c2'):
        assert found[camera]['IDF1'] == found[camera]['HOTA'] == 1.0
    # One mapping across cameras: 4 of the 8 boxes each way.
    every = found[mtmc.ALL_CAMERAS]
    assert every['IDF1'] == every['IDP'] == every['IDR'] == 0.5
    # Detection is perfect; each match's association 4 / (4 + 4).
    assert every['DetA'] == 1.0 and every['AssA'] == 0.5
    assert every['HOTA'] == pytest.approx(np.sqrt(0.5))
    # A box half off its person's (IoU 1/3) is missed by IDF1's 0.5.
    shifted = {'c1': read_boxes(mot(tmp_path / 's.txt', [
        (f, 1, 20, 10, 20, 40) for f in range(1, 5)])), 'c2': truth['c2']}
    assert mtmc.evaluate(truth, shifted)['c1']['IDF1'] == 0.0
    with pytest.raises(cli.UserError, match='camera `c2` has no tracks'):
        mtmc.evaluate(truth, {'c1': truth['c1']})


def write_tracklets(path, camera, rows, dim=16, seed=0, origin=None):
    """A tracklet file as embed.py --tracklets writes it: rows (track,
    first, last, person), each person's embedding its seed's direction."""
    embs = []
    for _, _, _, person in rows:
        direction = np.random.default_rng(person).normal(size=dim)
        embs.append(direction + np.random.default_rng(seed + len(embs)).normal(0, 0.05, dim))
    embeddings_file.write(str(path), np.array(embs, np.float32), None, ['original'],
                          ['{}/track{}'.format(camera, r[0]) for r in rows], aggregator='mean',
                          made_by=origin, fields={
                              'camera': [camera] * len(rows),
                              'track': np.array([r[0] for r in rows]),
                              'frame': np.array([r[1] for r in rows]),
                              'last_frame': np.array([r[2] for r in rows]),
                              'crops': np.array([r[2] - r[1] + 1 for r in rows])})
    return str(path)


@pytest.fixture
def network(tmp_path):
    """Two cameras: person 1 walks from c1 to c2, person 2 stays in c1."""
    c1 = write_tracklets(tmp_path / 'c1.h5', 'c1', [(3, 1, 4, 1), (4, 1, 4, 2)])
    c2 = write_tracklets(tmp_path / 'c2.h5', 'c2', [(8, 10, 13, 1)])
    boxes = {'c1': mot(tmp_path / 'c1_det.txt', [(f, t, 10 + 30 * (t - 3), 10, 20, 40)
                                                 for f in range(1, 5) for t in (3, 4)] +
                       [(2, -1, 100, 10, 20, 40)]),
             'c2': mot(tmp_path / 'c2_det.txt', [(f, 8, 10, 10, 20, 40) for f in range(10, 14)])}
    truth = {'c1': mot(tmp_path / 'c1_gt.txt', [(f, 7 + (t - 3), 10 + 30 * (t - 3), 10, 20, 40)
                                                for f in range(1, 5) for t in (3, 4)]),
             'c2': mot(tmp_path / 'c2_gt.txt', [(f, 7, 10, 10, 20, 40) for f in range(10, 14)])}
    return tmp_path, (c1, c2), boxes, truth


def test_associate_writes_global_identities_and_scores_them(network, capsys):
    folder, tracklets, boxes, truth = network
    out = str(folder / 'out')
    assert associate.main(['--tracklets', *tracklets, '--output_dir', out, '--detections',
                           *('{}={}'.format(c, p) for c, p in boxes.items()),
                           '--ground_truth', *('{}={}'.format(c, p) for c, p in truth.items())
                           ]) == 0
    assert open(os.path.join(out, 'tracks.csv')).read().splitlines() == [
        'camera,track,global_id', 'c1,3,0', 'c1,4,1', 'c2,8,0']
    lines = open(os.path.join(out, 'c2.txt')).read().splitlines()
    assert lines[0] == '10,0,10.00,10.00,20.00,40.00,1,-1,-1,-1' and len(lines) == 4
    # The box of no track is left out.
    assert len(open(os.path.join(out, 'c1.txt')).read().splitlines()) == 8
    printed = capsys.readouterr().out
    assert '3 tracks of 2 cameras joined into 2 global identities' in printed
    assert '| all cameras | 100.00% | 100.00% | 100.00% | 100.00% |' in printed
    # A tracker's own files score without any model.
    assert associate.main(['--mot_tracks', 'c1={}'.format(truth['c1']),
                           'c2={}'.format(truth['c2']), '--ground_truth',
                           *('{}={}'.format(c, p) for c, p in truth.items())]) == 0


def test_bad_tracks_get_one_message_and_write_nothing(network):
    folder, (c1, c2), boxes, _ = network
    out = str(folder / 'out')

    def refused(tracklets, match, extra=()):
        with pytest.raises(cli.UserError, match=match):
            associate.main(['--tracklets', *tracklets, '--output_dir', out, *extra])
        assert not os.path.exists(out)
    backwards = write_tracklets(folder / 'b.h5', 'c3', [(1, 9, 4, 1)])
    refused([c1, backwards], r'`.*b\.h5` row 0: track 1 of camera `c3` ends at frame 4 before '
                             r'it starts at 9; its frames run backwards')
    refused([c1, c1], r'track 3 of camera `c1` is in `.*c1\.h5` row 0 and in')
    wide = write_tracklets(folder / 'w.h5', 'c3', [(1, 1, 4, 1)], dim=8)
    refused([c1, wide], r'holds 8-d embeddings and `.*c1\.h5` 16-d ones')
    other = write_tracklets(folder / 'o.h5', 'c3', [(1, 1, 4, 1)], origin={
        'experiment_root': '/elsewhere', 'checkpoint': 'checkpoint-1'})
    first = write_tracklets(folder / 'f.h5', 'c1', [(1, 1, 4, 1)], origin={
        'experiment_root': '/here', 'checkpoint': 'checkpoint-1'})
    refused([first, other], r'were embedded by different experiments')
    nan = write_tracklets(folder / 'n.h5', 'c3', [(1, 1, 4, 1)])
    import h5py
    with h5py.File(nan, 'a') as f:
        f['emb'][0, 3] = np.nan
    refused([c1, nan], r'holds 1 embeddings with NaN or infinite values')
    path = topology(folder, {'links': [{'cameras': ['c1', 'c9'], 'min': 0, 'max': 5}]})
    refused([c1, c2], r'names camera `c9`, which none of the tracks', ['--topology', path])
    refused([c1, c2], r'--detections names camera `c5`, which no track', [
        '--detections', 'c5={}'.format(boxes['c1'])])
    with pytest.raises(SystemExit):
        associate.main(['--tracklets', c1, '--output_dir', out, '--threshold', 'nan'])


def test_without_a_topology_the_links_are_estimated_from_confident_matches():
    from triplet_reid.serving.association import estimate_topology
    rows = [('c1', i, 100 * i, 100 * i + 20, i) for i in range(4)] + \
        [('c2', i, 100 * i + 20 + gap, 100 * i + 50, i) for i, gap in enumerate((8, 12, 9, 15))]
    topology, gaps = estimate_topology(tracks_of(rows, noise=0.01), 0.3)
    assert sorted(gaps[('c1', 'c2')]) == [8, 9, 12, 15]
    least, most = topology.links['c1', 'c2']
    assert least <= 8 and most >= 15 and topology.links['c2', 'c1'] == (least, most)
    assert ('c1', 'c3') not in topology.links


def test_online_association_grows_a_state_that_survives_reruns(network, capsys):
    folder, (c1, c2), boxes, truth = network
    state = str(folder / 'state.h5')
    assert associate.main(['--tracklets', c1, '--state', state]) == 0
    assert '2 opened new ones' in capsys.readouterr().out
    out = str(folder / 'online')
    assert associate.main(['--tracklets', c2, '--state', state, '--output_dir', out,
                           '--detections', *('{}={}'.format(c, p) for c, p in boxes.items()),
                           '--ground_truth', *('{}={}'.format(c, p) for c, p in truth.items())
                           ]) == 0
    printed = capsys.readouterr().out
    assert '1 joined the 2 global identities held, 0 opened new ones' in printed
    assert '| all cameras | 100.00% |' in printed
    assert open(os.path.join(out, 'tracks.csv')).read().splitlines() == [
        'camera,track,global_id', 'c1,3,0', 'c1,4,1', 'c2,8,0']
    # A rerun (after a kill, say) skips what the state holds.
    assert associate.main(['--tracklets', c2, '--state', state]) == 0
    assert '1 were held already' in capsys.readouterr().out
    moved = write_tracklets(folder / 'm.h5', 'c2', [(8, 11, 13, 1)])
    with pytest.raises(cli.UserError, match=r'track 8 of camera `c2` is in the state already, '
                                            r'from 10 to 13, and now from 11 to 13'):
        associate.main(['--tracklets', moved, '--state', state])
    wide = write_tracklets(folder / 'w.h5', 'c3', [(1, 1, 4, 1)], dim=8)
    before = open(state, 'rb').read()
    with pytest.raises(cli.UserError, match=r'the state holds 16-d identities and the tracks '
                                            r'are 8-d'):
        associate.main(['--tracklets', wide, '--state', state])
    assert open(state, 'rb').read() == before
    (folder / 'bad.h5').write_bytes(b'not a state')
    with pytest.raises(cli.UserError, match=r'exists and is not an HDF5 file'):
        associate.main(['--tracklets', c1, '--state', str(folder / 'bad.h5')])
    # Another HDF5 file (an embeddings file) is read as a state and refused.
    other = write_tracklets(folder / 'other.h5', 'c3', [(1, 1, 4, 1)])
    with pytest.raises(cli.UserError, match=r'is not an association state that associate\.py '
                                            r'wrote'):
        associate.main(['--tracklets', c1, '--state', other])
    with pytest.raises(cli.UserError, match=r'--state `.*c1\.h5` is the same file as '
                                            r'--tracklets'):
        associate.main(['--tracklets', c1, '--state', c1])
    # An --output_dir of something else is never replaced.
    (folder / 'mine').mkdir()
    (folder / 'mine' / 'notes.txt').write_text('mine')
    with pytest.raises(cli.UserError, match=r'holds files that associate\.py did not write'):
        associate.main(['--tracklets', c1, '--output_dir', str(folder / 'mine')])


def test_online_association_keeps_the_constraints_and_takes_the_nearest():
    from triplet_reid.serving.association import State, add_tracks
    rows = [('c1', 1, 0, 10, 'a'), ('c1', 2, 0, 10, 'b'), ('c2', 1, 5, 8, 'a'),
            ('c2', 2, 20, 30, 'b'), ('c2', 3, 40, 50, 'a')]
    tracks = tracks_of(rows)
    state, found, skipped = add_tracks(State.empty(16), tracks, 0.3)
    # c2's first track looks like a at frames 5-8 while c1 still sees a: someone
    # else. The last looks like both, and joins one of them.
    assert found.tolist()[:4] == [0, 1, 2, 1] and found[4] in (0, 2) and skipped == 0
    assert sorted(state.counts.tolist()) == [1, 2, 2]
    joined = int(found[4])
    np.testing.assert_allclose(state.sums[joined], tracks.embeddings[
        [0 if joined == 0 else 2, 4]].sum(0), rtol=1e-6)


def test_the_page_shows_each_identity_s_tracks_in_a_browser(network, tmp_path):
    folder, tracklets, boxes, _ = network
    frames = {}
    for camera, numbers in (('c1', range(1, 5)), ('c2', range(10, 14))):
        frames[camera] = folder / (camera + '_frames')
        frames[camera].mkdir()
        for number in numbers:
            Image.new('RGB', (160, 80), (40 * number % 255, 90, 160)).save(
                frames[camera] / '{:06d}.jpg'.format(number))
    out = str(folder / 'out')
    assert associate.main(['--tracklets', *tracklets, '--output_dir', out, '--detections',
                           *('{}={}'.format(c, p) for c, p in boxes.items()), '--frames',
                           *('{}={}'.format(c, p) for c, p in frames.items())]) == 0
    page = os.path.join(out, 'index.html')
    text = open(page).read()
    assert text.index('c1 #3') < text.index('c2 #8') and 'Identity 0: 2 tracks in 2 cameras' \
        in text
    found, _ = browse(page, tmp_path)
    assert found == {'title': 'Global identities across cameras', 'queries': 2, 'images': 3,
                     'broken': 0, 'external': 0, 'thresholds': 0, 'scripts': 0}
    with pytest.raises(cli.UserError, match=r'--frames of camera `c1` need its --detections'):
        associate.main(['--tracklets', *tracklets, '--output_dir', out, '--frames',
                        'c1={}'.format(frames['c1'])])


def test_a_walk_may_pass_cameras_that_missed_the_person(tmp_path):
    found = read_topology(topology(tmp_path, {'links': [
        {'cameras': ['c1', 'c2'], 'min': 5, 'max': 20},
        {'cameras': ['c2', 'c3'], 'min': 5, 'max': 20}]}))
    # c1 to c3 through c2: 10 to 40.
    assert found.allows('c1', 'c3', 30) and found.allows('c3', 'c1', 10)
    assert not found.allows('c1', 'c3', 8) and not found.allows('c1', 'c3', 41)
    assert found.reach['c1', 'c2'] == (5, 20)


def keeps_constraints(visits, topology):
    """The whole walk checked, as `can_join` must agree: whether one person
    can have made `visits` [(start, end, camera)] sorted by start."""
    from triplet_reid.serving.association import follows, meets_at_once
    if topology is not None and topology.overlaps and not all(
            meets_at_once(visits[:i], visits[i:i + 1], topology) for i in range(len(visits))):
        return False
    return all(follows(a, b, topology) for a, b in zip(visits, visits[1:]))


def test_joining_checks_only_the_new_neighbours_and_agrees_with_the_whole_walk(tmp_path):
    from triplet_reid.serving.association import can_join
    found = read_topology(topology(tmp_path, {'links': [
        {'cameras': ['c1', 'c2'], 'min': 1, 'max': 6}]}))
    overlapping = read_topology(topology(tmp_path, {'overlaps': [['c1', 'c2']]}))
    rng = np.random.default_rng(0)
    agreed = set()
    for _ in range(3000):
        def visits(count):
            starts = np.sort(rng.integers(0, 60, count))
            return [(float(s), float(s + rng.integers(0, 4)), 'c{}'.format(rng.integers(1, 3)))
                    for s in starts]
        one, other = visits(int(rng.integers(1, 5))), visits(int(rng.integers(1, 4)))
        for chosen in (found, None, overlapping):
            if not (keeps_constraints(one, chosen) and keeps_constraints(other, chosen)):
                continue
            expected = keeps_constraints(sorted(one + other), chosen)
            assert can_join(one, other, chosen) == expected, (one, other)
            agreed.add(expected)
    assert agreed == {True, False}


def test_tracks_that_all_look_alike_are_compared_with_their_nearest_only():
    from triplet_reid.serving.association import NEIGHBOURS, close_pairs
    rows = [('c1', i, i, i + 5, 'a') for i in range(3 * NEIGHBOURS)]
    tracks = tracks_of(rows, noise=0.0)
    distances, firsts, seconds = close_pairs(tracks.embeddings, 2.0)
    assert len(distances) <= len(rows) * NEIGHBOURS and (firsts < seconds).all()
    assert len(set(zip(firsts.tolist(), seconds.tolist()))) == len(distances)
    # One camera sees each overlap the five after it: six people at least,
    # none of whose tracks overlap.
    identities = cluster(tracks, 2.0)
    assert 6 <= len(set(identities.tolist())) < len(rows) / 10
    for identity in set(identities.tolist()):
        starts = np.sort(tracks.starts[identities == identity])
        assert (np.diff(starts) > 5).all()


def test_cameras_that_see_one_place_may_see_a_person_at_once(tmp_path):
    from triplet_reid.serving.association import can_join
    found = read_topology(topology(tmp_path, {'overlaps': [['c1', 'c2']]}))
    assert found.links is None and found.allows('c1', 'c3', 1e9)
    rows = [('c1', 1, 0, 100, 'a'), ('c2', 1, 10, 50, 'a'), ('c3', 1, 20, 30, 'a')]
    identities = cluster(tracks_of(rows), 0.3, found).tolist()
    # c1 and c2 watch one place; c3 does not.
    assert identities[0] == identities[1] != identities[2]
    # A long visit of c1 spans a c2 visit and then another c1 one: c1 twice at once.
    one = [(0.0, 100.0, 'c1'), (10.0, 50.0, 'c2')]
    assert not can_join(one, [(60.0, 90.0, 'c1')], found)
    assert not keeps_constraints(sorted(one + [(60.0, 90.0, 'c1')]), found)
    assert can_join(one, [(101.0, 120.0, 'c1')], found)


def test_ground_truth_with_one_person_in_two_places_at_once_is_refused(network, tmp_path):
    folder, tracklets, boxes, truth = network
    path = topology(tmp_path, {'links': [{'cameras': ['c1', 'c2'], 'min': 0, 'max': 50}]})
    twice = mot(folder / 'c2_twice.txt', [(f, 7, 10, 10, 20, 40) for f in range(3, 6)])
    with pytest.raises(cli.UserError, match=r'c2_twice\.txt` line 1: identity 7 is in camera '
                                            r'`c2` while camera `c1` sees it \(`.*c1_gt\.txt` '
                                            r'line 1\)'):
        associate.main(['--mot_tracks', 'c1={}'.format(truth['c1']), 'c2={}'.format(twice),
                        '--ground_truth', 'c1={}'.format(truth['c1']), 'c2={}'.format(twice),
                        '--topology', path])
    # Cameras that watch one place may.
    path = topology(tmp_path, {'overlaps': [['c1', 'c2']]})
    assert associate.main(['--mot_tracks', 'c1={}'.format(truth['c1']), 'c2={}'.format(twice),
                           '--ground_truth', 'c1={}'.format(truth['c1']),
                           'c2={}'.format(twice), '--topology', path]) == 0


def test_given_distances_take_the_cosine_s_place_in_pairs_and_averages():
    """`matrix` (the re-ranked distances) decides both which pairs are
    close and how far two identities are on average."""
    rows = [('c1', 1, 0, 10, 'a'), ('c2', 1, 20, 30, 'b'), ('c3', 1, 40, 50, 'c')]
    tracks = tracks_of(rows)
    assert cluster(tracks, 0.3).tolist() == [0, 1, 2]
    matrix = np.array([[0, 0.1, 0.9], [0.1, 0, 0.1], [0.9, 0.1, 0]], np.float32)
    # 0 and 1 join; 2 is near 1 but 0.5 from {0, 1} on average.
    assert cluster(tracks, 0.3, matrix=matrix).tolist() == [0, 0, 1]
    assert cluster(tracks, 0.6, matrix=matrix).tolist() == [0, 0, 0]
    # The constraints hold whatever the distances say.
    rows[2] = ('c1', 2, 5, 15, 'c')
    assert cluster(tracks_of(rows), 0.6, matrix=matrix).tolist() == [0, 0, 1]


def test_rerank_associates_by_shared_neighbours(network, capsys, monkeypatch):
    folder, tracklets, boxes, truth = network
    out = str(folder / 'out')
    assert associate.main(['--tracklets', *tracklets, '--output_dir', out, '--rerank',
                           '--threshold', '0.2', '--ground_truth',
                           *('{}={}'.format(c, p) for c, p in truth.items()), '--detections',
                           *('{}={}'.format(c, p) for c, p in boxes.items())]) == 0
    assert open(os.path.join(out, 'tracks.csv')).read().splitlines() == [
        'camera,track,global_id', 'c1,3,0', 'c1,4,1', 'c2,8,0']
    assert '| all cameras | 100.00% |' in capsys.readouterr().out
    for extra, match in ((['--state', str(folder / 's.h5')], r'--rerank works offline'),
                         (['--rerank_k1', '3', '--rerank_k2', '5'],
                          r'--rerank_k2 must be at most --rerank_k1 \+ 1')):
        with pytest.raises(cli.UserError, match=match):
            associate.main(['--tracklets', *tracklets, '--output_dir', out + '2', '--rerank',
                            *extra])
    monkeypatch.setattr(associate, 'MAX_RERANK_TRACKS', 2)
    with pytest.raises(cli.UserError, match=r'--rerank holds all the tracks\' distances at '
                                            r'once: 3 tracks would take 0\.0 GiB'):
        associate.main(['--tracklets', *tracklets, '--output_dir', out + '2', '--rerank'])
    assert not os.path.exists(out + '2')
