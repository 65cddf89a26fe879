"""embed.py: test-time augmentation, aggregators, the HDF5 layout, the library function."""

import json
import os
import re
import shutil

import h5py
import numpy as np
import pytest
import tensorflow as tf

from triplet_reid import aggregators
from triplet_reid import cli
from triplet_reid import common
from triplet_reid.storage import files
from triplet_reid import embed
from triplet_reid.inputs.images import CROPS, fid_to_image, five_crops
from triplet_reid import train
from triplet_reid.models.inference import load_embedder
from conftest import base_args


@pytest.fixture(scope='module')
def experiment(tmp_path_factory):
    from conftest import make_dataset
    tmp = tmp_path_factory.mktemp('embed')
    image_root = str(tmp / 'data')
    csv_path = make_dataset(image_root, num_ids=5, images_per_id=3)
    root = str(tmp / 'exp')
    assert train.main(base_args(root, csv_path, image_root, 2, '--crop_augment',
                                '--pre_crop_height', '40', '--pre_crop_width', '20')) == 0
    return root, csv_path, image_root


def run(experiment, *extra):
    root, csv_path, _ = experiment
    name = 'out_{}.h5'.format(abs(hash(extra)))
    assert embed.main(['--experiment_root', root, '--dataset', csv_path, '--quiet',
                       '--filename', name] + list(extra)) == 0
    with h5py.File(os.path.join(root, name), 'r') as f:
        return {k: f[k][()] for k in f}


def test_plain_embedding_and_library(experiment):
    out = run(experiment)
    assert out['emb'].shape == (15, 16) and out['emb'].dtype == np.float32
    assert 'emb_aug' not in out
    assert list(out['augmentation_types']) == [b'original_resize']
    root, csv_path, image_root = experiment
    _, fids = common.load_dataset(csv_path, image_root)
    embedder = load_embedder(root)
    from_files = embedder([os.path.join(image_root, f) for f in fids])
    np.testing.assert_allclose(from_files, out['emb'], rtol=1e-4, atol=1e-4)


