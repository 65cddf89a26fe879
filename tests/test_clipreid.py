"""CLIP-ReID's trained models imported (models/clipreid.py): files written as
CLIP-ReID's training writes them (without PyTorch), embedded as a NumPy CLIP
image encoder computes, and the configs that do not import refused by name.
bench/vit_peers.py compares the import with CLIP-ReID's own code."""

import os

import numpy as np
import pytest

from triplet_reid import cli
from triplet_reid import import_model
from triplet_reid.models import clipreid
from triplet_reid.models.inference import load_experiment

from vit_reference import numpy_vit, openai_clip_state, timm_state
from torch_files import write_pth

CONFIG = """MODEL:
  PRETRAIN_CHOICE: 'imagenet'
  METRIC_LOSS_TYPE: 'triplet'
  NAME: 'ViT-B-16'
  STRIDE_SIZE: [16, 16]
  ID_LOSS_WEIGHT : 0.25
  # SIE_CAMERA: True
INPUT:
  SIZE_TRAIN: [64, 32]
  SIZE_TEST: [64, 32]
  PIXEL_MEAN: [0.5, 0.5, 0.5]
  PIXEL_STD: [0.5, 0.5, 0.5]
TEST:
  NECK_FEAT: '{neck}'
  FEAT_NORM: 'yes'
"""


@pytest.fixture(scope='module')
def clipreid_file(tmp_path_factory):
    """A CLIP-ReID state dict of ViT-B/16 at 64×32 (4×2 patches) with its
    prompt learner and text encoder, as its training saves it (written once:
    ViT-B/16's weights take a third of a gigabyte)."""
    rng = np.random.default_rng(0)
    timm = timm_state(rng, dim=768, depth=12, grid=(4, 2))
    del timm['patch_embed.proj.bias'], timm['head.weight'], timm['head.bias']
    timm['norm_pre.weight'] = rng.uniform(0.5, 1.5, 768).astype(np.float32)
    timm['norm_pre.bias'] = rng.normal(0, 0.1, 768).astype(np.float32)
    clip = openai_clip_state(timm, rng)
    state = {'image_encoder.' + key[len('visual.'):]: value for key, value in clip.items()
             if key.startswith('visual.')}
    state['image_encoder.proj'] = rng.normal(0, 0.05, (768, 512)).astype(np.float32)
    for name, width in clipreid.NECKS.items():
        state[name + '.weight'] = rng.uniform(0.5, 1.5, width).astype(np.float32)
        state[name + '.bias'] = np.zeros(width, np.float32)
        state[name + '.running_mean'] = rng.normal(0, 0.2, width).astype(np.float32)
        state[name + '.running_var'] = rng.uniform(0.5, 2, width).astype(np.float32)
        state[name + '.num_batches_tracked'] = np.array(7)
    state['classifier.weight'] = rng.normal(size=(10, 768)).astype(np.float32)
    state['classifier_proj.weight'] = rng.normal(size=(10, 512)).astype(np.float32)
    state['prompt_learner.cls_ctx'] = rng.normal(size=(10, 4, 512)).astype(np.float32)
    state['text_encoder.positional_embedding'] = rng.normal(size=(77, 512)).astype(np.float32)
    state['text_encoder.ln_final.weight'] = np.ones(512, np.float32)
    path = str(tmp_path_factory.mktemp('clipreid') / 'ViT-B-16_60.pth')
    with pytest.MonkeyPatch.context() as monkeypatch:
        write_pth(path, state, zip_format=True, monkeypatch=monkeypatch)
    return path, timm, state


def write_config(path, neck='before', old=None, new=None):
    text = CONFIG.format(neck=neck)
    path.write_text(text if old is None else text.replace(old, new))
    return str(path)


@pytest.mark.parametrize('neck', ['before', 'after'])
def test_a_clipreid_model_embeds_its_token_and_its_projection(tmp_path, clipreid_file, neck):
    path, timm, state = clipreid_file
    config = write_config(tmp_path / 'vit_clipreid.yml', neck)
    assert import_model.main(['--weights', path, '--config', config,
                              '--experiment_root', str(tmp_path / 'exp')]) == 0
    model, args, _ = load_experiment(str(tmp_path / 'exp'))
    assert (args['model_name'], args['head_name'], args['embedding_dim'], args['metric'],
            args['imported_classes']) == ('clipreid_vit_base_16', 'pooled' if neck == 'before'
                                          else 'bnneck', 1280, 'cosine', 10)
    images = np.random.default_rng(1).uniform(0, 255, (2, 64, 32, 3)).astype(np.float32)
    token = numpy_vit(timm, images, heads=12, clip=True)
    features = [token, token @ state['image_encoder.proj']]
    if neck == 'after':
        # CLIP-ReID's two BatchNorm1d (epsilon 1e-5), each on its feature.
        features = [(f - state[name + '.running_mean']) / np.sqrt(
            state[name + '.running_var'] + 1e-5) * state[name + '.weight']
            for f, name in zip(features, clipreid.NECKS)]
    expected = np.concatenate(features, 1)
    found = model(images, training=False)['emb'].numpy()
    assert np.abs(found - expected).max() < 1e-4 * np.abs(expected).max()


