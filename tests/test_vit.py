"""The vision transformers (nets/_vit.py): their computation against a NumPy
ViT written from timm's definition, timm's files mapped onto them, their
position embeddings resized as PyTorch resizes them, and what they refuse."""

import os
import struct

import numpy as np
import pytest
from safetensors.numpy import save_file

from triplet_reid import cli, nets
from triplet_reid.models import build, vit_weights
from triplet_reid.nets import _vit

from torch_files import write_pth
from vit_reference import DEPTH, DIM, HEADS, numpy_vit, openai_clip_state, timm_state


def small_body(input_size=(64, 32), stride=16, drop_path_rate=0.0):
    return _vit.vit_body('vit_test', DIM, DEPTH, HEADS, input_size, stride, drop_path_rate)


@pytest.mark.parametrize('stride, size', [(16, (64, 32)), (12, (64, 40))])
@pytest.mark.parametrize('kind', ['safetensors', 'pth'])
def test_timm_files_embed_as_timm_computes(tmp_path, monkeypatch, stride, size, kind):
    rng = np.random.default_rng(stride)
    grid = _vit.grid_size(size, stride)
    state = timm_state(rng, grid=grid)
    path = str(tmp_path / ('vit.' + kind))
    if kind == 'safetensors':
        save_file(dict(state), path)
    else:
        write_pth(path, state, zip_format=True, monkeypatch=monkeypatch)
    body = small_body(size, stride)
    vit_weights.load_timm_weights(body, path)
    images = rng.uniform(0, 255, (3,) + size + (3,)).astype(np.float32)
    expected = numpy_vit(state, images, stride)
    found = body(images, training=False).numpy()
    assert np.abs(found - expected).max() < 1e-4 * np.abs(expected).max()


def test_a_distilled_deit_leaves_its_distillation_token_out(tmp_path):
    rng = np.random.default_rng(1)
    state = timm_state(rng)
    plain = state['pos_embed']
    state['pos_embed'] = np.concatenate([plain[:, :1], rng.normal(0, 1, plain[:, :1].shape),
                                         plain[:, 1:]], 1).astype(np.float32)
    state['dist_token'] = rng.normal(0, 1, (1, 1, DIM)).astype(np.float32)
    state['head_dist.weight'] = rng.normal(0, 1, (10, DIM)).astype(np.float32)
    save_file(dict(state), str(tmp_path / 'deit.safetensors'))
    body = small_body()
    vit_weights.load_timm_weights(body, str(tmp_path / 'deit.safetensors'))
    np.testing.assert_array_equal(body.get_layer('tokens').pos_embed.numpy(), plain)


# PyTorch 2.13's F.interpolate(grid (1, 1, 3, 3), size=(5, 2), mode='bicubic',
# align_corners=False) of the grid [[0, 1, 2], [3, 4, 5], [6, 7, 8]].
TORCH_BICUBIC_5x2 = np.array([[-0.09659360349178314, 1.5205941200256348],
                              [1.1394076347351074, 2.7565951347351074],
                              [3.19140625, 4.80859375],
                              [5.243406295776367, 6.860594272613525],
                              [6.479406833648682, 8.096595764160156]])


def test_position_embeddings_resize_as_pytorch_does():
    grid = np.arange(9, dtype=np.float32).reshape(3, 3, 1)
    resized = _vit.resize_grid(grid, (5, 2)).numpy()[..., 0]
    np.testing.assert_allclose(resized, TORCH_BICUBIC_5x2, atol=1e-5)
    # The same size is the identity, exactly.
    values = np.random.default_rng(0).normal(size=(4, 3, 2)).astype(np.float32)
    np.testing.assert_array_equal(_vit.resize_grid(values, (4, 3)).numpy(), values)


def test_imagenet_position_embeddings_are_resized_to_the_grid(tmp_path):
    rng = np.random.default_rng(2)
    state = timm_state(rng, grid=(3, 3))
    save_file(dict(state), str(tmp_path / 'vit.safetensors'))
    body = small_body((64, 32))
    vit_weights.load_timm_weights(body, str(tmp_path / 'vit.safetensors'))
    pos_embed = body.get_layer('tokens').pos_embed.numpy()
    np.testing.assert_array_equal(pos_embed[:, :1], state['pos_embed'][:, :1])
    expected = _vit.resize_grid(state['pos_embed'][0, 1:].reshape(3, 3, DIM), (4, 2)).numpy()
    np.testing.assert_allclose(pos_embed[0, 1:], expected.reshape(8, DIM), rtol=1e-6)


