"""data/make_footage.py, made small: frames, MOT boxes and CSVs that agree
with each other and that embed.py --frames reads."""

import os

import pytest
from PIL import Image

from triplet_reid import cli
from triplet_reid.inputs import footage
from triplet_reid.data import footage_crops, make_demo, make_footage
from triplet_reid.inputs import unlabelled


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    output = tmp_path_factory.mktemp('demo') / 'demo'
    assert make_demo.main(['--output', str(output), '--train_ids', '2', '--test_ids', '6',
                           '--distractors', '1', '--junk', '1', '--val_ids', '1']) == 0
    return str(output)


def test_footage_frames_boxes_and_csvs_agree(demo, tmp_path):
    output = tmp_path / 'footage'
    assert make_footage.main(['--demo', demo, '--output', str(output), '--cameras', '2',
                              '--frames', '5', '--people', '3']) == 0
    cameras = sorted(name for name in os.listdir(output) if name.startswith('cam'))
    assert len(cameras) == 2
    for camera in cameras:
        frames = footage.frame_files(str(output / camera / 'img1'))
        assert sorted(frames) == [1, 2, 3, 4, 5]
        detections = footage.read_detections(str(output / camera / 'gt' / 'gt.txt'))
        for detection in detections:
            with Image.open(frames[detection.frame]) as image:
                assert footage.clip_box(detection.box, image.size, 0) is not None
        boxes = (output / camera / 'boxes.csv').read_text().splitlines()
        tracks = (output / camera / 'tracks.csv').read_text().splitlines()
        assert len(boxes) == len(detections) and 1 <= len(tracks) <= 3
        names = ['{}/{:06d}.jpg#{}'.format(camera, d.frame, d.track) for d in detections]
        assert [row.split(',')[1] for row in boxes] == names
        # A track is one person throughout.
        person = {row.split(',')[1].split('track')[1]: row.split(',')[0] for row in tracks}
        for row, detection in zip(boxes, detections):
            assert row.split(',')[0] == person[str(detection.track)]


def test_a_folder_that_is_not_the_demo_set_is_refused(tmp_path):
    with pytest.raises(cli.UserError, match='is not the demo set'):
        make_footage.main(['--demo', str(tmp_path), '--output', str(tmp_path / 'out')])
    assert os.listdir(tmp_path) == []


def test_footage_crops_give_train_py_tracks_frames_and_identities(demo, tmp_path):
    output, crops = tmp_path / 'footage', tmp_path / 'crops'
    assert make_footage.main(['--demo', demo, '--output', str(output), '--cameras', '2',
                              '--frames', '5', '--people', '3']) == 0
    assert footage_crops.main(['--footage', str(output), '--output', str(crops)]) == 0
    read = unlabelled.read_crops(str(crops / 'crops.csv'), str(crops))
    boxes = [row.split(',') for camera in ('cam1', 'cam2')
             for row in (output / camera / 'boxes.csv').read_text().splitlines()]
    assert len(read.fids) == len(boxes)
    for fid, camera, track, frame, identity in zip(read.fids, read.cameras, read.tracks,
                                                   read.frames, read.identities):
        assert os.path.isfile(crops / fid) and fid.startswith(camera + '/')
        assert [identity, '{}/{:06d}.jpg#{}'.format(camera, frame, track)] in boxes
    # A second run refuses to overwrite, and nothing but the crops and the CSV is written.
    with pytest.raises(cli.UserError):
        footage_crops.main(['--footage', str(output), '--output', str(crops)])
    with pytest.raises(cli.UserError, match='holds no camera folder'):
        footage_crops.main(['--footage', str(tmp_path / 'crops'), '--output',
                            str(tmp_path / 'other')])
    assert not os.path.exists(tmp_path / 'other')


def test_video_demo_tracklets_and_footage_videos(demo, tmp_path):
    from triplet_reid.data import make_video_demo
    from triplet_reid.inputs import tracklets
    output = tmp_path / 'video_demo'
    assert make_video_demo.main(['--demo', demo, '--output', str(output), '--frames', '4',
                                 '--people', '2', '--sessions', '3']) == 0
    train = tracklets.read_tracklets(str(output / 'video_train.csv'), str(output))
    query = tracklets.read_tracklets(str(output / 'video_query.csv'), str(output))
    gallery = tracklets.read_tracklets(str(output / 'video_test.csv'), str(output))
    assert set(train.identities) <= {'0001', '0002'} and len(train.names) >= 2
    assert not set(train.identities) & set(gallery.identities)
    # Every query has its identity in another camera of the gallery.
    for identity, camera in zip(query.identities, query.cameras):
        assert any(i == identity and c != camera
                   for i, c in zip(gallery.identities, gallery.cameras))
    assert not set(query.names) & set(gallery.names)
    # make_footage --video: the H.264 video holds the frames, frame for frame.
    import av
    footage_dir = tmp_path / 'footage'
    assert make_footage.main(['--demo', demo, '--output', str(footage_dir), '--cameras', '1',
                              '--frames', '5', '--people', '2', '--video']) == 0
    camera = [n for n in sorted(os.listdir(footage_dir)) if n.startswith('cam')][0]
    with av.open(str(footage_dir / camera / 'video.mp4')) as container:
        assert sum(1 for _ in container.decode(video=0)) == 5


def test_a_camera_network_walks_people_along_its_links_on_one_clock(demo, tmp_path):
    from triplet_reid.inputs.topology import read_topology
    output = tmp_path / 'network'
    assert make_footage.main(['--demo', demo, '--output', str(output), '--cameras', '4',
                              '--frames', '150', '--people', '6', '--network']) == 0
    topology = read_topology(str(output / 'topology.json'))
    assert sorted(topology.links)[:2] == [('cam1', 'cam2'), ('cam1', 'cam4')]
    visits = {}
    for camera in sorted(name for name in os.listdir(output) if name.startswith('cam')):
        if not (output / camera / 'tracks.txt').read_text():
            continue  # No one walked into it.
        truth = footage.read_detections(str(output / camera / 'gt' / 'gt.txt'))
        tracks = footage.read_detections(str(output / camera / 'tracks.txt'))
        assert [(d.frame, d.box) for d in truth] == [(d.frame, d.box) for d in tracks]
        person = {int(row.split(',')[1].split('track')[1]): int(row.split(',')[0])
                  for row in (output / camera / 'tracks.csv').read_text().splitlines()}
        # gt.txt holds each box's global identity, tracks.txt its track in the camera.
        assert all(person[t.track] == g.track for g, t in zip(truth, tracks))
        for track in {t.track for t in tracks}:
            frames = [t.frame for t in tracks if t.track == track]
            visits.setdefault(person[track], []).append((min(frames), max(frames), camera))
    assert any(len({camera for *_, camera in v}) > 1 for v in visits.values())
    for walk in visits.values():
        walk.sort()
        for (_, end, camera), (start, _, other) in zip(walk, walk[1:]):
            # One camera at a time, and along a link in its time (the visible
            # boxes start and end within the walk's).
            assert start > end
            if camera != other:
                assert (camera, other) in topology.links
                assert start - end >= topology.links[camera, other][0]
