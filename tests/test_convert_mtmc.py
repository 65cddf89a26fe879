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