def test_another_input_size_resizes_the_learnt_embeddings():
    body = small_body((64, 32))
    images = np.random.default_rng(3).uniform(0, 255, (2, 80, 48, 3)).astype(np.float32)
    assert body(images).shape == (2, DIM)


def test_stochastic_depth_drops_in_training_only():
    body = small_body(drop_path_rate=0.5)
    images = np.random.default_rng(4).uniform(0, 255, (4, 64, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(body(images, training=False), body(images, training=False))
    assert not np.allclose(body(images, training=True), body(images, training=False))
    rates = [layer.rate for layer in body.layers if isinstance(layer, _vit.DropPath)]
    assert rates[0] == 0 and rates[-1] == 0.5 and rates == sorted(rates)


def test_the_nets_are_timm_s_shapes():
    for name, count in (('vit_small_16', 21_665_664), ('vit_base_16', 85_798_656)):
        body = nets.load(name, input_size=(224, 224))
        # timm's vit_*_patch16_224 without its classifier.
        assert body.count_params() == count, name


def refused(match, call, *args, **kwargs):
    with pytest.raises(cli.UserError, match=match):
        call(*args, **kwargs)


def test_files_that_do_not_fit_are_refused(tmp_path):
    rng = np.random.default_rng(5)
    state = timm_state(rng, grid=(5, 2))
    save_file(dict(state), str(tmp_path / 'other_grid.safetensors'))
    refused(r'10 patches, which is neither the 4×2 grid', vit_weights.load_timm_weights,
            small_body(), str(tmp_path / 'other_grid.safetensors'))
    wide = timm_state(rng, dim=2 * DIM)
    save_file(dict(wide), str(tmp_path / 'wide.safetensors'))
    refused(r'another width', vit_weights.load_timm_weights, small_body(),
            str(tmp_path / 'wide.safetensors'))
    deep = timm_state(rng, depth=DEPTH + 1)
    save_file(dict(deep), str(tmp_path / 'deep.safetensors'))
    refused(r'holds `blocks.2', vit_weights.load_timm_weights, small_body(),
            str(tmp_path / 'deep.safetensors'))
    shallow = {k: v for k, v in timm_state(rng).items() if not k.startswith('blocks.1.')}
    save_file(shallow, str(tmp_path / 'shallow.safetensors'))
    refused(r'lacks the weights of `blocks.1.norm1`', vit_weights.load_timm_weights,
            small_body(), str(tmp_path / 'shallow.safetensors'))


@pytest.mark.parametrize('shape', [(5,), (9, DIM), (1, 1, DIM), (1, 0, DIM), ()])
def test_position_embeddings_of_another_shape_are_refused(tmp_path, shape):
    state = timm_state(np.random.default_rng(13))
    state['pos_embed'] = np.ones(shape, np.float32)
    save_file(dict(state), str(tmp_path / 'pos.safetensors'))
    refused(r'position embeddings of shape|position embeddings for', vit_weights.load_timm_weights,
            small_body(), str(tmp_path / 'pos.safetensors'))
    # A distilled file whose embeddings could not hold its distillation token.
    state['dist_token'] = np.ones((1, 1, DIM), np.float32)
    save_file(dict(state), str(tmp_path / 'dist.safetensors'))
    refused(r'position embeddings of shape|position embeddings for', vit_weights.load_timm_weights,
            small_body(), str(tmp_path / 'dist.safetensors'))
    clip = {'visual.class_embedding': np.ones(DIM, np.float32),
            'visual.positional_embedding': np.ones(shape[1:], np.float32)}
    save_file(clip, str(tmp_path / 'clip.safetensors'))
    refused(r'position embeddings of shape|position embeddings for',
            vit_weights.load_clip_weights,
            _vit.vit_body('clip_test', DIM, DEPTH, HEADS, (64, 32), 16, 0.0, clip=True),
            str(tmp_path / 'clip.safetensors'))


def test_hostile_safetensors_files_are_refused(tmp_path):
    huge = tmp_path / 'huge_header.safetensors'
    huge.write_bytes(struct.pack('<Q', 1 << 40) + b'{}')
    refused(r'not a readable safetensors file', vit_weights.load_timm_weights, small_body(),
            str(huge))
    claims = tmp_path / 'claims.safetensors'
    header = b'{"pos_embed":{"dtype":"F32","shape":[1000000,1000000],"data_offsets":[0,' \
             b'4000000000000]}}'
    claims.write_bytes(struct.pack('<Q', len(header)) + header + b'\0' * 64)
    refused(r'not a readable safetensors file', vit_weights.load_timm_weights, small_body(),
            str(claims))
    save_file(dict(timm_state(np.random.default_rng(6))), str(tmp_path / 'cut.safetensors'))
    data = (tmp_path / 'cut.safetensors').read_bytes()
    (tmp_path / 'cut.safetensors').write_bytes(data[:len(data) // 2])
    refused(r'not a readable safetensors file', vit_weights.load_timm_weights, small_body(),
            str(tmp_path / 'cut.safetensors'))
    refused(r'is not a regular file|a folder', vit_weights.load_timm_weights, small_body(),
            str(tmp_path))


@pytest.mark.parametrize('kwargs, match', [
    ({'pooling': 'gem'}, r'class token as the feature; --pooling gem'),
    ({'patch_stride': 17}, r'--patch_stride `17` does not fit'),
    ({'patch_stride': 0}, r'--patch_stride `0` does not fit'),
    ({'input_size': (64, 8)}, r'smaller than one 16×16 patch'),
    ({'input_size': (512, 512), 'patch_stride': 4}, r'more than the 4096'),
])
def test_what_a_transformer_cannot_take_is_refused(kwargs, match):
    refused(match, nets.check_transformer, 'vit_small_16', **kwargs)


def test_build_refuses_another_pooling_for_a_transformer():
    refused(r'class token', build.build_model, 'vit_small_16', 'bnneck', 384, pooling='max')


@pytest.fixture(scope='module')
def vit_experiment(tmp_path_factory):
    """ViT-S/16 trained for 3 iterations at stride 12 on 40×28 images (3×2
    patches) with a camera embedding (SIE) of the training set's 3 cameras,
    and embed.py's embeddings of its training set."""
    import h5py
    from triplet_reid import embed, train
    from conftest import base_args, make_dataset
    tmp = tmp_path_factory.mktemp('vit')
    image_root = str(tmp / 'data')
    csv_path = make_dataset(image_root, num_ids=4, images_per_id=3, size=(40, 28))
    root = str(tmp / 'exp')
    argv = base_args(root, csv_path, image_root, 3, '--head_name', 'bnneck',
                     '--id_loss_weight', '1', '--patch_stride', '12', '--drop_path_rate',
                     '0.2', '--net_input_height', '40', '--net_input_width', '28', '--sie',
                     '--sie_weight', '2', '--camera_regex', r'_c(\d+)')
    argv[argv.index('tiny')] = 'vit_small_16'
    assert train.main(argv) == 0
    assert embed.main(['--experiment_root', root, '--dataset', csv_path, '--quiet']) == 0
    with h5py.File(str(tmp / 'exp' / 'train_embeddings.h5'), 'r') as f:
        embeddings = f['emb'][()]
    return root, csv_path, image_root, embeddings


def test_a_vit_experiment_stores_its_patches_and_embeds(vit_experiment):
    import json
    import os
    from triplet_reid.models.inference import load_experiment
    root, _, _, embeddings = vit_experiment
    with open(os.path.join(root, 'args.json')) as f:
        stored = json.load(f)
    assert stored['patch_stride'] == 12 and stored['drop_path_rate'] == 0.2
    assert (stored['sie_cameras'], stored['sie_weight']) == (['1', '2', '3'], 2.0)
    model, train_args, _ = load_experiment(root)
    tokens = model.get_layer('vit_small_16').get_layer('tokens')
    assert tokens.grid == (3, 2) and train_args['patch_stride'] == 12
    assert tokens.cameras == 3 and tokens.weight == 2.0
    assert embeddings.shape == (12, 16) and np.isfinite(embeddings).all()


def test_a_vit_with_sie_embeds_each_image_with_its_camera(vit_experiment, tmp_path, capsys):
    import h5py
    from triplet_reid import cli, embed
    from triplet_reid.models.inference import load_embedder
    root, csv_path, image_root, embeddings = vit_experiment
    fids = [line.split(',')[1].strip() for line in open(csv_path)]
    embedder = load_embedder(root)
    assert embedder.sie_cameras == ['1', '2', '3']
    # make_dataset names image j of an identity as seen by camera j % 3 + 1.
    cameras = [fid.split('_c')[1][0] for fid in fids]
    paths = [os.path.join(image_root, fid) for fid in fids]
    np.testing.assert_allclose(embedder(paths, cameras), embeddings, rtol=1e-4, atol=1e-4)
    # Another camera, or none, embeds otherwise; a camera the table lacks is refused.
    unknown = embedder(paths, [None] * len(paths))
    with pytest.raises(cli.UserError, match=r"camera '7' is not one of the 3 cameras"):
        embedder(paths, ['7'] * len(paths))
    assert np.abs(embedder(paths, ['1'] * len(paths)) - embeddings).max() > 1e-3
    np.testing.assert_allclose(embedder(paths), unknown, rtol=1e-5, atol=1e-5)
    # A regex that finds another camera in every path: the images' digit 1, 2 or 3 of `s1`.
    assert embed.main(['--experiment_root', root, '--dataset', csv_path, '--filename',
                       str(tmp_path / 'other.h5'), '--camera_regex', r'c\ds(\d)']) == 0
    with h5py.File(str(tmp_path / 'other.h5'), 'r') as f:
        np.testing.assert_allclose(f['emb'][()], embedder(paths, ['1'] * len(paths)),
                                   rtol=1e-4, atol=1e-4)
    assert embed.main(['--experiment_root', root, '--dataset', csv_path, '--filename',
                       str(tmp_path / 'none.h5'), '--camera_regex', r'(\d)_00\.jpg']) == 0
    assert 'are of cameras the camera embedding (SIE) did not learn (0)' in \
        capsys.readouterr().err
    with pytest.raises(cli.UserError, match=r"has no camera that --camera_regex"):
        embed.main(['--experiment_root', root, '--dataset', csv_path, '--filename',
                    str(tmp_path / 'x.h5'), '--camera_regex', r'_x(\d)'])
    with pytest.raises(cli.UserError, match=r'2 cameras were given for 12 images'):
        embedder(paths, ['1', '2'])
    assert not os.path.exists(tmp_path / 'x.h5')


@pytest.mark.slow
def test_a_vit_exports_to_saved_model_onnx_and_tflite(vit_experiment, tmp_path):
    import onnxruntime
    import tensorflow as tf
    from triplet_reid import export
    from triplet_reid.models.inference import load_embedder
    from conftest import run_tflite
    root, _, _, _ = vit_experiment
    images = np.random.default_rng(7).uniform(0, 255, (3, 40, 28, 3)).astype(np.float32)
    # Its camera embedding (SIE): the exports take each image's row in its
    # table of cameras, -1 for none.
    rows = np.array([0, 2, -1], np.int32)
    expected = load_embedder(root)(images, ['1', '3', None])
    assert export.main(['--experiment_root', root, '--output', str(tmp_path / 'sm'),
                        '--onnx', str(tmp_path / 'm.onnx'), '--tflite',
                        str(tmp_path / 'm.tflite'), '--tracker', str(tmp_path / 'tracker'),
                        '--tracker_formats', 'onnx', '--quiet']) == 0
    loaded = tf.saved_model.load(str(tmp_path / 'sm'))
    np.testing.assert_allclose(loaded.signatures['serving_default'](
        images=images, cameras=rows)['emb'], expected, rtol=1e-4, atol=1e-4)
    saved = load_embedder(str(tmp_path / 'sm'))
    assert saved.sie_cameras == ['1', '2', '3']
    np.testing.assert_allclose(saved(images, ['1', '3', None]), expected, rtol=1e-4, atol=1e-4)
    session = onnxruntime.InferenceSession(str(tmp_path / 'm.onnx'))
    np.testing.assert_allclose(session.run(None, {'images': images, 'cameras': rows})[0],
                               expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(run_tflite(str(tmp_path / 'm.tflite'), images, rows), expected,
                               rtol=1e-4, atol=1e-4)
    # A tracker passes crops alone: they embed without a camera.
    tracker = onnxruntime.InferenceSession(str(tmp_path / 'tracker' / os.listdir(
        str(tmp_path / 'tracker'))[0].replace('.metadata.json', '')))
    crops = ((images / 255 - np.array([0.485, 0.456, 0.406], np.float32)) / np.array(
        [0.229, 0.224, 0.225], np.float32)).transpose(0, 3, 1, 2).astype(np.float32)
    np.testing.assert_allclose(tracker.run(None, {'images': crops})[0][2], expected[2],
                               rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize('clip', [False, True])
def test_the_camera_embedding_adds_as_transreid_and_clip_reid_add_it(clip):
    rng = np.random.default_rng(13)
    state = timm_state(rng, grid=(4, 2))
    del state['head.weight'], state['head.bias']
    if clip:
        del state['patch_embed.proj.bias']
        state['norm_pre.weight'] = rng.uniform(0.5, 1.5, DIM).astype(np.float32)
        state['norm_pre.bias'] = rng.normal(0, 0.1, DIM).astype(np.float32)
    # TransReID's table has a middle axis of 1; CLIP-ReID's has none.
    table = rng.normal(0, 0.5, (3, DIM)).astype(np.float32)
    state['sie_embed'] = table if clip else table[:, None]
    body = _vit.vit_body('sie_test', DIM, DEPTH, HEADS, (64, 32), 16, 0.0, clip=clip, sie=3,
                         sie_weight=1.5)
    vit_weights.assign_vit(body, state, 'sie.pth', 'a test')
    images = rng.uniform(0, 255, (4, 64, 32, 3)).astype(np.float32)
    images[3] = images[2]
    cameras = np.array([0, 2, -1, 7], np.int32)
    added = 1.5 * np.concatenate([table, np.zeros((1, DIM), np.float32)])[
        np.where((cameras >= 0) & (cameras < 3), cameras, 3)]
    del state['sie_embed']
    expected = numpy_vit(state, images, clip=clip, cameras=added)
    found = body({'images': images, 'cameras': cameras}, training=False).numpy()
    assert np.abs(found - expected).max() < 1e-4 * np.abs(expected).max()
    # A camera outside the table (-1: unknown) embeds as no camera does.
    np.testing.assert_allclose(found[2], found[3], rtol=1e-5, atol=1e-5)
    assert np.abs(found[0] - found[1]).max() > 1e-3


def test_what_the_camera_embedding_cannot_take_is_refused(tmp_path, tiny_dataset):
    from triplet_reid import train
    from conftest import base_args
    rng = np.random.default_rng(14)
    state = timm_state(rng, grid=(4, 2))
    plain = small_body()
    with_sie = _vit.vit_body('sie_test', DIM, DEPTH, HEADS, (64, 32), 16, 0.0, sie=3)
    refused(r'has none of; import it with the config', vit_weights.assign_vit, plain,
            dict(state, sie_embed=np.ones((3, 1, DIM), np.float32)), 'x.pth', 'a test')
    refused(r'holds no camera embedding, where `sie_test` takes a camera embedding of 3',
            vit_weights.assign_vit, with_sie, state, 'x.pth', 'a test')
    # ImageNet's weights have none: a body with SIE keeps its own, as TransReID starts.
    table = with_sie.get_layer('tokens').sie_embed.numpy()
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()},
              str(tmp_path / 'imagenet.safetensors'))
    vit_weights.load_timm_weights(with_sie, str(tmp_path / 'imagenet.safetensors'))
    np.testing.assert_array_equal(with_sie.get_layer('tokens').sie_embed.numpy(), table)
    refused(r'--sie learns an embedding per camera, and the cameras found number 1001',
            nets.check_transformer, 'vit_small_16', sie=1001)
    csv_path, image_root = tiny_dataset
    argv = base_args(str(tmp_path / 'exp'), csv_path, image_root, 2, '--sie')
    refused(r'--sie adds each camera\'s embedding .* `tiny` has none', train.main,
            argv + ['--camera_regex', r'_c(\d+)'])
    argv[argv.index('tiny')] = 'vit_small_16'
    refused(r'needs each image\'s camera: give --camera_regex', train.main, argv)
    refused(r'has no camera that --camera_regex', train.main,
            argv + ['--camera_regex', r'_x(\d+)'])
    assert not os.path.exists(tmp_path / 'exp')


def test_int8_tflite_of_a_transformer_quantises_its_weights_only(tmp_path):
    # int8 weights, activations quantised on the fly: close, and smaller (a quarter for
    # ViT-S/16; this tiny net's graph weighs more beside its weights).
    from triplet_reid.serving import exported
    from conftest import run_tflite
    body = small_body()
    images = np.random.default_rng(12).uniform(0, 255, (3, 64, 32, 3)).astype(np.float32)
    assert exported.has_layer_norm(body)
    exported.write_tflite(body, str(tmp_path / 'f.tflite'))
    exported.write_tflite(body, str(tmp_path / 'q.tflite'), representative=images)
    expected = body(images).numpy()
    quantised = run_tflite(str(tmp_path / 'q.tflite'), images)
    cosines = (quantised * expected).sum(1) / (np.linalg.norm(quantised, axis=1) *
                                               np.linalg.norm(expected, axis=1))
    assert cosines.min() > 0.99, cosines
    assert (tmp_path / 'q.tflite').stat().st_size < (tmp_path / 'f.tflite').stat().st_size / 2


def test_transformer_flags_for_another_net_are_refused(tmp_path, tiny_dataset):
    from triplet_reid import train
    from conftest import base_args
    csv_path, image_root = tiny_dataset
    root = str(tmp_path / 'exp')
    with pytest.raises(cli.UserError, match=r'--patch_stride is for the vision transformers'):
        train.main(base_args(root, csv_path, image_root, 1, '--patch_stride', '12'))
    argv = base_args(root, csv_path, image_root, 1, '--pooling', 'gem')
    argv[argv.index('tiny')] = 'vit_small_16'
    with pytest.raises(cli.UserError, match=r'class token'):
        train.main(argv)
    assert not (tmp_path / 'exp').exists()


def transreid_shuffle(tokens, shift=5, groups=2):
    """TransReID's shuffle_unit in NumPy: (B, N, D) to the shuffled patches."""
    x = np.concatenate([tokens[:, shift:], tokens[:, 1:shift]], 1)
    if x.shape[1] % groups:
        x = np.concatenate([x, x[:, -2:-1]], 1)
    b, _, d = x.shape
    return x.reshape(b, groups, -1, d).transpose(0, 2, 1, 3).reshape(b, -1, d)


@pytest.mark.parametrize('count, parts', [(129, 4), (211, 4), (12, 3), (7, 2)])
def test_the_jigsaw_patches_are_transreid_s(count, parts):
    tokens = np.random.default_rng(count).normal(size=(2, count, 5)).astype(np.float32)
    found = _vit.JigsawPatches(parts)(tokens).numpy().reshape(2, parts, -1, 5)
    shuffled = transreid_shuffle(tokens)
    length = (count - 1) // parts
    for k in range(parts):
        np.testing.assert_array_equal(found[:, k, 0], tokens[:, 0])
        np.testing.assert_array_equal(found[:, k, 1:], shuffled[:, k * length:(k + 1) * length])


def test_a_jpm_body_starts_both_branches_from_the_last_block(tmp_path):
    rng = np.random.default_rng(8)
    state = timm_state(rng, grid=(4, 2))
    save_file(dict(state), str(tmp_path / 'vit.safetensors'))
    plain, jpm = small_body(), _vit.vit_body('vit_test', DIM, DEPTH, HEADS, (64, 32), 16, 0.0,
                                             jpm=2)
    for body in (plain, jpm):
        vit_weights.load_timm_weights(body, str(tmp_path / 'vit.safetensors'))
    images = rng.uniform(0, 255, (2, 64, 32, 3)).astype(np.float32)
    features = jpm(images).numpy()
    assert features.shape == (2, 3 * DIM)
    np.testing.assert_allclose(features[:, :DIM], plain(images).numpy(), rtol=1e-5, atol=1e-5)
    assert not np.allclose(features[:, DIM:2 * DIM], features[:, :DIM], atol=1e-3)


def test_the_jpm_embedding_weighs_each_part_by_their_number():
    from triplet_reid.models.build import build_model
    model, body = build_model('vit_small_16', 'pooled', 3 * 384, input_size=(64, 32), jpm=2)
    images = np.random.default_rng(9).uniform(0, 255, (2, 64, 32, 3)).astype(np.float32)
    features, emb = body(images).numpy(), model(images)['emb'].numpy()
    np.testing.assert_allclose(emb[:, :384], features[:, :384], rtol=1e-6)
    np.testing.assert_allclose(emb[:, 384:], features[:, 384:] / 2, rtol=1e-6)


@pytest.mark.parametrize('name, head, dim, jpm, input_size, match', [
    ('tiny', 'bnneck', 1024, 4, (64, 32), r'--jpm cuts a vision transformer'),
    ('vit_small_16', 'fc1024', 1920, 4, (64, 32), r'give --head_name bnneck .* 1920'),
    ('vit_small_16', 'bnneck', 384, 4, (64, 32), r'5×384 = 1920 values'),
    ('vit_small_16', 'bnneck', 3 * 384, 2, (32, 32), r'their 4 patches fill'),
    ('vit_small_16', 'bnneck', 10 * 384, 9, (64, 32), r'--jpm 9 does not fit'),
])
def test_what_jpm_cannot_take_is_refused(name, head, dim, jpm, input_size, match):
    from triplet_reid.models.build import build_model
    refused(match, build_model, name, head, dim, input_size=input_size, jpm=jpm)


def test_jpm_trains_each_part_with_its_losses(tmp_path, tiny_dataset):
    from triplet_reid import train
    from triplet_reid.training import step
    from conftest import base_args
    assert step.part_mean([np.float32(2), np.float32(4), np.float32(8)], 2) == 4.0
    csv_path, image_root = tiny_dataset
    root = str(tmp_path / 'exp')
    argv = base_args(root, csv_path, image_root, 2, '--head_name', 'bnneck', '--embedding_dim',
                     str(3 * 384), '--id_loss_weight', '1', '--jpm', '2',
                     '--net_input_height', '48', '--net_input_width', '32')
    argv[argv.index('tiny')] = 'vit_small_16'
    assert train.main(argv) == 0
    import json
    import os
    with open(os.path.join(root, 'args.json')) as f:
        assert json.load(f)['jpm'] == 2


def hugging_face_clip_state(timm):
    """The image encoder `timm` by Hugging Face's names (CLIPVisionModel's)."""
    state = {'vision_model.embeddings.class_embedding': timm['cls_token'].reshape(-1),
             'vision_model.embeddings.position_embedding.weight': timm['pos_embed'][0],
             'vision_model.embeddings.patch_embedding.weight': timm['patch_embed.proj.weight']}
    names = {'norm1': 'layer_norm1', 'norm2': 'layer_norm2', 'attn.proj': 'self_attn.out_proj',
             'mlp.fc1': 'mlp.fc1', 'mlp.fc2': 'mlp.fc2'}
    for key, value in timm.items():
        if key.startswith('blocks.'):
            _, index, rest = key.split('.', 2)
            module, part = rest.rsplit('.', 1)
            layer = 'vision_model.encoder.layers.{}.'.format(index)
            if module == 'attn.qkv':
                for name, third in zip('qkv', np.split(value, 3)):
                    state[layer + 'self_attn.{}_proj.{}'.format(name, part)] = third
            else:
                state[layer + names[module] + '.' + part] = value
        elif key.startswith('norm_pre.'):
            state['vision_model.pre_layrnorm.' + key.split('.')[1]] = value
        elif key.startswith('norm.'):
            state['vision_model.post_layernorm.' + key.split('.')[1]] = value
    return state


@pytest.mark.parametrize('form,projection', [('openai', 0), ('hugging_face', 0),
                                             ('openai', 16), ('hugging_face', 16)])
def test_clip_image_encoders_embed_as_clip_computes(tmp_path, monkeypatch, form, projection):
    """CLIP's image encoder, and with a projection CLIP-ReID's features: the
    class token followed by it projected to the text space."""
    rng = np.random.default_rng(10)
    timm = timm_state(rng, grid=(14, 14))
    del timm['patch_embed.proj.bias'], timm['head.weight'], timm['head.bias']
    timm['norm_pre.weight'] = rng.uniform(0.5, 1.5, DIM).astype(np.float32)
    timm['norm_pre.bias'] = rng.normal(0, 0.1, DIM).astype(np.float32)
    path = str(tmp_path / 'clip.safetensors')
    proj = rng.normal(size=(DIM, 16)).astype(np.float32)
    if form == 'openai':
        state = openai_clip_state(timm, rng)
        state['visual.proj'] = proj
        write_pth(path.replace('.safetensors', '.pt'), state, zip_format=True,
                  monkeypatch=monkeypatch)
        path = path.replace('.safetensors', '.pt')
    else:
        save_file(dict(hugging_face_clip_state(timm), **{
            'visual_projection.weight': np.ascontiguousarray(proj.T)}), path)
    body = _vit.vit_body('clip_test', DIM, DEPTH, HEADS, (224, 224), 16, 0.0, clip=True,
                         projection=projection)
    vit_weights.load_clip_weights(body, path)
    images = rng.uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)
    expected = numpy_vit(timm, images, heads=HEADS, clip=True)
    if projection:
        expected = np.concatenate([expected, expected @ proj], 1)
    found = body(images, training=False).numpy()
    assert np.abs(found - expected).max() < 1e-4 * np.abs(expected).max()


def test_a_clip_file_of_another_width_or_no_clip_is_refused(tmp_path):
    rng = np.random.default_rng(11)
    wide = timm_state(rng, dim=2 * DIM, grid=(14, 14))
    wide['norm_pre.weight'] = wide['norm_pre.bias'] = np.ones(2 * DIM, np.float32)
    save_file(hugging_face_clip_state(wide), str(tmp_path / 'wide.safetensors'))
    body = _vit.vit_body('clip_test', DIM, DEPTH, HEADS, (224, 224), 16, 0.0, clip=True)
    refused(r'another width', vit_weights.load_clip_weights, body,
            str(tmp_path / 'wide.safetensors'))
    save_file({'weight': np.ones(3, np.float32)}, str(tmp_path / 'other.safetensors'))
    refused(r'holds no CLIP image encoder', vit_weights.load_clip_weights, body,
            str(tmp_path / 'other.safetensors'))
    # CLIP-ReID's features need the projection, which a file of the image
    # encoder alone lacks.
    narrow = timm_state(rng, grid=(14, 14))
    narrow['norm_pre.weight'] = narrow['norm_pre.bias'] = np.ones(DIM, np.float32)
    save_file(hugging_face_clip_state(narrow), str(tmp_path / 'encoder.safetensors'))
    projected = _vit.vit_body('clip_test', DIM, DEPTH, HEADS, (224, 224), 16, 0.0, clip=True,
                              projection=16)
    refused(r"lacks CLIP's projection", vit_weights.load_clip_weights, projected,
            str(tmp_path / 'encoder.safetensors'))


def test_openai_s_torchscript_archive_is_refused_as_code(tmp_path):
    import zipfile
    path = str(tmp_path / 'ViT-B-16.pt')
    with zipfile.ZipFile(path, 'w') as archive:
        # What a TorchScript archive pickles: its module, by TorchScript's class.
        archive.writestr('ViT-B-16/data.pkl', b'\x80\x02c__torch__.multimodal.model\nCLIP\n)'
                                              b'\x81.')
        archive.writestr('ViT-B-16/code/__torch__/model.py', 'class CLIP: pass\n')
    body = _vit.vit_body('clip_test', DIM, DEPTH, HEADS, (224, 224), 16, 0.0, clip=True)
    refused(r'refusing .*ViT-B-16.pt', vit_weights.load_clip_weights, body, path)
