"""Video re-id: tracklet CSVs, the P×K×T sampler, the temporal plug-ins,
training on tracklets, embedding and evaluating them (the MARS protocol),
and video files in the footage path."""

import collections
import json
import os

import h5py
import numpy as np
import pytest
from PIL import Image

from triplet_reid import cli
from triplet_reid import embed
from triplet_reid import evaluate
from triplet_reid import temporal
from triplet_reid import train
from conftest import base_args, logged_iterations, make_dataset
from triplet_reid.excluders import tracklets as tracklet_excluder
from triplet_reid.inputs import footage, sampler, tracklets
from triplet_reid.inputs.images import Preprocessing

HEADER = 'identity,camera,track,frame,path\n'


def make_tracklet_set(root, name, num_ids=6, cameras=2, frames=5, size=(32, 16), seed=0):
    """A tracklet CSV `root/name.csv`: each identity is a two-colour figure
    seen by `cameras` cameras, one tracklet each of `frames` noisy frames,
    written in shuffled row order (the reader orders them by frame)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(num_ids):
        pid = '{:04d}'.format(i + 1 + seed * 100)
        top, bottom = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        for camera in range(1, cameras + 1):
            for frame in range(1, frames + 1):
                image = rng.uniform(0, 255, size + (3,))
                h = size[0]
                image[h // 8:h // 2, 3:-3] = top + rng.normal(0, 20, 3)
                image[h // 2:h - h // 8, 3:-3] = bottom + rng.normal(0, 20, 3)
                path = '{}/{}/c{}/{:03d}.png'.format(name, pid, camera, frame)
                os.makedirs(os.path.dirname(os.path.join(root, path)), exist_ok=True)
                Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
                    os.path.join(root, path))
                rows.append('{},c{},t{},{},{}\n'.format(pid, camera, camera, frame, path))
    order = rng.permutation(len(rows))
    csv_path = os.path.join(root, name + '.csv')
    with open(csv_path, 'w') as f:
        f.write(HEADER + ''.join(rows[i] for i in order))
    return csv_path


@pytest.fixture(scope='module')
def video_set(tmp_path_factory):
    """(root, train CSV, query CSV, gallery CSV): 6 training identities, and
    4 test identities whose camera-1 tracklets are the queries."""
    root = str(tmp_path_factory.mktemp('video'))
    train_csv = make_tracklet_set(root, 'train')
    test_csv = make_tracklet_set(root, 'test', num_ids=4, seed=1)
    lines = open(test_csv).read().splitlines(True)[1:]
    paths = {}
    for camera, name in (('c1', 'query'), ('c2', 'gallery')):
        paths[name] = os.path.join(root, name + '.csv')
        with open(paths[name], 'w') as f:
            f.write(HEADER + ''.join(line for line in lines if line.split(',')[1] == camera))
    return root, train_csv, paths['query'], paths['gallery']


def video_args(root, train_csv, image_root, iterations, *extra):
    return base_args(root, train_csv, image_root, iterations, '--batch_p', '3', '--batch_k', '2',
                     '--seq_len', '3', *extra)


@pytest.fixture(scope='module')
def video_experiment(video_set, tmp_path_factory):
    root, train_csv, _, _ = video_set
    experiment = str(tmp_path_factory.mktemp('vexp') / 'exp')
    assert train.main(video_args(experiment, train_csv, root, 40, '--temporal_pooling',
                                 'attention')) == 0
    return experiment


# Tracklet CSVs.
###

def test_tracklets_group_rows_by_identity_camera_and_track_in_frame_order(tmp_path):
    (tmp_path / 'set.csv').write_text(
        'path,identity,camera,track,frame\n'
        'b/2.jpg,7,c1,1,2\n'
        'a/1.jpg,3,c2,9,1\n'
        'b/1.jpg,7,c1,1,1\n'
        'c/1.jpg,7,c2,1,5\n')
    found = tracklets.read_tracklets(str(tmp_path / 'set.csv'))
    assert list(found.names) == ['7/c1/1', '3/c2/9', '7/c2/1']
    assert list(found.identities) == ['7', '3', '7'] and list(found.cameras) == ['c1', 'c2', 'c2']
    assert list(found.bounds) == [0, 2, 3, 4]
    assert list(found.fids) == ['b/1.jpg', 'b/2.jpg', 'a/1.jpg', 'c/1.jpg']
    kept = found.subset(np.array([False, True, False, True]))
    assert list(kept.names) == ['7/c1/1', '7/c2/1'] and list(kept.bounds) == [0, 1, 2]
    assert tracklets.labelled_set(str(tmp_path / 'set.csv'))[1].tolist() == list(found.names)


@pytest.mark.parametrize('text, message', [
    ('identity,path\n1,a.jpg\n', 'lacks camera, track'),
    ('path,identity,camera,track\na.jpg,1,c1,\n', 'line 2: the track `` is empty'),
    ('path,identity,camera,track\na.jpg,1/2,c1,1\n', 'the identity `1/2` is not a plain name'),
    ('path,identity,camera,track,frame\na.jpg,1,c1,1,3\nb.jpg,1,c1,1,3\n',
     'lines 2 and 3: tracklet `1/c1/1` has two rows of frame 3'),
    ('path,identity,camera,track,frame\na.jpg,1,c1,1,x\n', 'the frame `x` is not an integer'),
    ('path,identity,camera,track\n/etc/passwd,1,c1,1\n', 'is not a path relative'),
])
def test_bad_tracklet_csvs_are_one_message(tmp_path, text, message):
    (tmp_path / 'bad.csv').write_text(text)
    with pytest.raises(cli.UserError, match=message):
        tracklets.read_tracklets(str(tmp_path / 'bad.csv'))


# The P×K×T sampler.
###

def test_frame_choices():
    def chosen(count, sampling, seed=(1, 2)):
        return sampler.choose_frames(np.int64(count), 4, sampling, np.array(seed)).numpy()
    assert chosen(10, 'evenly').tolist() == [1, 3, 6, 8]
    assert chosen(2, 'evenly').tolist() == [0, 0, 1, 1]
    for seed in range(20):
        chunk = chosen(10, 'chunk', (seed, 0))
        assert np.all(np.diff(chunk) == 1) and 0 <= chunk[0] <= 6
        drawn = chosen(10, 'random', (seed, 0))
        assert np.all(np.diff(drawn) > 0) and drawn.max() < 10
    assert chosen(2, 'chunk').tolist() == [0, 1, 1, 1]
    assert sorted(collections.Counter(chosen(2, 'random').tolist()).values()) == [2, 2]


def test_pkt_batches_hold_p_identities_k_tracklets_t_frames_and_resume(video_set):
    root, train_csv, _, _ = video_set
    found = tracklets.read_tracklets(train_csv, root)
    frame_tracklet = dict(zip(found.fids, found.frame_tracklets()))
    options = dict(batch_p=3, batch_k=2, seq_len=4, frame_sampling='random', seed=5,
                   loading_threads=2)
    dataset = sampler.pkt_dataset(found, root, Preprocessing((32, 16)), **options)
    batches = [tuple(t.numpy() for t in batch) for batch in dataset.take(4)]
    for images, fids, pids, labels in batches:
        assert images.shape == (3 * 2 * 4, 32, 16, 3)
        assert fids.shape == pids.shape == labels.shape == (6,)
        # P identities, K tracklets of each, consecutive.
        assert len(set(pids.tolist())) == 3 and np.all(pids[::2] == pids[1::2])
        owners = [frame_tracklet[f.decode()] for f in fids]
        assert all(found.identities[t] == p.decode() for t, p in zip(owners, pids))
    # The T frames of each tracklet come from it: its images match its frames.
    frames = sampler.pkt_dataset(found, root, Preprocessing((32, 16)), **options)
    resumed = sampler.pkt_dataset(found, root, Preprocessing((32, 16)), start_step=2, **options)
    for (a, *_), (b, *_) in zip(list(frames.skip(2).take(2)), list(resumed.take(2))):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


# Temporal aggregation against NumPy.
###

@pytest.mark.parametrize('name', temporal.TEMPORAL_CHOICES)
def test_temporal_plugins_against_numpy(name):
    frames = np.random.default_rng(0).normal(size=(3, 5, 4)).astype(np.float32)
    layer = temporal.load(name)
    layer.build((None, None, 4))
    if name == 'attention':
        kernel, bias = np.array([[0.5], [-1.0], [2.0], [0.0]], np.float32), np.float32(0.3)
        layer.set_weights([kernel, np.array([bias])])
        scores = frames @ kernel + bias
        weights = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
        expected = (weights * frames).sum(axis=1)
    else:
        expected = {'avg': np.mean, 'max': np.max}[name](frames, axis=1)
    np.testing.assert_allclose(layer(frames).numpy(), expected, rtol=1e-5, atol=1e-6)


# The MARS protocol.
###

def test_tracklet_excluder_is_the_mars_protocol_by_hand(tmp_path):
    """One query, 1/ca; the gallery: itself in its camera (ignored), a
    match in camera b, a junk tracklet (ignored), a distractor 0000 and
    another identity. Ranked by distance: junk, same-camera, distractor,
    match, other: AP = 1/2, top-1 wrong, top-2 right."""
    query = ['1/ca/t1']
    gallery = ['-1/cb/t5', '1/ca/t2', '0000/cb/t3', '1/cb/t4', '2/cb/t6']
    mask = tracklet_excluder.excluder(query, gallery)(np.array([0]))
    assert mask.tolist() == [[True, True, False, False, False]]
    for name, names, pids in (('q', query, ['1']), ('g', gallery, ['-1', '1', '0000', '1', '2'])):
        with open(str(tmp_path / (name + '.csv')), 'w') as f:
            f.write('path,identity,camera,track\n' + ''.join(
                '{}.png,{},{},{}\n'.format(n.replace('/', '_'), *n.split('/'))
                for n, pid in zip(names, pids)))
        embs = np.zeros((len(names), 2), np.float32)
        if name == 'g':
            embs[:, 0] = [0.1, 0.2, 0.3, 0.4, 0.5]
        with h5py.File(str(tmp_path / (name + '.h5')), 'w') as f:
            f['emb'] = embs
            f['fids'] = np.array(names, dtype=object)
    result = str(tmp_path / 'result.json')
    assert evaluate.main(['--excluder', 'tracklets', '--metric', 'euclidean',
                          '--query_dataset', str(tmp_path / 'q.csv'),
                          '--query_embeddings', str(tmp_path / 'q.h5'),
                          '--gallery_dataset', str(tmp_path / 'g.csv'),
                          '--gallery_embeddings', str(tmp_path / 'g.h5'),
                          '--filename', result, '--quiet']) == 0
    figures = json.load(open(result))
    assert figures['mAP'] == pytest.approx(0.5) and figures['CMC'][:2] == [0.0, 1.0]
    with pytest.raises(cli.UserError, match='is not a tracklet name'):
        tracklet_excluder.excluder(['a_c1s1.jpg'], gallery)


# Training on tracklets, embedding and evaluating them.
###

def test_video_training_learns_and_its_tracklets_evaluate(video_experiment, video_set):
    root, _, query, gallery = video_set
    losses = [avg for _, avg in logged_iterations(video_experiment)]
    assert len(losses) == 40 and np.mean(losses[-5:]) < np.mean(losses[:5]), losses
    stored = json.load(open(os.path.join(video_experiment, 'args.json')))
    assert stored['seq_len'] == 3 and stored['temporal_pooling'] == 'attention'
    for csv_path in (query, gallery):
        assert embed.main(['--experiment_root', video_experiment, '--dataset', csv_path,
                           '--image_root', root, '--quiet']) == 0
    names = {os.path.basename(p)[:-4]: p for p in (query, gallery)}
    files = {n: os.path.join(video_experiment, n + '_embeddings.h5') for n in names}
    with h5py.File(files['query'], 'r') as f:
        assert f['emb'].shape == (4, 16)
        assert sorted(n.decode() for n in f['fids'][:]) == [
            '0101/c1/t1', '0102/c1/t1', '0103/c1/t1', '0104/c1/t1']
        assert list(f['crops'][:]) == [5] * 4
    result = os.path.join(video_experiment, 'video_eval.json')
    assert evaluate.main(['--excluder', 'tracklets', '--metric', 'euclidean',
                          '--query_dataset', query, '--query_embeddings', files['query'],
                          '--gallery_dataset', gallery, '--gallery_embeddings', files['gallery'],
                          '--filename', result, '--quiet']) == 0
    assert json.load(open(result))['mAP'] > 0.5


def test_a_tracklet_embedding_is_its_frames_combined(video_experiment, video_set):
    """embed.py's tracklet embedding equals the attention over the embeddings
    of its frames, embedded one by one as images."""
    root, _, query, _ = video_set
    from triplet_reid.models.inference import embed_files, load_video_experiment
    (model, _, layer), train_args, _ = load_video_experiment(video_experiment)
    # The attention learnt (it starts at zero, the average) and was checkpointed.
    assert np.abs(layer.get_weights()[0]).max() > 0
    found = tracklets.read_tracklets(query, root)
    frames, _, _ = embed_files(model, train_args, found.fids[:5], root)
    expected = layer(frames[None]).numpy()[0]
    assert embed.main(['--experiment_root', video_experiment, '--dataset', query,
                       '--image_root', root, '--filename', 'combined.h5', '--quiet']) == 0
    with h5py.File(os.path.join(video_experiment, 'combined.h5'), 'r') as f:
        assert f['fids'][0].decode() == found.names[0]
        np.testing.assert_allclose(f['emb'][0], expected, rtol=1e-4, atol=1e-5)


def test_video_training_resumes_exactly(video_set, tmp_path, interrupt_at):
    root, train_csv, _, _ = video_set
    straight, resumed = str(tmp_path / 'a'), str(tmp_path / 'b')
    extra = ('--detailed_logs', '--frame_sampling', 'chunk', '--temporal_position', 'features',
             '--head_name', 'bnneck', '--id_loss_weight', '1')
    assert train.main(video_args(straight, train_csv, root, 8, *extra)) == 0
    interrupt_at(4)
    assert train.main(video_args(resumed, train_csv, root, 8, *extra)) == 0
    assert train.main(['--experiment_root', resumed, '--resume']) == 0
    shape = json.load(open(os.path.join(straight, 'fids.json')))
    a, b = (np.memmap(os.path.join(r, 'fids'), shape['dtype'], 'r', shape=tuple(shape['shape']))
            for r in (straight, resumed))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose([v for _, v in logged_iterations(straight)],
                               [v for _, v in logged_iterations(resumed)][-8:], rtol=1e-3)


def test_an_image_experiment_embeds_tracklets_with_an_aggregator(video_set, tmp_path):
    root, _, query, _ = video_set
    experiment = str(tmp_path / 'exp')
    csv_path = make_dataset(str(tmp_path / 'data'))
    assert train.main(base_args(experiment, csv_path, str(tmp_path / 'data'), 2)) == 0
    with pytest.raises(cli.UserError, match='trained on images, so it needs --tracklets'):
        embed.main(['--experiment_root', experiment, '--dataset', query, '--image_root', root,
                    '--quiet'])
    assert embed.main(['--experiment_root', experiment, '--dataset', query, '--image_root',
                       root, '--tracklets', 'mean', '--quiet']) == 0
    with h5py.File(os.path.join(experiment, 'query_embeddings.h5'), 'r') as f:
        assert f['emb'].shape == (4, 16)


@pytest.mark.parametrize('extra, message', [
    (('--seq_len', '0', '--temporal_pooling', 'max'), 'train on tracklets with --seq_len'),
    # Its sibling has a default, so that it is refused when typed.
    (('--seq_len', '0', '--temporal_position', 'features'),
     '--temporal_position says where .* train on tracklets with --seq_len'),
    (('--seq_len', '0', '--temporal_position', 'embedding'), '--temporal_position says where'),
    (('--pseudo_labels',), 'does not take --pseudo_labels'),
    # The memory checks count the frames of every tracklet of a batch.
    (('--seq_len', '100000000'), r'a batch of 3×2×100000000 images .* lower --batch_p, '
                                 r'--batch_k, --seq_len'),
])
def test_video_flags_that_cannot_train_are_refused(video_set, tmp_path, extra, message):
    root, train_csv, _, _ = video_set
    with pytest.raises(cli.UserError, match=message):
        train.main(video_args(str(tmp_path / 'exp'), train_csv, root, 2, *extra))
    assert not os.path.exists(str(tmp_path / 'exp'))


def test_video_training_validates_on_tracklets(video_set, tmp_path):
    """--val_query and --val_gallery take tracklet CSVs, combined as embed.py
    combines them, and so does an experiment of images (averaging)."""
    root, train_csv, query, gallery = video_set
    validation = ('--val_query', query, '--val_gallery', gallery, '--val_excluder',
                  'tracklets', '--val_every', '3')
    images_csv = make_dataset(root, folder='images_of_{}'.format(os.getpid()))
    for name, csv_path, extra in (('video', train_csv, ('--temporal_position', 'features')),
                                  ('images', images_csv, ('--seq_len', '0'))):
        experiment = str(tmp_path / name)
        assert train.main(video_args(experiment, csv_path, root, 3, *extra, *validation)) == 0
        best = json.load(open(os.path.join(experiment, 'best.json')))
        assert best['step'] == 3 and 0 < best['mAP'] <= 1


def test_an_image_csv_with_seq_len_is_refused(tmp_path):
    csv_path = make_dataset(str(tmp_path / 'data'))
    with pytest.raises(cli.UserError, match='is not a tracklet CSV'):
        train.main(video_args(str(tmp_path / 'exp'), csv_path, str(tmp_path / 'data'), 2))


def test_video_experiments_refuse_another_aggregator(video_experiment, video_set):
    root, _, query, _ = video_set
    with pytest.raises(cli.UserError, match='leave out --tracklets'):
        embed.main(['--experiment_root', video_experiment, '--dataset', query, '--image_root',
                    root, '--tracklets', 'mean', '--filename', 'x.h5', '--quiet'])
    assert not os.path.exists(os.path.join(video_experiment, 'x.h5'))
    # Trackers embed one crop at a time: no tracker export of a video experiment.
    from triplet_reid import export
    with pytest.raises(cli.UserError, match='--tracker exports embed one crop at a time'):
        export.main(['--experiment_root', video_experiment, '--output',
                     os.path.join(video_experiment, 'sm'), '--tracker',
                     os.path.join(video_experiment, 'trk'), '--quiet'])
    assert not os.path.exists(os.path.join(video_experiment, 'trk'))


# Video files in the footage path.
###

def write_video(path, frames, codec='libx264'):
    """Encodes (H, W, 3) uint8 frames losslessly enough to compare crops."""
    import av
    with av.open(path, 'w') as container:
        stream = container.add_stream(codec, rate=10)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = 'yuv444p' if codec == 'libx264' else 'yuv420p'
        if codec == 'libx264':
            stream.options = {'qp': '0'}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')))
        container.mux(stream.encode())


def footage_video(tmp_path, count=6):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(count)]
    for frame in frames:
        frame[8:40, 10:26] = (200, 40, 40)
    path = str(tmp_path / 'cam7.mp4')
    write_video(path, frames)
    detections = str(tmp_path / 'det.txt')
    with open(detections, 'w') as f:
        f.writelines('{},1,11,9,16,32,1,-1,-1,-1\n'.format(i) for i in range(1, count + 1))
    return path, detections


def test_a_video_file_is_cropped_as_its_decoded_frames(tmp_path):
    video, detections = footage_video(tmp_path)
    folder = tmp_path / 'crops'
    folder.mkdir()
    crops, skipped = footage.crop_detections(footage.read_detections(detections),
                                             footage.frame_source(video), str(folder))
    assert len(crops) == 6 and not skipped
    import av
    with av.open(video) as container:
        decoded = [f.to_ndarray(format='rgb24') for f in container.decode(video=0)]
    for (name, detection, _), frame in zip(crops, decoded):
        crop = np.asarray(Image.open(str(folder / name)))
        np.testing.assert_array_equal(crop, frame[8:40, 10:26])
    assert footage.detection_names(crops, footage.frame_source(video), 'cam7')[0] == \
        'cam7/000001#1'


def test_embed_reads_a_video_file_in_place_of_frames(tmp_path):
    video, detections = footage_video(tmp_path)
    experiment = str(tmp_path / 'exp')
    csv_path = make_dataset(str(tmp_path / 'data'))
    assert train.main(base_args(experiment, csv_path, str(tmp_path / 'data'), 2)) == 0
    assert embed.main(['--experiment_root', experiment, '--frames', video, '--detections',
                       detections, '--tracklets', 'mean', '--quiet']) == 0
    with h5py.File(os.path.join(experiment, 'cam7_tracklets.h5'), 'r') as f:
        assert [n.decode() for n in f['fids'][:]] == ['cam7/track1']
        assert list(f['crops'][:]) == [6] and list(f['last_frame'][:]) == [6]
    # A box past the video's end: one message, and nothing written.
    with open(detections, 'a') as f:
        f.write('9,2,11,9,16,32,1,-1,-1,-1\n')
    before = sorted(os.listdir(experiment))
    with pytest.raises(cli.UserError, match='line 7: frame 9 lies past the end'):
        embed.main(['--experiment_root', experiment, '--frames', video, '--detections',
                    detections, '--camera', 'other', '--quiet'])
    assert sorted(os.listdir(experiment)) == before


@pytest.mark.parametrize('damage, message', [
    ('past_end', r'line 7: frame 7 lies past the end of the video .* whose last frame is 6'),
    ('truncated', 'past the end of the video|cannot decode'),
    ('garbage', 'cannot decode .* at frame 1'),
    ('no_video', 'holds no video stream|cannot decode'),
])
def test_bad_videos_are_one_message_naming_the_frame(tmp_path, damage, message):
    video, detections = footage_video(tmp_path)
    if damage == 'past_end':
        with open(detections, 'a') as f:
            f.write('7,1,11,9,16,32,1,-1,-1,-1\n')
    elif damage == 'truncated':
        data = open(video, 'rb').read()
        open(video, 'wb').write(data[:len(data) // 3])
    elif damage == 'garbage':
        open(video, 'wb').write(b'\x00\x00\x01\xba' + os.urandom(4000))
    else:
        import av
        with av.open(video, 'w', format='wav') as container:
            stream = container.add_stream('pcm_s16le', rate=8000)
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format='s16',
                                               layout='mono')
            frame.sample_rate = 8000
            container.mux(stream.encode(frame))
            container.mux(stream.encode())
    folder = tmp_path / 'crops'
    folder.mkdir()
    with pytest.raises(cli.UserError, match=message):
        footage.crop_detections(footage.read_detections(detections),
                                footage.frame_source(video), str(folder), path=detections)


@pytest.mark.parametrize('batch', [1, 3, 7, 100])
def test_tracklets_combine_across_any_batching_of_their_frames(batch):
    from triplet_reid.models import video
    rng = np.random.default_rng(0)
    lengths = [1, 4, 2, 9, 1, 5]
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    frames = rng.normal(size=(bounds[-1], 3)).astype(np.float32)
    seen = []
    embs = video.embed_tracklets((frames[i:i + batch] for i in range(0, len(frames), batch)),
                                 bounds, lambda rows: rows.mean(0),
                                 progress=lambda done, total: seen.append((done, total)))
    expected = [frames[a:b].mean(0) for a, b in zip(bounds[:-1], bounds[1:])]
    np.testing.assert_allclose(embs, expected, rtol=1e-6)
    assert seen[-1] == (22, 22)
