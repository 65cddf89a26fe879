"""Training on pseudo-identities (train.py --pseudo_labels): the rounds of
clustering, the cluster-memory loss, exact resume across a re-clustering,
tracks as free supervision, and every bad input's message."""

import json
import os

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from triplet_reid import cli
from triplet_reid import train
from triplet_reid import training
import triplet_reid.training.data  # noqa: F401
from conftest import base_args, logged_iterations, make_dataset, scalars, write_file
from triplet_reid.inputs import unlabelled
from triplet_reid.training import adaptation, cluster_memory, pseudo_labels


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """(model root, csv, image root): the tiny net trained with labels on 8
    well-separated identities of 8 crops each, whose crops the tests then
    cluster without their labels."""
    root = str(tmp_path_factory.mktemp('adaptation'))
    csv = make_dataset(os.path.join(root, 'data'), num_ids=8, images_per_id=8)
    model = os.path.join(root, 'model')
    assert train.main(base_args(model, csv, os.path.join(root, 'data'), 60)) == 0
    return model, csv, os.path.join(root, 'data')


def adapt_args(root, trained, iterations=20, *extra):
    model, csv, image_root = trained
    return base_args(root, csv, image_root, iterations, '--pseudo_labels',
                     '--initial_checkpoint', model, '--cluster_every', '10',
                     '--cluster_k1', '6', '--cluster_min_samples', '2',
                     '--memory_loss_weight', '1', *extra)


def round_labels(root):
    """{file name: DataFrame} of an experiment's pseudo-label files."""
    folder = os.path.join(root, 'pseudo_labels')
    return {name: pd.read_csv(os.path.join(folder, name)) for name in sorted(os.listdir(folder))}


def test_rounds_recover_well_separated_identities(tmp_path, trained):
    root = str(tmp_path / 'adapt')
    assert train.main(adapt_args(root, trained, 20)) == 0
    rounds = round_labels(root)
    assert list(rounds) == ['round1_iter0.csv', 'round2_iter10.csv']
    truth = pd.read_csv(trained[1], header=None, names=['pid', 'path'], dtype=str)
    for table in rounds.values():
        assert list(table['path']) == list(truth['path'])
        scores = pseudo_labels.pairwise_scores(table['pseudo_identity'].to_numpy(),
                                               truth['pid'].to_numpy())
        assert scores['precision'] == scores['recall'] == 1.0, scores
    found = {}
    for tag in ('clusters', 'round', 'precision', 'outliers'):
        found.update(scalars(root, 'pseudo_labels/' + tag))
    assert found['pseudo_labels/clusters'] == {0: 8.0, 10: 8.0}
    assert found['pseudo_labels/round'] == {0: 1.0, 10: 2.0}
    assert found['pseudo_labels/precision'][10] == 1.0
    assert found['pseudo_labels/outliers'][10] == 0.0
    assert set(scalars(root, 'memory_loss')['memory_loss']) == set(range(1, 21))
    reader = tf.train.load_checkpoint(os.path.join(root, 'checkpoint-20'))
    memory = [name for name in reader.get_variable_to_shape_map() if name.startswith('memory/')]
    assert reader.get_variable_to_shape_map()[memory[0]] == [8, 16]
    assert np.allclose(np.linalg.norm(reader.get_tensor(memory[0]), axis=1), 1, atol=1e-5)
    assert np.all(np.isfinite([avg for _, avg in logged_iterations(root)]))


