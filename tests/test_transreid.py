"""TransReID's trained models imported (models/transreid.py): files written as
TransReID's training writes them (without PyTorch), embedded as a NumPy ViT
from timm's definition computes, and the configs that do not import refused
by name. bench/vit_peers.py compares the import with TransReID's own code."""

import os

import numpy as np
import pytest

from triplet_reid import cli
from triplet_reid import import_model
from triplet_reid.models import transreid
from triplet_reid.models.inference import load_experiment

from vit_reference import numpy_vit, timm_state
from torch_files import write_pth

CONFIG = """MODEL:
  PRETRAIN_CHOICE: 'imagenet'
  NAME: 'transformer'
  NO_MARGIN: True
  TRANSFORMER_TYPE: 'deit_small_patch16_224_TransReID'
  STRIDE_SIZE: [16, 16]
{model}
INPUT:
  SIZE_TRAIN: [64, 32]
  SIZE_TEST: [64, 32]
  PIXEL_MEAN: [0.5, 0.5, 0.5]
  PIXEL_STD: [0.5, 0.5, 0.5]
TEST:
  NECK_FEAT: '{neck}'
  FEAT_NORM: 'yes'
"""


def transreid_file(path, rng, monkeypatch, parts=0):
    """A TransReID state dict of DeiT-S/16 at 64×32 (4×2 patches), with JPM
    of `parts` parts when given, as its training saves it."""
    backbone = timm_state(rng, dim=384, depth=12, grid=(4, 2))
    state = {'base.' + key: value for key, value in backbone.items() if not key.startswith('head')}
    state['base.fc.weight'] = rng.normal(size=(1000, 384)).astype(np.float32)
    state['base.fc.bias'] = np.zeros(1000, np.float32)
    names = ['bottleneck'] + ['bottleneck_{}'.format(k) for k in range(1, parts + 1)]
    for name in names:
        state[name + '.weight'] = rng.uniform(0.5, 1.5, 384).astype(np.float32)
        state[name + '.bias'] = np.zeros(384, np.float32)
        state[name + '.running_mean'] = rng.normal(0, 0.2, 384).astype(np.float32)
        state[name + '.running_var'] = rng.uniform(0.5, 2, 384).astype(np.float32)
        state[name + '.num_batches_tracked'] = np.array(7)
        state[name.replace('bottleneck', 'classifier') + '.weight'] = rng.normal(
            size=(10, 384)).astype(np.float32)
    if parts:
        for branch in ('b1', 'b2'):
            for key, value in backbone.items():
                if key.startswith('blocks.11.'):
                    state[branch + '.0.' + key[len('blocks.11.'):]] = (
                        value + rng.normal(0, 0.01, value.shape)).astype(np.float32)
            state[branch + '.1.weight'] = rng.uniform(0.5, 1.5, 384).astype(np.float32)
            state[branch + '.1.bias'] = rng.normal(0, 0.1, 384).astype(np.float32)
    write_pth(path, state, zip_format=True, monkeypatch=monkeypatch)
    return backbone, state


def write_config(path, model='', neck='before'):
    path.write_text(CONFIG.format(model=model, neck=neck))
    return str(path)


