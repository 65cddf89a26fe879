"""Camera footage to embeddings: embed.py --frames --detections, tracklets,
and evaluate.py and search.py on them (inputs/footage.py)."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from triplet_reid import cli
from triplet_reid import embed
from triplet_reid.inputs import embeddings_file
from triplet_reid import evaluate
from triplet_reid.inputs import footage
from triplet_reid import search
from triplet_reid import train
from conftest import base_args, make_dataset

# Two people walking across 6 frames of 64×96 pixels: (track, identity colour).
PEOPLE = {1: ((200, 30, 30), (30, 30, 200)), 2: ((30, 200, 30), (200, 200, 30))}


def person_box(track, frame):
    """The MOT box (left from 1, top from 1, width, height) of `track` in `frame`."""
    return (1 + 8 * frame + (40 if track == 2 else 0), 11, 16, 32)


def make_footage(folder, frames=6):
    """A frames folder `folder/cam1/img1` and its MOT file; returns both paths."""
    images = os.path.join(folder, 'cam1', 'img1')
    os.makedirs(images)
    rng = np.random.default_rng(0)
    lines = []
    for frame in range(1, frames + 1):
        picture = rng.uniform(0, 255, (64, 96, 3))
        for track, (top, bottom) in PEOPLE.items():
            left, upper, width, height = person_box(track, frame)
            x, y = int(left - 1), int(upper - 1)
            picture[y:y + height // 2, x:x + width] = top
            picture[y + height // 2:y + height, x:x + width] = bottom
            lines.append('{},{},{},{},{},{},1,-1,-1,-1\n'.format(frame, track, left, upper,
                                                                  width, height))
        Image.fromarray(picture.astype(np.uint8)).save(os.path.join(images,
                                                                    '{:06d}.png'.format(frame)))
    # A box too small to embed, and a detection of no track.
    lines += ['1,3,5,5,4,4,0.5,-1,-1,-1\n', '2,-1,30,20,16,30,0.9,-1,-1,-1\n']
    detections = os.path.join(folder, 'cam1', 'det.txt')
    with open(detections, 'w') as f:
        f.writelines(lines)
    return images, detections


@pytest.fixture(scope='module')
def experiment(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('footage')
    csv_path = make_dataset(str(tmp / 'data'))
    root = str(tmp / 'exp')
    assert train.main(base_args(root, csv_path, str(tmp / 'data'), 3)) == 0
    return root


def test_detections_are_read_with_their_lines_and_bad_lines_are_named(tmp_path):
    path = tmp_path / 'det.txt'
    path.write_text('1,4,10.5,20,30,60,0.9,-1,-1,-1\n\n2,-1,1,1,5,5\n')
    first, second = footage.read_detections(str(path))
    assert (first.line, first.frame, first.track, first.box) == (1, 1, 4, (9.5, 19, 30, 60))
    assert (second.line, second.track) == (3, -1)
    for content, message in (
            ('1,2,3,4,5\n', 'line 1: 5 fields where at least 6'),
            ('1,2,3,4,5,6\nx,2,3,4,5,6\n', 'line 2: the frame and id must be integers'),
            ('1.5,2,3,4,5,6\n', 'line 1: the frame and id must be integers'),
            ('0,2,3,4,5,6\n', 'line 1: frame 0 is before the first frame'),
            ('1,2,3,4,0,6\n', r'line 1: the box is 0.0 × 6.0 pixels'),
            ('1,2,3,4,nan,6\n', 'line 1: a number is not finite'),
            ('1,2,3,4,5,6\n1,2,9,9,5,6\n', 'line 2: track 2 is in frame 1 twice .also line 1'),
            ('\n\n', 'holds no detections'),
            (b'1,2,\xff', 'line 1: the line is not UTF-8 text'),
            # Numbers out of their domain: each one message naming the line.
            ('1,2,1e309,4,5,6\n', 'line 1: a number is not finite'),
            ('1,2,3,4,1e308,1e308\n', 'line 1: the box reaches beyond 2147483648 pixels'),
            ('1,2,-1e300,4,5,6\n', 'line 1: the box reaches beyond'),
            ('1,{},3,4,5,6\n'.format(2 ** 63), 'line 1: the frame and id must be below 2..53'),
            ('{},2,3,4,5,6\n'.format(2 ** 64), 'line 1: the frame and id must be below 2..53'),
            ('1,-{},3,4,5,6\n'.format(2 ** 63), 'line 1: the frame and id must be below 2..53'),
            # What no MOT file is: a line longer than any, a field past csv's
            # limit, binary content.
            ('1,2,3,4,5,6\n1,2,3,4,5,6,' + '0' * 2000 + '\n', 'line 2: the line is longer than '
                                                             '1024 bytes'),
            ('1,2,3,4,5,6,' + 'x' * 131073 + '\n', 'line 1: the line is longer than'),
            (b'1,2,3,4,5,6\n\x00\x00\x01\n', 'line 2: the line holds binary content')):
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        with pytest.raises(cli.UserError, match=message):
            footage.read_detections(str(path))


def test_detections_that_are_no_regular_file_are_refused_at_once(tmp_path):
    # /dev/zero never ends; a pipe may not either: refused before a byte is read.
    for path in ('/dev/zero', str(tmp_path)):
        with pytest.raises(cli.UserError, match=r'the detections `{}` is not a regular '
                                                r'file'.format(path)):
            footage.read_detections(path)
    fifo = str(tmp_path / 'fifo')
    os.mkfifo(fifo)
    with pytest.raises(cli.UserError, match='not a regular file'):
        footage.read_detections(fifo)


def test_boxes_are_grown_clipped_and_refused_outside_the_frame():
    assert footage.clip_box((10, 10, 20, 40), (100, 100), 0.0) == (10, 10, 30, 50)
    assert footage.clip_box((10, 10, 20, 40), (100, 100), 0.1) == (8, 6, 32, 54)
    assert footage.clip_box((-5, 90, 20, 40), (100, 100), 0.0) == (0, 90, 15, 100)
    assert footage.clip_box((100, 10, 20, 40), (100, 100), 0.0) is None


def test_embedded_boxes_are_their_crops_embedded_with_camera_frame_track_and_box(
        experiment, tmp_path, capsys):
    frames, detections = make_footage(str(tmp_path))
    assert embed.main(['--experiment_root', experiment, '--frames', frames, '--detections',
                       detections, '--filename', str(tmp_path / 'boxes.h5')]) == 0
    assert 'left out 1 of 14 boxes narrower or lower than --min_box_size 8' in \
        capsys.readouterr().err
    stored = embeddings_file.read(str(tmp_path / 'boxes.h5'))
    assert len(stored.emb) == 13
    assert stored.fids[:3] == ['cam1/000001.png#1', 'cam1/000001.png#2', 'cam1/000002.png#1']
    assert 'cam1/000002.png#line14' in stored.fids
    assert list(stored.fields['camera']) == ['cam1'] * 13
    assert list(stored.fields['frame'][:3]) == [1, 1, 2]
    assert list(stored.fields['track'][:3]) == [1, 2, 1]
    np.testing.assert_array_equal(stored.fields['box'][0], (8, 10, 16, 32))
    # The same crops cut by hand and embedded as images embed alike.
    crops = tmp_path / 'crops'
    crops.mkdir()
    with Image.open(os.path.join(frames, '000001.png')) as image:
        for track in (1, 2):
            left, top, width, height = person_box(track, 1)
            image.crop((left - 1, top - 1, left - 1 + width, top - 1 + height)).save(
                crops / 't{}.png'.format(track))
    assert embed.main(['--experiment_root', experiment, '--images', str(crops), '--filename',
                       str(tmp_path / 'hand.h5'), '--quiet']) == 0
    np.testing.assert_allclose(embeddings_file.read(str(tmp_path / 'hand.h5')).emb,
                               stored.emb[:2], atol=1e-5)


def test_tracklets_combine_each_tracks_boxes_and_evaluate_and_search_take_them(
        experiment, tmp_path, capsys):
    frames, detections = make_footage(str(tmp_path))
    boxes, tracks = str(tmp_path / 'boxes.h5'), str(tmp_path / 'tracks.h5')
    common = ['--experiment_root', experiment, '--frames', frames, '--detections', detections,
              '--quiet']
    assert embed.main(common + ['--filename', boxes]) == 0
    assert embed.main(common + ['--filename', tracks, '--tracklets', 'mean']) == 0
    stored, per_box = embeddings_file.read(tracks), embeddings_file.read(boxes)
    assert stored.fids == ['cam1/track1', 'cam1/track2']
    for row, track in enumerate((1, 2)):
        np.testing.assert_allclose(stored.emb[row], per_box.emb[
            per_box.fields['track'] == track].mean(axis=0), rtol=1e-5)
    assert list(stored.fields['frame']) == [1, 1] and list(stored.fields['last_frame']) == [6, 6]
    assert list(stored.fields['crops']) == [6, 6]
    # Tracks evaluate as images do, from CSVs of identity,name rows: the same
    # footage named as a second camera finds each track of the first.
    other = str(tmp_path / 'cam2_tracks.h5')
    assert embed.main(common + ['--filename', other, '--tracklets', 'mean', '--camera',
                                'cam2']) == 0
    for camera in ('cam1', 'cam2'):
        (tmp_path / '{}.csv'.format(camera)).write_text(
            'a,{0}/track1\nb,{0}/track2\n'.format(camera))
    assert evaluate.main(['--excluder', 'diagonal', '--query_dataset', str(tmp_path / 'cam1.csv'),
                          '--query_embeddings', tracks, '--gallery_dataset',
                          str(tmp_path / 'cam2.csv'), '--gallery_embeddings', other,
                          '--metric', 'euclidean', '--filename', str(tmp_path / 'e.json'),
                          '--quiet']) == 0
    assert json.loads((tmp_path / 'e.json').read_text())['mAP'] == pytest.approx(1.0)
    # Track to track: each track of the first camera finds itself in the second's.
    capsys.readouterr()
    assert search.main(['--gallery', other, '--query_embeddings', tracks, '--top_k', '1',
                        '--output', str(tmp_path / 'found.json')]) == 0
    found = json.loads((tmp_path / 'found.json').read_text())
    assert [(e['query'], e['results'][0]['file']) for e in found] == [
        ('cam1/track1', 'cam2/track1'), ('cam1/track2', 'cam2/track2')]
    for argv, message in ((['--query_embeddings', tracks, '--plot', str(tmp_path / 'p.png')],
                           'leave out --plot and --html'),
                          (['--experiment_root', experiment, '--query', frames, '--plot',
                            str(tmp_path / 'p.png')], 'names are no image files to draw')):
        with pytest.raises((SystemExit, cli.UserError)) as raised:
            search.main(['--gallery', other] + argv)
        text = str(raised.value) if raised.type is cli.UserError else capsys.readouterr().err
        assert message in text
    # And a query image searches the tracks.
    query = tmp_path / 'query.png'
    with Image.open(os.path.join(frames, '000003.png')) as image:
        left, top, width, height = person_box(2, 3)
        image.crop((left - 1, top - 1, left - 1 + width, top - 1 + height)).save(query)
    capsys.readouterr()
    assert search.main(['--experiment_root', experiment, '--gallery', tracks, '--query',
                        str(query), '--top_k', '2']) == 0
    assert 'cam1/track' in capsys.readouterr().out
    # Footage grows as images do, fields and all.
    more = str(tmp_path / 'more.h5')
    assert embed.main(common + ['--filename', more, '--camera', 'cam2']) == 0
    assert search.main(['--gallery', boxes, '--append', more]) == 0
    grown = embeddings_file.read(boxes)
    assert len(grown.emb) == 26 and list(grown.fields['camera']).count('cam2') == 13
    with pytest.raises(cli.UserError, match='holds the fields'):
        search.main(['--gallery', tracks, '--append', str(tmp_path / 'more.h5')])


@pytest.mark.parametrize('damage, message', [
    ('missing_frame', 'line 3: frame 2 has no file in the frames folder'),
    ('outside', 'line 13: the box lies wholly outside frame 6'),
    ('tiny_only', 'every box of .* is smaller than --min_box_size'),
    ('broken_frame', 'cannot decode the frame'),
])
def test_bad_footage_is_one_message_and_writes_nothing(experiment, tmp_path, damage, message):
    frames, detections = make_footage(str(tmp_path))
    if damage == 'missing_frame':
        os.remove(os.path.join(frames, '000002.png'))
    elif damage == 'outside':
        lines = open(detections).read().splitlines(True)
        lines[12] = '6,5,500,500,10,20,1,-1,-1,-1\n'
        open(detections, 'w').writelines(lines)
    elif damage == 'tiny_only':
        open(detections, 'w').write('1,3,5,5,4,4,0.5,-1,-1,-1\n')
    else:
        open(os.path.join(frames, '000004.png'), 'wb').write(b'\x89PNG garbage')
    before = sorted(os.listdir(experiment))
    with pytest.raises(cli.UserError, match=message):
        embed.main(['--experiment_root', experiment, '--frames', frames, '--detections',
                    detections, '--quiet'])
    assert sorted(os.listdir(experiment)) == before


@pytest.mark.parametrize('argv, message', [
    (['--frames', '.'], '--frames needs --detections'),
    (['--images', 'x.jpg', '--tracklets', 'mean'], '--tracklets applies to --frames'),
    (['--images', '.', '--detections', 'det.txt'], '--detections applies to --frames'),
    (['--frames', '.', '--detections', 'd.txt', '--image_root', '.'],
     '--image_root applies to --dataset'),
    # A camera is a name in row names and in the default output's name, never a path.
    (['--frames', '.', '--detections', 'd.txt', '--camera', '../esc'], '`../esc` is no camera'),
    (['--frames', '.', '--detections', 'd.txt', '--camera', '/tmp/x'], '`/tmp/x` is no camera'),
    (['--frames', '.', '--detections', 'd.txt', '--camera', 'cam/2'], '`cam/2` is no camera'),
    (['--frames', '.', '--detections', 'd.txt', '--camera', ''], '`` is no camera'),
    (['--frames', '.', '--detections', 'd.txt', '--camera', '..'], '`..` is no camera'),
])
def test_footage_flags_without_their_input_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as raised:
        embed.main(['--experiment_root', 'x'] + argv)
    assert raised.value.code == 2 and message in capsys.readouterr().err