def test_flip_mean_equals_mean_of_separate_embeddings(experiment):
    out = run(experiment, '--flip_augment', '--aggregator', 'mean')
    assert out['emb_aug'].shape == (2, 15, 16)
    assert [n.decode() for n in out['augmentation_types']] == [
        'original_resize', 'original_flip_resize']
    np.testing.assert_allclose(out['emb'], out['emb_aug'].mean(0), rtol=1e-6)
    root, csv_path, image_root = experiment
    _, fids = common.load_dataset(csv_path, image_root)
    images = np.stack([fid_to_image(f, image_root, (32, 16)).numpy() for f in fids])
    embedder = load_embedder(root)
    separate = (embedder(images) + embedder(images[:, :, ::-1])) / 2
    np.testing.assert_allclose(out['emb'], separate, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('crop, aggregator, count', [
    ('center', None, 1), ('avgpool', None, 1), ('five', 'mean', 5),
])
def test_crop_modes(experiment, crop, aggregator, count):
    extra = ('--crop_augment', crop) + (('--aggregator', aggregator) if aggregator else ())
    out = run(experiment, *extra)
    names = [n.decode() for n in out['augmentation_types']]
    assert len(names) == count and out['emb'].shape == (15, 16)
    if count > 1:
        assert names == ['original_' + c for c in CROPS]
        assert out['emb_aug'].shape == (5, 15, 16)
    else:
        assert names == ['original_' + crop]


def test_five_crops_and_flip_normalized(experiment):
    out = run(experiment, '--crop_augment', 'five', '--flip_augment', '--aggregator',
              'normalized_mean')
    names = [n.decode() for n in out['augmentation_types']]
    assert names[:2] == ['original_center', 'original_top_left']
    assert names[5:7] == ['original_flip_center', 'original_flip_top_left']
    assert out['emb_aug'].shape == (10, 15, 16)
    np.testing.assert_allclose(np.linalg.norm(out['emb'], axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(out['emb'], aggregators.normalized_mean(out['emb_aug']),
                               rtol=1e-6)


def test_five_crops_are_exact():
    image = tf.reshape(tf.range(5 * 4, dtype=tf.float32), (5, 4, 1))
    crops = [c.numpy()[..., 0] for c in five_crops(image, (3, 2))]
    full = image.numpy()[..., 0]
    np.testing.assert_array_equal(crops[0], full[1:4, 1:3])
    np.testing.assert_array_equal(crops[1], full[:3, :2])
    np.testing.assert_array_equal(crops[2], full[:3, 2:])
    np.testing.assert_array_equal(crops[3], full[2:, :2])
    np.testing.assert_array_equal(crops[4], full[2:, 2:])


def test_errors(experiment, tmp_path):
    root, csv_path, _ = experiment
    base = ['--experiment_root', root, '--dataset', csv_path, '--quiet']
    with pytest.raises(cli.UserError, match='no --aggregator was given'):
        embed.main(base + ['--flip_augment'])
    with pytest.raises(cli.UserError, match='--aggregator mean was given but no'):
        embed.main(base + ['--aggregator', 'mean'])
    with pytest.raises(cli.UserError, match='no checkpoint `checkpoint-99`'):
        embed.main(base + ['--checkpoint', 'checkpoint-99'])
    with pytest.raises(cli.UserError, match='`args.json` could not be found'):
        embed.main(['--experiment_root', str(tmp_path), '--dataset', csv_path])
    with pytest.raises(cli.UserError, match='cannot write --filename .*Nothing was computed'):
        embed.main(base + ['--filename', 'missing/folder/out.h5'])
    assert not any(name.endswith('.partial') for name in os.listdir(root))


def test_non_finite_embeddings_are_refused_before_writing(experiment, monkeypatch):
    root, csv_path, _ = experiment
    from triplet_reid.models import inference
    real = inference.inference_function

    def broken(model):
        forward = real(model)
        # The second image embeds to NaN, as a diverged network would.
        return lambda images, cameras=None: tf.tensor_scatter_nd_update(
            forward(images, cameras), [[1, 0]], [float('nan')])

    monkeypatch.setattr(inference, 'inference_function', broken)
    with pytest.raises(cli.UserError, match=r'1 of 15 rows hold non-finite values \(NaN or '
                       r'infinity\), row 1 \(train/0001_c2s1_000001_00.jpg\); nothing was '
                       r'written'):
        embed.main(['--experiment_root', root, '--dataset', csv_path, '--quiet',
                    '--filename', 'nan.h5'])
    assert not any(name.startswith('nan.h5') for name in os.listdir(root))


def test_validation_refuses_non_finite_embeddings(experiment):
    from triplet_reid import training
    import triplet_reid.training.run  # noqa: F401
    root, csv_path, image_root = experiment
    args = train.parser.parse_args(base_args(root, csv_path, image_root) + [
        '--val_query', csv_path, '--val_gallery', csv_path, '--val_excluder', 'diagonal'])
    validate = training.run.make_validation(args, chief=True)
    with pytest.raises(cli.UserError, match=r'validation\'s embeddings .* 30 of 30 rows'):
        validate(lambda images, cameras=None: tf.fill((len(images), 16), float('inf')))


def test_experiments_from_before_antialias_keep_resizing_without(experiment, tmp_path):
    # Such experiments also keep decoding JPEGs with the fast DCT (experiment.LEGACY_ARGUMENTS).
    import json
    import shutil
    root = experiment[0]
    assert json.load(open(os.path.join(root, 'args.json')))['antialias'] is True
    legacy = str(tmp_path / 'legacy')
    shutil.copytree(root, legacy)
    stored = json.load(open(os.path.join(legacy, 'args.json')))
    del stored['antialias'], stored['accurate_jpeg']
    files.write_json(os.path.join(legacy, 'args.json'), stored, experiment=True)
    larger = np.random.default_rng(1).uniform(0, 255, (4, 70, 37, 3)).astype(np.float32)
    new, old = load_embedder(root)(larger), load_embedder(legacy)(larger)
    assert np.abs(new - old).max() > 1e-3
    shrunk = tf.image.resize(larger, (32, 16), antialias=False)
    np.testing.assert_allclose(old, load_embedder(root)(shrunk.numpy()), rtol=1e-4, atol=1e-4)


def test_checkpoint_folder_given_relative_to_the_root(experiment, monkeypatch):
    root = experiment[0]
    monkeypatch.chdir(os.path.dirname(root))
    relative = os.path.basename(root)
    from triplet_reid.experiment.checkpoints import find_checkpoint
    # `../exp` from inside the root names the root itself; the index's
    # relative path must not be prefixed twice.
    assert os.path.normpath(find_checkpoint(relative, '../' + relative).path) == \
        find_checkpoint(relative).path


def test_images_and_folders_without_a_csv(experiment, tmp_path):
    root, csv_path, image_root = experiment
    by_csv = run(experiment)
    pids, fids = common.load_dataset(csv_path, image_root)
    folder = os.path.join(image_root, 'train')
    single = os.path.join(image_root, fids[0])
    assert embed.main(['--experiment_root', root, '--images', folder, single, '--quiet']) == 0
    with h5py.File(os.path.join(root, 'images_embeddings.h5'), 'r') as f:
        names = [n.decode() for n in f['fids'][()]]
        emb = f['emb'][()]
    # The folder's images in sorted order, then the single file, as given.
    listed = sorted(os.listdir(folder))
    assert names == [os.path.join(folder, n) for n in listed] + [single]
    order = [list(fids).index('train/' + n) for n in listed] + [0]
    np.testing.assert_allclose(emb, by_csv['emb'][order], rtol=1e-5, atol=1e-6)
    # A CSV's file names are stored too, relative to the image root.
    assert [n.decode() for n in by_csv['fids']] == list(fids)
    with pytest.raises(cli.UserError, match='neither an image file nor a folder'):
        embed.main(['--experiment_root', root, '--images', str(tmp_path / 'nope'), '--quiet'])
    (tmp_path / 'notes.txt').write_text('no images here')
    with pytest.raises(cli.UserError, match='no images .* were found'):
        embed.main(['--experiment_root', root, '--images', str(tmp_path), '--quiet'])
    (tmp_path / 'broken.jpg').write_bytes(b'not a picture')
    with pytest.raises(cli.UserError, match='cannot be decoded.*leave them out of --images'):
        embed.main(['--experiment_root', root, '--images', str(tmp_path), '--quiet'])


def test_crops_larger_than_the_pre_crop_size_are_refused(experiment, tmp_path):
    root, csv_path, _ = experiment
    copy = str(tmp_path / 'exp')
    shutil.copytree(root, copy)
    args = json.load(open(os.path.join(copy, 'args.json')))
    args.update(crop_augment=False, pre_crop_height=24, pre_crop_width=12)
    json.dump(args, open(os.path.join(copy, 'args.json'), 'w'))
    with pytest.raises(cli.UserError, match=r'crops of the net input size 32x16 from the '
                       r'image resized to the experiment\'s pre-crop size 24x12'):
        embed.main(['--experiment_root', copy, '--dataset', csv_path, '--quiet',
                    '--crop_augment', 'center', '--filename', 'crops.h5'])
    assert not any(name.startswith('crops.h5') for name in os.listdir(copy))


def test_embeddings_never_replace_the_experiment_s_files_or_the_input(experiment, tmp_path):
    root, csv_path, _ = experiment
    base = ['--experiment_root', root, '--dataset', csv_path, '--quiet']
    index = sorted(n for n in os.listdir(root) if n.endswith('.index'))[0]
    before = {name: open(os.path.join(root, name), 'rb').read()
              for name in ('args.json', index)}
    for name in ('args.json', index, 'best.json', 'checkpoint'):
        with pytest.raises(cli.UserError, match='one of the files that train.py keeps'):
            embed.main(base + ['--filename', name])
    with pytest.raises(cli.UserError, match='--filename .* is the same file as --dataset'):
        embed.main(base + ['--filename', os.path.abspath(csv_path)])
    other = tmp_path / 'notes.txt'
    other.write_text('mine')
    with pytest.raises(cli.UserError, match='exists and is not an HDF5 file'):
        embed.main(base + ['--filename', str(other)])
    assert other.read_text() == 'mine'
    assert before == {name: open(os.path.join(root, name), 'rb').read() for name in before}
    # Earlier embeddings are replaced, and each file names the network that made it.
    for _ in range(2):
        assert embed.main(base + ['--filename', 'again.h5']) == 0
    with h5py.File(os.path.join(root, 'again.h5'), 'r') as f:
        assert f.attrs['experiment_root'] == os.path.realpath(root)
        assert f.attrs['checkpoint'] == 'checkpoint-2'


def test_a_damaged_checkpoint_index_alone_costs_one_warning(experiment, tmp_path, capfd,
                                                            caplog):
    # The `checkpoint` index only lists the checkpoints, which are found by
    # their files: with it damaged, the newest complete checkpoint is still
    # the newest, so embedding goes on with it, saying so in one line
    # instead of TensorFlow's raw parser messages.
    import shutil
    root, csv_path, _ = experiment
    copy = str(tmp_path / 'exp')
    shutil.copytree(root, copy)
    with open(os.path.join(copy, 'checkpoint'), 'w') as f:
        f.write('garbage { !!\n')
    capfd.readouterr()
    assert embed.main(['--experiment_root', copy, '--dataset', csv_path, '--quiet',
                       '--filename', 'x.h5']) == 0
    err = capfd.readouterr().err + caplog.text
    assert 'ParseError' not in err and 'Checkpoint ignored' not in err, err
    assert re.search(r'The checkpoint index \S*checkpoint is damaged; the checkpoints are '
                     r'found by their files instead', err), err
    with h5py.File(os.path.join(copy, 'x.h5'), 'r') as f:
        assert f.attrs['checkpoint'] == 'checkpoint-2'


def test_a_damaged_newest_checkpoint_is_named_not_silently_replaced(experiment, tmp_path):
    import shutil
    root, csv_path, _ = experiment
    copy = str(tmp_path / 'exp')
    shutil.copytree(root, copy)
    index = os.path.join(copy, 'checkpoint-2.index')
    with open(index, 'rb') as f:
        head = f.read(100)
    with open(index, 'wb') as f:
        f.write(head)
    base = ['--experiment_root', copy, '--dataset', csv_path, '--quiet', '--filename', 'x.h5']
    with pytest.raises(cli.UserError, match=r'newest checkpoint of .* is not usable: .*pass '
                       r'--checkpoint checkpoint-0 to use'):
        embed.main(base)
    with pytest.raises(cli.UserError, match=r'checkpoint `.*checkpoint-2` is incomplete or '
                       r'damaged; the newest complete one is checkpoint-0'):
        embed.main(base + ['--checkpoint', 'checkpoint-2'])
    assert embed.main(base + ['--checkpoint', 'checkpoint-0']) == 0
    # A checkpoint whose data has one byte changed (its checksum no longer matches), in a folder
    # of checkpoints such as `best`: named, with the newest complete one.
    best = os.path.join(copy, 'best')
    os.makedirs(best)
    for name in os.listdir(root):
        if name.startswith(('checkpoint-0.', 'checkpoint-2.')):
            shutil.copy(os.path.join(root, name), best)
    data = [name for name in os.listdir(best) if name.startswith('checkpoint-2.data')][0]
    with open(os.path.join(best, data), 'r+b') as f:
        f.seek(os.path.getsize(os.path.join(best, data)) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xff]))
    with pytest.raises(cli.UserError, match=r'newest checkpoint of .*best` is not usable: '
                       r'.*checkpoint-2 is missing or damaged; pass '
                       r'--checkpoint best/checkpoint-0 '):
        embed.main(base + ['--checkpoint', 'best'])


def test_the_python_api_embeds_crops_of_any_size_as_embed_py(experiment, tmp_path):
    # A tracker's loop: crops of one frame, each its own size, as arrays.
    root, _, _ = experiment
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    boxes = [(10, 5, 20, 50), (60, 30, 31, 70), (100, 2, 16, 33)]
    crops = [frame[y:y + h, x:x + w] for x, y, w, h in boxes]
    folder = tmp_path / 'crops'
    from conftest import write_image
    for i, crop in enumerate(crops):
        write_image(str(folder / 'c{}.png'.format(i)), crop)
    assert embed.main(['--experiment_root', root, '--images', str(folder), '--quiet',
                       '--filename', str(tmp_path / 'crops.h5')]) == 0
    with h5py.File(tmp_path / 'crops.h5', 'r') as f:
        expected = f['emb'][()]
    embedder = load_embedder(root, batch_size=2, device='/CPU:0')
    assert (embedder.embedding_dim, embedder.metric) == (16, 'euclidean')
    np.testing.assert_allclose(embedder(crops), expected, rtol=1e-4, atol=1e-4)
    # Paths (str or PathLike, alone or in a list), one array, floats in [0, 255].
    np.testing.assert_allclose(embedder(folder / 'c1.png'), expected[1:2], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(embedder([str(folder / 'c2.png'), crops[0].astype(np.float64)]),
                               expected[[2, 0]], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(embedder(crops[1]), expected[1:2], rtol=1e-4, atol=1e-4)
    assert embedder([]).shape == (0, 16)
    # An exported SavedModel resizes inside, to the same embeddings.
    from triplet_reid import export
    saved = str(tmp_path / 'saved')
    assert export.main(['--experiment_root', root, '--output', saved, '--quiet']) == 0
    exported = load_embedder(saved, batch_size=2)
    assert (exported.embedding_dim, exported.metric) == (16, None)
    np.testing.assert_allclose(exported(crops + [str(folder / 'c0.png')]),
                               np.concatenate([expected, expected[:1]]), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(load_embedder(root, flip=True)(crops[0]),
                               (expected[:1] + embedder(crops[0][:, ::-1])) / 2,
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('images, match', [
    (np.zeros((20, 10), np.uint8), r'the image has shape \(20, 10\); an image is \(H, W, 3\)'),
    (np.zeros((2, 20, 10, 4), np.uint8), r'the batch has shape \(2, 20, 10, 4\)'),
    ([np.zeros((20, 10, 3), np.int32)], r'image 0 of the list holds int32 values'),
    ({'a': 1}, r'cannot embed a dict'),
    ('missing.jpg', r'cannot embed `missing\.jpg`'),
])
def test_the_python_api_refuses_what_is_not_an_image(experiment, images, match):
    with pytest.raises(cli.UserError, match=match):
        load_embedder(experiment[0])(images)


def test_the_python_api_refuses_endless_huge_and_non_finite_inputs_before_any_work(
        experiment, tmp_path):
    embedder = load_embedder(experiment[0])
    os.mkfifo(tmp_path / 'pipe.png')
    sparse = tmp_path / 'sparse.png'
    with open(sparse, 'wb') as f:
        f.truncate(1 << 40)  # A terabyte of nothing: decoding would read it all first.
    from conftest import write_image
    write_image(str(tmp_path / 'ok.png'), np.zeros((20, 10, 3), np.uint8))
    nan = np.full((20, 10, 3), 100.0)
    nan[3, 4, 1] = np.nan
    batch = np.full((5, 20, 10, 3), 100.0, np.float32)
    batch[3, 0, 0, 0] = np.inf
    for images, match in (
            ('/dev/zero', r'cannot embed `/dev/zero`: it is not a regular file'),
            ([str(tmp_path / 'ok.png'), str(tmp_path / 'pipe.png')],
             r'pipe\.png`: it is not a regular file'),
            (str(tmp_path), r'it is not a regular file'),
            (str(sparse), r'sparse\.png`: it has more than 25000000 pixels'),
            (np.broadcast_to(np.uint8(0), (100000, 100000, 3)),
             r'the image has shape \(100000, 100000, 3\): images of more than 25000000 pixels'),
            (nan, r'the image holds pixels from nan to nan; pass finite values in \[0, 255\]'),
            (batch, r'the batch \(image 3\) holds pixels from 100\.0 to inf'),
            ([np.zeros((20, 10, 3)), np.full((20, 10, 3), 1e30)],
             r'image 1 of the list holds pixels from 1e\+30'),
            (np.full((20, 10, 3), -1000.0), r'from -1000\.0 to -1000\.0')):
        with pytest.raises(cli.UserError, match=match):
            embedder(images)
    # A batch bigger than one check's chunk is checked chunk by chunk.
    many = np.broadcast_to(np.float32(7), (40000, 32, 16, 3))
    assert embedder.embed_chunk(many[:2]).shape == (2, 16)
    from triplet_reid.models import inference
    assert inference.check_pixels(many, 'the batch') is many
    # Chunks hold at most batch_size images, and beyond their first at most
    # CHUNK_PIXELS pixels: 256 photographs of 25 megapixels took 77 GB at once.
    photos = np.broadcast_to(np.uint8(0), (5, 5000, 5000, 3))
    assert inference.chunk_bounds(*inference.as_images(photos), 256) == [(0, 2), (2, 4), (4, 5)]
    assert inference.chunk_bounds(*inference.as_images(list(photos)), 256) == [
        (0, 2), (2, 4), (4, 5)]
    assert inference.chunk_bounds(*inference.as_images([str(tmp_path / 'ok.png')] * 5), 2) == [
        (0, 2), (2, 4), (4, 5)]
    assert load_embedder(experiment[0], max_image_pixels=100)(
        np.zeros((10, 10, 3), np.uint8)).shape == (1, 16)
    with pytest.raises(cli.UserError, match='more than 100 pixels'):
        load_embedder(experiment[0], max_image_pixels=100)(np.zeros((11, 10, 3), np.uint8))


def test_the_python_api_refuses_sources_that_are_no_model(experiment, tmp_path):
    from triplet_reid import export
    saved = tmp_path / 'saved'
    assert export.main(['--experiment_root', experiment[0], '--output', str(saved),
                        '--quiet']) == 0
    os.mkfifo(tmp_path / 'fifo')
    cases = [('/dev/zero', r'`/dev/zero` is not a folder'),
             (tmp_path / 'fifo', r'fifo` is not a folder'),
             (tmp_path / 'nothing', r'nothing` is not a folder')]
    for name, damage, match in (
            ('no_variables', lambda d: shutil.rmtree(d / 'variables'),
             r'has no `variables` folder'),
            ('truncated', lambda d: (d / 'saved_model.pb').write_bytes(
                (d / 'saved_model.pb').read_bytes()[:1000]), r'cannot load the SavedModel'),
            ('pipe', lambda d: ((d / 'saved_model.pb').unlink(), os.mkfifo(
                d / 'saved_model.pb')), r'not a regular file'),
            ('empty_variables', lambda d: [p.unlink() for p in (d / 'variables').iterdir()],
             r'cannot load the SavedModel')):
        shutil.copytree(saved, tmp_path / name)
        damage(tmp_path / name)
        cases.append((tmp_path / name, match))
    for source, match in cases:
        with pytest.raises(cli.UserError, match=match):
            load_embedder(source)
    root = experiment[0]
    for arguments, match in (
            ((123,), r'cannot load a model from a int'), ((None,), r'from a NoneType'),
            ((root.encode(),), r'from a bytes'), ((root + '\0x',), r'is not a folder'),
            ((root, None, 'abc'), r'batch_size must be a whole number .* not \'abc\''),
            ((root, 5), r'checkpoint must be the name of a checkpoint .* not a int'),
            ((root, b'checkpoint-2'), r'not a bytes'),
            ((root, None, 0), r'batch_size .* not 0'), ((root, None, 2.5), r'not 2\.5'),
            ((root, None, True), r'not True'),
            ((root, None, 2, 'garbage'), r"device 'garbage' is not a device TensorFlow knows"),
            ((root, None, 2, '/job:x/device:TPU:0'), r'is not a device TensorFlow knows'),
            ((root, None, 2, None, False, None), r'max_image_pixels must be a whole number')):
        with pytest.raises(cli.UserError, match=match):
            load_embedder(*arguments)
    embedder = load_embedder(root)
    for images, match in ((root + '/a\0b.png', r'a\x00b\.png`: it is not a regular file'),
                          ([b'x.png'], r'image 0 of the list has shape \(\)'),
                          ([None], r'image 0 of the list has shape \(\)'),
                          (np.zeros((2, 3, 3), bool), r'holds bool values')):
        with pytest.raises(cli.UserError, match=match):
            embedder(images)