def test_a_transreid_baseline_embeds_as_timm_s_vit_computes(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    backbone, _ = transreid_file(str(tmp_path / 'm.pth'), rng, monkeypatch)
    config = write_config(tmp_path / 'vit_base.yml')
    assert import_model.main(['--weights', str(tmp_path / 'm.pth'), '--config', config,
                              '--experiment_root', str(tmp_path / 'exp')]) == 0
    model, args, _ = load_experiment(str(tmp_path / 'exp'))
    assert (args['model_name'], args['head_name'], args['embedding_dim'], args['jpm'],
            args['metric'], args['imported_classes']) == ('vit_small_16', 'pooled', 384, 0,
                                                          'cosine', 10)
    images = rng.uniform(0, 255, (2, 64, 32, 3)).astype(np.float32)
    expected = numpy_vit(backbone, images, heads=6)
    found = model(images, training=False)['emb'].numpy()
    assert np.abs(found - expected).max() < 1e-4 * np.abs(expected).max()


def test_a_jpm_model_embeds_its_parts_after_their_bnnecks(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    backbone, state = transreid_file(str(tmp_path / 'm.pth'), rng, monkeypatch, parts=2)
    config = write_config(tmp_path / 'vit_jpm.yml', "  JPM: True\n  DEVIDE_LENGTH: 2", 'after')
    transreid.import_transreid(str(tmp_path / 'm.pth'), config, str(tmp_path / 'exp'))
    model, args, _ = load_experiment(str(tmp_path / 'exp'))
    assert (args['head_name'], args['embedding_dim'], args['jpm']) == ('bnneck', 3 * 384, 2)
    images = rng.uniform(0, 255, (2, 64, 32, 3)).astype(np.float32)
    emb = model(images, training=False)['emb'].numpy()
    # The global part: the backbone with the branch b1 as its last block and
    # norm, then its BNNeck (TransReID's BatchNorm1d, epsilon 1e-5).
    global_state = dict(backbone)
    for key in [k for k in backbone if k.startswith('blocks.11.')]:
        global_state[key] = state['b1.0.' + key[len('blocks.11.'):]]
    global_state['norm.weight'], global_state['norm.bias'] = state['b1.1.weight'], \
        state['b1.1.bias']
    features = numpy_vit(global_state, images, heads=6)
    expected = (features - state['bottleneck.running_mean']) / np.sqrt(
        state['bottleneck.running_var'] + 1e-5) * state['bottleneck.weight']
    np.testing.assert_allclose(emb[:, :384], expected, rtol=1e-3, atol=1e-3)
    assert emb.shape == (2, 1152) and np.isfinite(emb).all()


def test_a_model_with_sie_embeds_each_image_with_its_camera(tmp_path, monkeypatch):
    from triplet_reid.models.inference import load_embedder
    rng = np.random.default_rng(4)
    backbone, state = transreid_file(str(tmp_path / 'm.pth'), rng, monkeypatch)
    # TransReID's table of Market-1501's 6 cameras: camera k is row k - 1.
    table = rng.normal(0, 0.5, (6, 1, 384)).astype(np.float32)
    state['base.sie_embed'] = table
    write_pth(str(tmp_path / 'm.pth'), state, zip_format=True, monkeypatch=monkeypatch)
    config = write_config(tmp_path / 'vit_sie.yml', "  SIE_CAMERA: True\n  SIE_COE: 2.5")
    with open(config, 'a') as f:
        f.write("DATASETS:\n  NAMES: ('Market1501',)\n")
    transreid.import_transreid(str(tmp_path / 'm.pth'), config, str(tmp_path / 'exp'))
    _, args, _ = load_experiment(str(tmp_path / 'exp'))
    assert (args['sie_cameras'], args['sie_weight'], args['camera_regex']) == (
        ['1', '2', '3', '4', '5', '6'], 2.5, r'_c(\d+)')
    images = rng.uniform(0, 255, (2, 64, 32, 3)).astype(np.float32)
    expected = numpy_vit(backbone, images, heads=6, cameras=2.5 * table[[4, 0], 0])
    found = load_embedder(str(tmp_path / 'exp'))(images, ['5', '1'])
    assert np.abs(found - expected).max() < 1e-4 * np.abs(expected).max()
    # A file without the table its config turns on is refused.
    del state['base.sie_embed']
    write_pth(str(tmp_path / 'm.pth'), state, zip_format=True, monkeypatch=monkeypatch)
    with pytest.raises(cli.UserError, match=r'lacks `base.sie_embed`, the camera embedding'):
        transreid.import_transreid(str(tmp_path / 'm.pth'), config, str(tmp_path / 'e2'))
    assert not os.path.exists(tmp_path / 'e2')


@pytest.mark.parametrize('old, new, match', [
    ("  STRIDE_SIZE: [16, 16]", "  STRIDE_SIZE: [16, 16]\n  SIE_VIEW: True",
     r'SIE_VIEW to `True`: the view embedding'),
    ("  STRIDE_SIZE: [16, 16]", "  STRIDE_SIZE: [16, 16]\n  SIE_CAMERA: True\n  SIE_COE: .inf",
     r'SIE_COE to `inf`'),
    ("  STRIDE_SIZE: [16, 16]", "  STRIDE_SIZE: [16, 16]\n  SHIFT_NUM: 3",
     r'MODEL.SHIFT_NUM to `3`'),
    ("  STRIDE_SIZE: [16, 16]", "  STRIDE_SIZE: [12, 16]", r'one whole stride for both axes'),
    ("  NAME: 'transformer'", "  NAME: 'resnet50'", r"TransReID's ResNet-50 does not import"),
    ("  SIZE_TEST: [64, 32]", "  SIZE_TEST: [128, 64]", r'tests at its training size'),
    ("  PIXEL_STD: [0.5, 0.5, 0.5]", "  PIXEL_STD: [0.2, 0.2, 0.2]", r'\[0.5, 0.5, 0.5\]'),
    ("  STRIDE_SIZE: [16, 16]", "  STRIDE_SIZE: [16, 16]\n  DROP_PATH: .nan",
     r'DROP_PATH to `nan`'),
    ("  STRIDE_SIZE: [16, 16]", "  STRIDE_SIZE: [16, 16]\n  JPM: True\n  DEVIDE_LENGTH: 99",
     r'--jpm 99 does not fit'),
])
def test_configs_that_do_not_import_are_refused(tmp_path, old, new, match):
    (tmp_path / 'c.yml').write_text(CONFIG.format(model='', neck='before').replace(old, new))
    with pytest.raises(cli.UserError, match=match):
        transreid.import_transreid(str(tmp_path / 'missing.pth'), str(tmp_path / 'c.yml'),
                                   str(tmp_path / 'exp'))
    assert not os.path.exists(tmp_path / 'exp')


def test_transreid_s_own_vit_small_is_refused_by_name(tmp_path):
    config = tmp_path / 'c.yml'
    config.write_text(CONFIG.format(model='', neck='before').replace(
        'deit_small_patch16_224_TransReID', 'vit_small_patch16_224_TransReID'))
    with pytest.raises(cli.UserError, match=r'768 wide and 8 blocks deep'):
        transreid.import_transreid(str(tmp_path / 'm.pth'), str(config), str(tmp_path / 'exp'))


def test_a_file_of_another_config_is_refused(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    transreid_file(str(tmp_path / 'm.pth'), rng, monkeypatch)
    stride = str(tmp_path / 's.yml')
    (tmp_path / 's.yml').write_text(CONFIG.format(model='', neck='before').replace(
        'STRIDE_SIZE: [16, 16]', 'STRIDE_SIZE: [12, 12]'))
    with pytest.raises(cli.UserError, match=r'position embeddings for 8 patches'):
        transreid.import_transreid(str(tmp_path / 'm.pth'), stride, str(tmp_path / 'e1'))
    jpm = write_config(tmp_path / 'j.yml', "  JPM: True", 'after')
    with pytest.raises(cli.UserError, match=r'lacks the weights of `b1.0.norm1`'):
        transreid.import_transreid(str(tmp_path / 'm.pth'), jpm, str(tmp_path / 'e2'))
    assert not os.path.exists(tmp_path / 'e1') and not os.path.exists(tmp_path / 'e2')


@pytest.mark.parametrize('key, value, match', [
    ('base.pos_embed', np.ones(5, np.float32), r'position embeddings of shape \(5,\)'),
    ('base.pos_embed', None, r'lacks its position embeddings; is it the checkpoint of'),
    ('bottleneck_1.weight', np.ones((2, 384), np.float32),
     r'holds `bottleneck_1.weight` of shape \(2, 384\), where the BNNeck'),
    ('bottleneck_2.running_var', None, r'lacks `bottleneck_2.running_var`'),
])
def test_a_damaged_checkpoint_is_refused(tmp_path, monkeypatch, key, value, match):
    rng = np.random.default_rng(3)
    _, state = transreid_file(str(tmp_path / 'm.pth'), rng, monkeypatch, parts=2)
    if value is None:
        del state[key]
    else:
        state[key] = value
    write_pth(str(tmp_path / 'm.pth'), state, zip_format=True, monkeypatch=monkeypatch)
    config = write_config(tmp_path / 'vit_jpm.yml', "  JPM: True\n  DEVIDE_LENGTH: 2", 'after')
    with pytest.raises(cli.UserError, match=match):
        transreid.import_transreid(str(tmp_path / 'm.pth'), config, str(tmp_path / 'exp'))
    assert not os.path.exists(tmp_path / 'exp')
