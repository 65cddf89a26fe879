"""data/convert_mtmc.py on fake trees of the AI City Challenge's MTMC and
WILDTRACK layouts: each camera's global ground truth, frames and clock."""

import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from triplet_reid import cli
from triplet_reid.data import convert_mtmc
from triplet_reid.inputs.footage import read_boxes
from triplet_reid.inputs.topology import read_topology


def video(path, frames=4, rate=8):
    import av
    with av.open(str(path), 'w') as container:
        stream = container.add_stream('mpeg4', rate=rate)
        stream.width, stream.height, stream.pix_fmt = 64, 48, 'yuv420p'
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 20 * index, np.uint8),
                                               format='rgb24')
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


@pytest.fixture
def aicity(tmp_path):
    root = tmp_path / 'AIC21_Track3_MTMC_Tracking'
    for camera, lines in (('c001', '1,3,10,20,30,40,1,-1,-1,-1\n2,3,12,20,30,40,1,-1,-1,-1\n'),
                          ('c002', '5,3,100,20,30,40,1,-1,-1,-1\n')):
        (root / 'train' / 'S01' / camera / 'gt').mkdir(parents=True)
        (root / 'train' / 'S01' / camera / 'gt' / 'gt.txt').write_text(lines)
    video(root / 'train' / 'S01' / 'c001' / 'vdo.avi')
    (root / 'train' / 'S01' / 'c002' / 'vdo.avi').write_bytes(b'not a video')
    (root / 'cam_timestamp').mkdir()
    (root / 'cam_timestamp' / 'S01.txt').write_text('c001 0\nc002 1.640\n')
    return root


def test_an_ai_city_scenario_gives_each_camera_its_truth_and_clock(aicity, tmp_path):
    out = tmp_path / 'out'
    assert convert_mtmc.main(['aicity', '--dataset_root', str(aicity), '--scenario',
                              'train/S01', '--output_dir', str(out)]) == 0
    rows = list(csv.reader(open(out / 'cameras.csv')))
    assert rows[0] == ['camera', 'frames', 'ground_truth'] and [r[0] for r in rows[1:]] == [
        'c001', 'c002']
    assert rows[1][1] == str(aicity / 'train' / 'S01' / 'c001' / 'vdo.avi')
    truth = read_boxes(str(out / 'c001' / 'gt' / 'gt.txt'))
    assert truth.ids.tolist() == [3, 3] and truth.boxes[1].tolist() == [11, 19, 30, 40]
    topology = read_topology(str(out / 'topology.json'))
    # The video's own rate, and AI City's 10 where the video cannot be read.
    assert topology.cameras == {'c001': (8.0, 0.0), 'c002': (10.0, 1.64)}
    assert topology.links is None
    np.testing.assert_allclose(topology.times('c002', np.array([1, 11])), [1.64, 2.64])
    # An earlier output of its own is replaced with --force only.
    with pytest.raises(cli.UserError, match='exists already; use --force'):
        convert_mtmc.main(['aicity', '--dataset_root', str(aicity), '--scenario', 'train/S01',
                           '--output_dir', str(out)])
    assert convert_mtmc.main(['aicity', '--dataset_root', str(aicity), '--scenario',
                              'train/S01', '--output_dir', str(out), '--force']) == 0


@pytest.mark.parametrize('damage, match', [
    (lambda root: (root / 'cam_timestamp' / 'S01.txt').write_text('c001 0\n'),
     r'S01\.txt` gives no start of camera `c002`'),
    (lambda root: (root / 'cam_timestamp' / 'S01.txt').write_text('c001 soon\n'),
     r'S01\.txt` line 1: `c001 soon` is not `CAMERA SECONDS`'),
    (lambda root: os.remove(root / 'train' / 'S01' / 'c002' / 'gt' / 'gt.txt'),
     r'camera `c002` of .* has no gt/gt\.txt'),
    (lambda root: (root / 'train' / 'S01' / 'c002' / 'gt' / 'gt.txt').write_text(
        '1,-1,1,1,5,5\n'), r'gt\.txt` line 1: the box has the id -1'),
])
def test_bad_ai_city_trees_get_one_message_and_write_nothing(aicity, tmp_path, damage, match):
    damage(aicity)
    with pytest.raises(cli.UserError, match=match):
        convert_mtmc.main(['aicity', '--dataset_root', str(aicity), '--scenario', 'train/S01',
                           '--output_dir', str(tmp_path / 'out')])
    assert not os.path.exists(tmp_path / 'out')