@pytest.mark.parametrize('stop', [15, 10])
def test_resume_across_a_reclustering_continues_exactly(tmp_path, trained, interrupt_at, stop):
    straight, resumed = str(tmp_path / 'a'), str(tmp_path / 'b')
    extra = ('--detailed_logs', '--checkpoint_frequency', '1000')
    assert train.main(adapt_args(straight, trained, 25, *extra)) == 0
    # Stopped inside round 2 (15), or as round 2 is due (10): the checkpoint
    # of the stop holds round 1's memory, and the rerun clusters again.
    interrupt_at(stop)
    assert train.main(adapt_args(resumed, trained, 25, *extra)) == 0
    assert [i for i, _ in logged_iterations(resumed)] == list(range(1, stop + 1))
    assert train.main(['--experiment_root', resumed, '--resume']) == 0
    a, b = round_labels(straight), round_labels(resumed)
    assert list(a) == list(b) == ['round1_iter0.csv', 'round2_iter10.csv', 'round3_iter20.csv']
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name])
    shape = json.load(open(os.path.join(straight, 'fids.json')))
    fids = [np.memmap(os.path.join(r, 'fids'), shape['dtype'], 'r', shape=tuple(shape['shape']))
            for r in (straight, resumed)]
    np.testing.assert_array_equal(*fids)
    losses = [dict(logged_iterations(r)) for r in (straight, resumed)]
    np.testing.assert_allclose([losses[0][i] for i in range(1, 26)],
                               [losses[1][i] for i in range(1, 26)], rtol=1e-3, atol=1e-4)
    memories = [tf.train.load_checkpoint(os.path.join(r, 'checkpoint-25')) for r in
                (straight, resumed)]
    name = next(n for n in memories[0].get_variable_to_shape_map() if n.startswith('memory/'))
    np.testing.assert_allclose(memories[0].get_tensor(name), memories[1].get_tensor(name),
                               atol=1e-4)


def test_a_folder_of_crops_trains(tmp_path, trained):
    root = str(tmp_path / 'adapt')
    model, _, image_root = trained
    argv = adapt_args(root, trained, 3)
    argv[argv.index('--train_set') + 1] = os.path.join(image_root, 'train')
    del argv[argv.index('--image_root'):argv.index('--image_root') + 2]
    assert train.main(argv) == 0
    table = round_labels(root)['round1_iter0.csv']
    assert len(table) == 64 and table['path'].str.endswith('.jpg').all()
    assert table['pseudo_identity'].nunique() == 8