def test_a_clipreid_model_with_sie_adds_the_camera_to_its_class_token(tmp_path, clipreid_file,
                                                                      monkeypatch):
    from triplet_reid.models.inference import load_embedder
    path, timm, state = clipreid_file
    rng = np.random.default_rng(2)
    table = rng.normal(0, 0.5, (4, 768)).astype(np.float32)
    write_pth(str(tmp_path / 'sie.pth'), dict(state, cv_embed=table), zip_format=True,
              monkeypatch=monkeypatch)
    config = write_config(tmp_path / 'sie.yml', old='  # SIE_CAMERA: True',
                          new="  SIE_CAMERA: True\n  SIE_COE: 1.0\nDATASETS:\n  NAMES: ('msmt17')")
    clipreid.import_clipreid(str(tmp_path / 'sie.pth'), config, str(tmp_path / 'exp'))
    embedder = load_embedder(str(tmp_path / 'exp'))
    assert embedder.sie_cameras == ['1', '2', '3', '4']
    images = rng.uniform(0, 255, (2, 64, 32, 3)).astype(np.float32)
    token = numpy_vit(timm, images, heads=12, clip=True, cameras=table[[3, 1]])
    expected = np.concatenate([token, token @ state['image_encoder.proj']], 1)
    found = embedder(images, ['04', '2'])
    assert np.abs(found - expected).max() < 1e-4 * np.abs(expected).max()
    # MSMT17 names its camera third: `0001/0001_014_04_0303noon_0086_1.jpg`.
    import re
    from triplet_reid.models.inference import load_experiment
    regex = load_experiment(str(tmp_path / 'exp'))[1]['camera_regex']
    assert re.search(regex, 'train/0001/0001_014_04_0303noon_0086_1.jpg').group(1) == '04'


@pytest.mark.parametrize('old, new, match', [
    ("  # SIE_CAMERA: True", "  SIE_VIEW: True", r'SIE_VIEW to `True`: the view embedding'),
    ("  NAME: 'ViT-B-16'", "  NAME: 'RN50'", r"CLIP-ReID's ResNet-50"),
    ("  STRIDE_SIZE: [16, 16]", "  STRIDE_SIZE: [12, 16]", r'one whole stride for both axes'),
    ("  SIZE_TEST: [64, 32]", "  SIZE_TEST: [128, 64]", r'CLIP-ReID tests at its training size'),
    ("  PIXEL_STD: [0.5, 0.5, 0.5]", "  PIXEL_STD: [0.2, 0.2, 0.2]",
     r'every CLIP-ReID config gives'),
    ("  ID_LOSS_WEIGHT : 0.25", "  COS_LAYER: True", r'COS_LAYER to `True`'),
])
def test_configs_that_do_not_import_are_refused(tmp_path, old, new, match):
    config = write_config(tmp_path / 'c.yml', old=old, new=new)
    with pytest.raises(cli.UserError, match=match):
        clipreid.import_clipreid(str(tmp_path / 'missing.pth'), config, str(tmp_path / 'exp'))
    assert not os.path.exists(tmp_path / 'exp')


def test_a_file_of_another_config_or_another_peer_is_refused(tmp_path, clipreid_file,
                                                             monkeypatch):
    path, _, state = clipreid_file
    stride = write_config(tmp_path / 's.yml', old='STRIDE_SIZE: [16, 16]',
                          new='STRIDE_SIZE: [12, 12]')
    with pytest.raises(cli.UserError, match=r'position embeddings for 8 patches'):
        clipreid.import_clipreid(path, stride, str(tmp_path / 'e1'))
    damaged = dict(state)
    damaged['bottleneck_proj.running_var'] = np.ones(768, np.float32)
    del damaged['image_encoder.proj']
    write_pth(str(tmp_path / 'd.pth'), damaged, zip_format=True, monkeypatch=monkeypatch)
    config = write_config(tmp_path / 'c.yml', 'after')
    with pytest.raises(cli.UserError, match=r"lacks CLIP's projection"):
        clipreid.import_clipreid(str(tmp_path / 'd.pth'), config, str(tmp_path / 'e2'))
    damaged['image_encoder.proj'] = state['image_encoder.proj']
    write_pth(str(tmp_path / 'd.pth'), damaged, zip_format=True, monkeypatch=monkeypatch)
    with pytest.raises(cli.UserError, match=r'`bottleneck_proj.running_var` of shape \(768,\)'):
        clipreid.import_clipreid(str(tmp_path / 'd.pth'), config, str(tmp_path / 'e3'))
    write_pth(str(tmp_path / 't.pth'), {'base.cls_token': np.ones((1, 1, 8), np.float32)},
              zip_format=True, monkeypatch=monkeypatch)
    with pytest.raises(cli.UserError, match=r'not a CLIP-ReID checkpoint'):
        clipreid.import_clipreid(str(tmp_path / 't.pth'), config, str(tmp_path / 'e4'))
    assert not any(os.path.exists(tmp_path / e) for e in ('e1', 'e2', 'e3', 'e4'))