@pytest.fixture
def wildtrack(tmp_path):
    root = tmp_path / 'Wildtrack_dataset'
    for camera in ('C1', 'C2', 'C3'):
        (root / 'Image_subsets' / camera).mkdir(parents=True)
        for number in (0, 5):
            Image.new('RGB', (80, 60)).save(root / 'Image_subsets' / camera /
                                            '{:08d}.png'.format(number))
    (root / 'annotations_positions').mkdir()
    unseen = {'xmin': -1, 'ymin': -1, 'xmax': -1, 'ymax': -1}
    for number, left in ((0, 10), (5, 14)):
        people = [{'personID': 7, 'positionID': 100, 'views': [
            dict(viewNum=0, xmin=left, ymin=5, xmax=left + 20, ymax=45),
            dict(viewNum=1, **unseen), dict(viewNum=2, xmin=30, ymin=8, xmax=50, ymax=58)]}]
        (root / 'annotations_positions' / '{:08d}.json'.format(number)).write_text(
            json.dumps(people))
    return root


def test_wildtrack_gives_its_seven_views_one_clock_and_their_overlaps(wildtrack, tmp_path):
    out = tmp_path / 'out'
    assert convert_mtmc.main(['wildtrack', '--dataset_root', str(wildtrack), '--output_dir',
                              str(out)]) == 0
    truth = read_boxes(str(out / 'C1' / 'gt' / 'gt.txt'))
    # Annotated frames 0 and 5 are MOT's frames 1 and 2; C2 never saw the person.
    assert truth.frames.tolist() == [1, 2] and truth.ids.tolist() == [7, 7]
    assert truth.boxes[1].tolist() == [14, 5, 20, 40]
    assert (out / 'C2' / 'gt' / 'gt.txt').read_text() == ''
    assert os.path.realpath(out / 'C1' / 'img1' / '000002.png') == str(
        wildtrack / 'Image_subsets' / 'C1' / '00000005.png')
    topology = read_topology(str(out / 'topology.json'))
    assert topology.clock == 'frames' and topology.together('C3', 'C1')
    assert [r[1] for r in csv.reader(open(out / 'cameras.csv'))][1:] == [
        os.path.join('C1', 'img1'), os.path.join('C2', 'img1'), os.path.join('C3', 'img1')]


def test_bad_wildtrack_trees_get_one_message_and_write_nothing(wildtrack, tmp_path):
    path = wildtrack / 'annotations_positions' / '00000005.json'
    path.write_text(json.dumps([{'personID': 7, 'views': [
        dict(viewNum=0, xmin=30, ymin=5, xmax=10, ymax=45)]}]))
    with pytest.raises(cli.UserError, match=r'00000005\.json` person 0: not'):
        convert_mtmc.main(['wildtrack', '--dataset_root', str(wildtrack), '--output_dir',
                           str(tmp_path / 'out')])
    path.write_text('{"personID": 7}')
    with pytest.raises(cli.UserError, match=r'00000005\.json` is corrupt \(not a JSON list\)'):
        convert_mtmc.main(['wildtrack', '--dataset_root', str(wildtrack), '--output_dir',
                           str(tmp_path / 'out')])
    path.write_text('[]')
    os.remove(wildtrack / 'Image_subsets' / 'C2' / '00000005.png')
    with pytest.raises(cli.UserError, match=r'camera C2 has no image of annotated frame 5'):
        convert_mtmc.main(['wildtrack', '--dataset_root', str(wildtrack), '--output_dir',
                           str(tmp_path / 'out')])
    assert not os.path.exists(tmp_path / 'out')


@pytest.fixture
def epfl(tmp_path):
    """EPFL's videos in one folder, its ground truth in another, as they
    are downloaded: person 0 in frames 0 and 1 of c0 (lost, so outside the
    view, in frame 2) and frame 1 of c1."""
    root = tmp_path / 'epfl'
    (root / 'videos').mkdir(parents=True)
    (root / 'ground_truth' / 'Terrace').mkdir(parents=True)
    for camera in ('c0', 'c1'):
        video(root / 'videos' / 'terrace1-{}.avi'.format(camera), frames=3, rate=25)
    (root / 'ground_truth' / 'Terrace' / 'terrace1-c0.txt').write_text(
        '0 10 20 40 100 0 0 0 0 "PERSON"\n0 12 20 42 100 1 0 1 1 "PERSON"\n'
        '0 -1 -1 -1 -1 2 1 0 0 "PERSON"\n')
    (root / 'ground_truth' / 'Terrace' / 'terrace1-c1.txt').write_text(
        '0 100 30 130 90 1 0 0 0 "PERSON"\n')
    # Another sequence's files are not this one's.
    (root / 'ground_truth' / 'Terrace' / 'terrace2-c0.txt').write_text('broken\n')
    return root