def write_tracks(tmp_path, trained, rows=None):
    """A header CSV of the trained crops, each identity's crops split into two
    tracks of camera `c` (frames 0-3 and 10-13), with their identities."""
    truth = pd.read_csv(trained[1], header=None, names=['identity', 'path'], dtype=str)
    position = truth.groupby('identity').cumcount()
    table = pd.DataFrame({'path': truth['path'], 'camera': 'c',
                          'track': truth['identity'] + '_' + (position // 4).astype(str),
                          'frame': position % 4 + 10 * (position // 4),
                          'identity': truth['identity']})
    path = str(tmp_path / 'tracks.csv')
    text = table.to_csv(index=False)
    write_file(path, text if rows is None else text + rows)
    return path


def test_tracks_keep_their_crops_together(tmp_path, trained):
    root = str(tmp_path / 'adapt')
    argv = adapt_args(root, trained, 2)
    argv[argv.index('--train_set') + 1] = write_tracks(tmp_path, trained)
    # Clusters of single crops only: every identity is held together by its tracks alone.
    argv += ['--cluster_eps', '0.05', '--cluster_min_samples', '9']
    assert train.main(argv) == 0
    table = round_labels(root)['round1_iter0.csv']
    tracks = pd.read_csv(argv[argv.index('--train_set') + 1])
    assert (tracks.groupby('track')['path'].count() == 4).all()
    per_track = table.assign(track=tracks['track']).groupby('track')['pseudo_identity']
    assert (per_track.nunique() == 1).all()
    assert (table['pseudo_identity'] >= 0).all()


def test_tracks_that_overlap_in_one_camera_are_two_people():
    labels = np.array([0, 0, 0, 0])
    constrained = pseudo_labels.constrain_by_tracks(labels, ['a', 'a', 'b', 'b'], ['c'] * 4,
                                                    [1, 2, 2, 3])
    assert constrained[0] == constrained[1] != constrained[2] == constrained[3]


def test_memory_loss_and_update_match_numpy():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(6, 4)).astype(np.float32)
    memory = rng.normal(size=(3, 4)).astype(np.float32)
    memory /= np.linalg.norm(memory, axis=1, keepdims=True)
    labels = np.array([2, 0, 2, 1, 0, 2], np.int32)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    logits = unit @ memory.T / 0.05
    expected = np.log(np.exp(logits).sum(axis=1)) - logits[np.arange(6), labels]
    np.testing.assert_allclose(cluster_memory.loss(emb, memory, labels, 0.05), expected,
                               rtol=1e-4, atol=1e-5)
    rows, centroids = (t.numpy() for t in cluster_memory.update(emb, memory, labels, 0.2))
    assert list(rows) == [2, 0, 1]
    for row, centroid in zip(rows, centroids):
        members = np.flatnonzero(labels == row)
        hardest = members[np.argmin(unit[members] @ memory[row])]
        moved = 0.2 * memory[row] + 0.8 * unit[hardest]
        np.testing.assert_allclose(centroid, moved / np.linalg.norm(moved), rtol=1e-5)


def test_a_diverged_memory_loss_stops_training_naming_its_flags(tmp_path, trained, monkeypatch):
    # Embeddings that are NaN (weights that diverged) match no crop in the
    # memory's update, which gathered out of range; the step now ends and its
    # NaN loss stops training with the flags that scale the memory loss.
    emb = np.full((4, 3), np.nan, np.float32)
    memory = np.eye(3, dtype=np.float32)
    rows, _ = cluster_memory.update(emb, memory, np.array([0, 1, 1, 2], np.int32), 0.2)
    assert list(rows.numpy()) == [0, 1, 2]
    original = cluster_memory.loss
    monkeypatch.setattr(cluster_memory, 'loss', lambda emb, *a: original(emb * np.nan, *a))
    root = str(tmp_path / 'adapt')
    with pytest.raises(cli.UserError, match=r'the memory loss became NaN at iteration 1; .* '
                       r'scales it and its gradients: --learning_rate \(0\.\d+\), '
                       r'--memory_loss_weight \(1\.0\), --memory_temperature \(0\.05\)\. '
                       r'Rerun with gentler values'):
        train.main(adapt_args(root, trained, 20, '--memory_temperature', '0.05',
                              '--triplet_loss_weight', '0'))
    # A temperature whose inverse makes the weights infinite is refused by the parser.
    with pytest.raises(SystemExit):
        train.main(adapt_args(str(tmp_path / 'cold'), trained, 20, '--memory_temperature',
                              '1e-30'))
    assert not os.path.exists(tmp_path / 'cold')


def test_camera_loss_matches_numpy():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(5, 4)).astype(np.float32)
    memory = rng.normal(size=(6, 4)).astype(np.float32)
    memory /= np.linalg.norm(memory, axis=1, keepdims=True)
    # Pseudo-identities 0 (cameras 0, 1), 1 (camera 0), 2 (cameras 0, 1, 2).
    cluster, camera = np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 0, 0, 1, 2])
    proxies = np.array([0, 1, 2, 5, 4])
    logits = emb / np.linalg.norm(emb, axis=1, keepdims=True) @ memory.T / 0.1
    expected = []
    for i, own in enumerate(proxies):
        mine = camera == camera[own]
        intra = np.log(np.exp(logits[i, mine]).sum()) - logits[i, own]
        positive = cluster == cluster[own]
        hardest = np.sort(logits[i, ~positive])[::-1][:2]
        normaliser = np.log(np.exp(logits[i, positive]).sum() + np.exp(hardest).sum())
        expected.append(intra + 0.5 * np.mean(normaliser - logits[i, positive]))
    np.testing.assert_allclose(
        cluster_memory.camera_loss(emb, memory, proxies, cluster, camera, 0.1, 0.5, 2),
        expected, rtol=1e-4, atol=1e-5)


def test_camera_proxies_number_each_pseudo_identity_and_camera():
    labels = np.array([1, 0, -1, 1, 0, 1])
    proxies, cluster, camera = adaptation.camera_proxies(labels, ['b', 'a', 'a', 'a', 'a', 'b'])
    assert list(proxies) == [2, 0, -1, 1, 0, 2]
    assert list(cluster) == [0, 1, 1] and list(camera) == [0, 0, 1]