def test_an_epfl_sequence_gives_each_camera_its_video_truth_and_one_clock(epfl, tmp_path):
    out = tmp_path / 'out'
    assert convert_mtmc.main(['epfl', '--dataset_root', str(epfl), '--sequence', 'terrace1',
                              '--output_dir', str(out)]) == 0
    rows = list(csv.reader(open(out / 'cameras.csv')))
    assert rows[1:] == [['c0', str(epfl / 'videos' / 'terrace1-c0.avi'),
                         os.path.join('c0', 'gt', 'gt.txt')],
                        ['c1', str(epfl / 'videos' / 'terrace1-c1.avi'),
                         os.path.join('c1', 'gt', 'gt.txt')]]
    # EPFL's frame 0 is MOT's (and embed.py's video) frame 1; corners become
    # left, top, width and height; the lost box is left out, the occluded kept.
    truth = read_boxes(str(out / 'c0' / 'gt' / 'gt.txt'))
    assert truth.frames.tolist() == [1, 2] and truth.ids.tolist() == [0, 0]
    assert truth.boxes.tolist() == [[10, 20, 30, 80], [12, 20, 30, 80]]
    assert read_boxes(str(out / 'c1' / 'gt' / 'gt.txt')).frames.tolist() == [2]
    topology = read_topology(str(out / 'topology.json'))
    assert topology.clock == 'frames' and topology.together('c1', 'c0')


@pytest.mark.parametrize('damage, match', [
    (lambda root: (root / 'ground_truth' / 'Terrace' / 'terrace1-c1.txt').write_text(
        '0 100 30 90 90 1 0 0 0 "PERSON"\n'), r'terrace1-c1\.txt` line 1: `0 100 30 90 90 1 0 0 '
     r'0 "PERSON"` is not `ID XMIN YMIN XMAX YMAX FRAME LOST OCCLUDED GENERATED LABEL`'),
    (lambda root: (root / 'ground_truth' / 'Terrace' / 'terrace1-c1.txt').write_text(
        '0 100 30 130 90 1.5 0 0 0\n'), r'terrace1-c1\.txt` line 1'),
    (lambda root: (root / 'ground_truth' / 'Terrace' / 'terrace1-c1.txt').write_text(
        '0 100 30 130 90 1 0 0 0\n0 100 31 130 90 1 0 0 0\n'),
     r'terrace1-c1\.txt` line 2: person 0 is in frame 1 twice \(also line 1\)'),
    (lambda root: (root / 'ground_truth' / 'Terrace' / 'terrace1-c1.txt').write_bytes(
        b'\x00\x01'), r'terrace1-c1\.txt` line 1: the line holds binary content \(a NUL '
     r'byte\); EPFL\'s ground truth is text, a line `ID XMIN'),
    (lambda root: os.remove(root / 'videos' / 'terrace1-c1.avi'),
     r'holds no video of camera c1 of `terrace1` \(terrace1-c1\.avi\)'),
    (lambda root: (root / 'terrace1-c0.txt').write_text(''),
     r'terrace1-c0\.txt` and `.*terrace1-c0\.txt` are both camera c0 of terrace1'),
])
def test_bad_epfl_trees_get_one_message_and_write_nothing(epfl, tmp_path, damage, match):
    damage(epfl)
    with pytest.raises(cli.UserError, match=match):
        convert_mtmc.main(['epfl', '--dataset_root', str(epfl), '--sequence', 'terrace1',
                           '--output_dir', str(tmp_path / 'out')])
    assert not os.path.exists(tmp_path / 'out')


def test_an_unknown_epfl_sequence_is_named(epfl, tmp_path):
    with pytest.raises(cli.UserError, match=r'holds no ground truth of `terrace9` '
                       r'\(terrace9-c0\.txt, …\)'):
        convert_mtmc.main(['epfl', '--dataset_root', str(epfl), '--sequence', 'terrace9',
                           '--output_dir', str(tmp_path / 'out')])


@pytest.fixture
def mmptracking(tmp_path):
    """One MMPTracking scene of two cameras and two frames, unpacked: person
    3 in both cameras, person 4 in camera 2's frame 1 only."""
    root = tmp_path / 'MMPTracking_validation' / 'validation'
    images, labels = root / 'images' / '64pm' / 'lobby_0', root / 'labels' / '64pm' / 'lobby_0'
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    people = {(0, 1): {'3': [10, 5, 30, 45]}, (1, 1): {'3': [12, 5, 32, 45]},
              (0, 2): {'3': [50, 8, 70, 58]}, (1, 2): {'3': [52, 8, 72, 58], '4': [1, 1, 9, 21]}}
    for (frame, camera), boxes in people.items():
        Image.new('RGB', (80, 60)).save(images / 'rgb_{:05d}_{}.jpg'.format(frame, camera))
        (labels / 'rgb_{:05d}_{}.json'.format(frame, camera)).write_text(json.dumps(boxes))
    return root


def test_an_mmptracking_scene_gives_each_camera_its_frames_truth_and_one_clock(
        mmptracking, tmp_path):
    out = tmp_path / 'out'
    assert convert_mtmc.main(['mmptracking', '--dataset_root', str(mmptracking), '--scene',
                              '64pm/lobby_0', '--output_dir', str(out)]) == 0
    assert [r[:2] for r in csv.reader(open(out / 'cameras.csv'))][1:] == [
        ['c1', os.path.join('c1', 'img1')], ['c2', os.path.join('c2', 'img1')]]
    assert os.path.realpath(out / 'c2' / 'img1' / '000002.jpg') == str(
        mmptracking / 'images' / '64pm' / 'lobby_0' / 'rgb_00001_2.jpg')
    truth = read_boxes(str(out / 'c2' / 'gt' / 'gt.txt'))
    assert truth.frames.tolist() == [1, 2, 2] and truth.ids.tolist() == [3, 3, 4]
    assert truth.boxes.tolist() == [[50, 8, 20, 50], [52, 8, 20, 50], [1, 1, 8, 20]]
    topology = read_topology(str(out / 'topology.json'))
    assert topology.clock == 'frames' and topology.together('c1', 'c2')


@pytest.mark.parametrize('damage, match', [
    (lambda labels, images: (labels / 'rgb_00001_2.json').write_text('{"4": [9, 1, 1, 21]}'),
     r'rgb_00001_2\.json` person `4`: not `"ID": \[XMIN, YMIN, XMAX, YMAX\]`'),
    (lambda labels, images: (labels / 'rgb_00001_2.json').write_text('{"x": [1, 1, 9, 21]}'),
     r'rgb_00001_2\.json` person `x`'),
    (lambda labels, images: (labels / 'rgb_00001_2.json').write_text('[1, 2]'),
     r'rgb_00001_2\.json` is corrupt \(not a JSON object\)'),
    (lambda labels, images: os.remove(images / 'rgb_00001_2.jpg'),
     r'camera c2 has no image of labelled frame 1'),
])
def test_bad_mmptracking_trees_get_one_message_and_write_nothing(mmptracking, tmp_path, damage,
                                                                  match):
    damage(mmptracking / 'labels' / '64pm' / 'lobby_0',
           mmptracking / 'images' / '64pm' / 'lobby_0')
    with pytest.raises(cli.UserError, match=match):
        convert_mtmc.main(['mmptracking', '--dataset_root', str(mmptracking), '--scene',
                           '64pm/lobby_0', '--output_dir', str(tmp_path / 'out')])
    assert not os.path.exists(tmp_path / 'out')


def test_a_packed_mmptracking_scene_is_to_be_unpacked(mmptracking, tmp_path):
    (mmptracking / 'images' / '64pm' / 'lobby_1.zip').write_bytes(b'PK')
    with pytest.raises(cli.UserError, match=r'lobby_1\.zip` is not unpacked; unzip it'):
        convert_mtmc.main(['mmptracking', '--dataset_root', str(mmptracking), '--scene',
                           '64pm/lobby_1', '--output_dir', str(tmp_path / 'out')])
    with pytest.raises(cli.UserError, match=r'lobby_2` is not a folder; give --scene'):
        convert_mtmc.main(['mmptracking', '--dataset_root', str(mmptracking), '--scene',
                           '64pm/lobby_2', '--output_dir', str(tmp_path / 'out')])