def test_camera_proxies_train_and_resume_exactly(tmp_path, trained, interrupt_at):
    straight, resumed = str(tmp_path / 'a'), str(tmp_path / 'b')
    extra = ('--camera_proxies', '--camera_regex', r'_c(\d)', '--checkpoint_frequency', '1000')
    assert train.main(adapt_args(straight, trained, 14, *extra)) == 0
    interrupt_at(12)
    assert train.main(adapt_args(resumed, trained, 14, *extra)) == 0
    assert train.main(['--experiment_root', resumed, '--resume']) == 0
    labels = round_labels(straight)['round2_iter10.csv']
    cameras = labels['path'].str.extract(r'_c(\d)')[0]
    found = labels['pseudo_identity'] >= 0
    proxies = len(set(zip(labels['pseudo_identity'][found], cameras[found])))
    assert proxies > labels['pseudo_identity'].max() + 1, 'the crops of a person span cameras'
    checkpoints = [tf.train.load_checkpoint(os.path.join(r, 'checkpoint-14'))
                   for r in (straight, resumed)]
    shapes = checkpoints[0].get_variable_to_shape_map()
    name = next(n for n in shapes if n.startswith('memory/'))
    assert shapes[name][0] == proxies
    np.testing.assert_allclose(checkpoints[0].get_tensor(name), checkpoints[1].get_tensor(name),
                               atol=1e-4)
    losses = [dict(logged_iterations(r)) for r in (straight, resumed)]
    np.testing.assert_allclose([losses[0][i] for i in range(1, 15)],
                               [losses[1][i] for i in range(1, 15)], rtol=1e-3, atol=1e-4)


def test_the_unlabelled_formats(tmp_path):
    root = str(tmp_path)
    for name in ('a/1_c1.jpg', 'a/2_c2.jpg', 'b/3_c1.jpg'):
        os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
        write_file(os.path.join(root, name), b'', 'wb')
    paths = write_file(str(tmp_path / 'paths.csv'), 'a/1_c1.jpg\na/2_c2.jpg\n\nb/3_c1.jpg\n')
    crops = unlabelled.read_crops(paths, root, r'_c(\d)')
    assert list(crops.fids) == ['a/1_c1.jpg', 'a/2_c2.jpg', 'b/3_c1.jpg']
    assert list(crops.cameras) == ['1', '2', '1'] and crops.identities is None
    labelled = write_file(str(tmp_path / 'l.csv'), '7,a/1_c1.jpg\n8,b/3_c1.jpg\n')
    assert list(unlabelled.read_crops(labelled, root).identities) == ['7', '8']
    header = write_file(str(tmp_path / 'h.csv'), 'Path, track ,frame\na/1_c1.jpg,4,1\n'
                                                 'a/2_c2.jpg,,1\n')
    crops = unlabelled.read_crops(header, root)
    assert list(crops.tracks) == ['4', ''] and list(crops.frames) == [1, 1]
    first = write_file(str(tmp_path / 'one.csv'), '7,1_c1.jpg\n')
    second = write_file(str(tmp_path / 'two.csv'), '7,3_c1.jpg\n')
    both = unlabelled.read_crops([first, second], [os.path.join(root, 'a'),
                                                   os.path.join(root, 'b')])
    assert list(both.fids) == ['a/1_c1.jpg', 'b/3_c1.jpg'] and both.image_root == root
    assert list(both.identities) == ['1:7', '2:7'], 'one set\'s 7 is not the other\'s'


@pytest.mark.parametrize('extra, csv_text, message', [
    (('--cluster_min_samples', '40'), None, 'too few to cluster'),
    (('--cluster_min_samples', '9', '--cluster_eps', '0.05'), None,
     'every one of the 64 crops is an outlier.*Raise --cluster_eps or lower '
     '--cluster_min_samples'),
    (('--cluster_eps', '0.999', '--cluster_k1', '40', '--cluster_k2', '40'), None,
     'into one pseudo-identity; lower --cluster_eps'),
    (('--id_loss_weight', '1'), None, 'cannot train the identity or center loss'),
    (('--embedding_dim', '32'), None, 'does not fit this one.*--no-initial_head'),
    (('--camera_centering',), None, '--camera_centering needs the crops\' cameras'),
    (('--camera_proxies',), None, '--camera_proxies needs the crops\' cameras'),
    (('--camera_proxies', '--camera_regex', '_c(.)', '--memory_loss_weight', '0'), None,
     '--camera_proxies are centroids of the cluster memory'),
    ((), 'path,track,frame\ntrain/0001_c1s1_000000_00.jpg,5,1\n'
         'train/0001_c2s1_000001_00.jpg,5,1\n', 'lines 2 and 3: track `5` has two crops in '
                                                'frame 1'),
    ((), 'path,tracks\ntrain/0001_c1s1_000000_00.jpg,5\n', 'each of path, identity, camera'),
    ((), 'path,frame\ntrain/0001_c1s1_000000_00.jpg,x\n', 'line 2: the frame `x`'),
    ((), 'path\n/etc/passwd\n', 'line 2: `/etc/passwd` is not a path relative'),
    ((), 'path\ntrain/nothing.jpg\n', '1 of the 1 crops .* are missing'),
])
def test_bad_input_stops_before_anything_is_written(tmp_path, trained, extra, csv_text,
                                                    message):
    root = str(tmp_path / 'adapt')
    argv = adapt_args(root, trained, 2, *extra)
    if csv_text is not None:
        argv[argv.index('--train_set') + 1] = write_file(str(tmp_path / 'bad.csv'), csv_text)
    with pytest.raises(cli.UserError, match=message):
        train.main(argv)
    assert not os.path.exists(root)


def test_a_camera_per_crop_is_refused_for_the_camera_penalty(tmp_path, trained, monkeypatch):
    # A regex that finds each crop's own name: one camera a crop, whose
    # one-hot columns would grow with the square of the crops.
    monkeypatch.setattr(training.data, 'MAX_PENALTY_CAMERAS', 10)
    root = str(tmp_path / 'adapt')
    with pytest.raises(cli.UserError, match='gives 64 different cameras \\(at most 10\\)'):
        train.main(adapt_args(root, trained, 2, '--cluster_camera_penalty', '0.1',
                              '--camera_regex', r'([^/]+)$'))
    assert not os.path.exists(root)


def test_crops_that_do_not_decode_are_named(tmp_path, trained):
    folder = tmp_path / 'crops'
    folder.mkdir()
    for name in os.listdir(os.path.join(trained[2], 'train'))[:40]:
        os.link(os.path.join(trained[2], 'train', name), folder / name)
    write_file(str(folder / 'broken.jpg'), b'not a jpeg', 'wb')
    root = str(tmp_path / 'adapt')
    argv = adapt_args(root, trained, 2)
    argv[argv.index('--train_set') + 1] = str(folder)
    del argv[argv.index('--image_root'):argv.index('--image_root') + 2]
    with pytest.raises(cli.UserError, match='cannot be decoded.*`broken.jpg`'):
        train.main(argv)
    assert not os.path.exists(root)


def test_memory_loss_needs_pseudo_labels(tmp_path, tiny_dataset):
    with pytest.raises(cli.UserError, match='needs --pseudo_labels'):
        train.main(base_args(str(tmp_path / 'x'), *tiny_dataset, 2,
                             '--memory_loss_weight', '1'))


def test_a_body_only_file_cannot_start_the_head(tmp_path, trained):
    from triplet_reid.models.build import build_model
    _, body = build_model('tiny', 'fc1024', 16)
    weights = str(tmp_path / 'body.weights.h5')
    body.save_weights(weights)
    root = str(tmp_path / 'adapt')
    argv = adapt_args(root, trained, 2)
    argv[argv.index('--initial_checkpoint') + 1] = weights
    with pytest.raises(cli.UserError, match='holds a body only.*--no-initial_head'):
        train.main(argv)
    assert not os.path.exists(root)
