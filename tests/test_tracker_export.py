"""export.py --tracker: ONNX and TensorFlow Lite models with the convention
that BoxMOT and torchreid feed (NCHW float32 RGB crops at the net input size,
ImageNet-normalised), which embed as load_embedder does on the same pixels,
named after BoxMOT's architectures, with BoxMOT's metadata sidecar.
(bench/tracker_exports.py measures BoxMOT's own backends on these files.)"""

import json
import os

import numpy as np
import pytest

from triplet_reid import cli
from triplet_reid import export
from triplet_reid import train
from triplet_reid.experiment import Experiment
from triplet_reid.models.inference import load_embedder
from triplet_reid.serving import tracker
from conftest import base_args, make_dataset, run_tflite


@pytest.fixture(scope='module')
def experiment(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('tracker')
    image_root = str(tmp / 'data')
    csv_path = make_dataset(image_root, num_ids=4, images_per_id=3, size=(40, 20))
    root = str(tmp / 'market run')
    assert train.main(base_args(root, csv_path, image_root, 2)) == 0
    return root


def normalised(crops):
    """(N, H, W, 3) uint8 RGB crops as trackers feed them: (N, 3, H, W) float32."""
    x = (crops / 255.0 - np.array(tracker.IMAGENET_MEAN)) / np.array(tracker.IMAGENET_STD)
    return x.astype(np.float32).transpose(0, 3, 1, 2)


def test_tracker_exports_embed_as_the_experiment_on_the_same_pixels(experiment, tmp_path):
    import onnxruntime
    evaluation = tmp_path / 'eval.json'
    evaluation.write_text(json.dumps({'mAP': 0.5, 'metric': 'euclidean', 'verification': {
        'threshold_at_fpr': {'0.0001': 0.4, '0.001': 0.75, '0.01': 1.0}}}))
    folder = tmp_path / 'for trackers'
    assert export.main(['--experiment_root', experiment, '--output', str(tmp_path / 'sm'),
                        '--tracker', str(folder), '--evaluation', str(evaluation),
                        '--quiet']) == 0
    # The tiny net has no relative in BoxMOT: ResNet-50's name, whose preprocessing is the
    # convention; the experiment's name follows, in characters any file system takes.
    assert sorted(os.listdir(folder)) == [
        'resnet50_market_run.onnx', 'resnet50_market_run.onnx.metadata.json',
        'resnet50_market_run.tflite', 'resnet50_market_run.tflite.metadata.json']
    crops = np.random.default_rng(0).integers(0, 256, (5, 32, 16, 3)).astype(np.uint8)
    expected = load_embedder(experiment)(crops)
    session = onnxruntime.InferenceSession(str(folder / 'resnet50_market_run.onnx'))
    (inputs,), (outputs,) = session.get_inputs(), session.get_outputs()
    assert (inputs.name, inputs.shape[1:], outputs.name) == ('images', [3, 32, 16], 'emb')
    np.testing.assert_allclose(session.run(None, {'images': normalised(crops)})[0], expected,
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(run_tflite(str(folder / 'resnet50_market_run.tflite'),
                                          normalised(crops)), expected, rtol=1e-4, atol=1e-4)
    metadata = json.loads((folder / 'resnet50_market_run.onnx.metadata.json').read_text())
    assert metadata['schema_version'] == 1 and metadata['model_name'] == 'resnet50'
    assert metadata['model_kwargs'] == {'img_size': [32, 16]}
    assert metadata['preprocess'] == 'resize'
    ours = metadata['triplet_reid']
    assert ours['input']['layout'] == 'NCHW' and ours['input']['mean'] == [0.485, 0.456, 0.406]
    assert ours['metric'] == 'euclidean' and ours['output']['embedding_dim'] == 16
    assert ours['threshold'] == {'metric': 'euclidean', 'distance': 0.75,
                                 'false_positive_rate': 0.001}
    assert ours['source']['checkpoint'] == 'checkpoint-2'
    # Nothing is replaced: a second export into the same folder is refused before any work.
    with pytest.raises(cli.UserError, match=r'resnet50_market_run\.onnx` exists already'):
        export.main(['--experiment_root', experiment, '--output', str(tmp_path / 'sm2'),
                     '--tracker', str(folder), '--quiet'])
    assert not os.path.exists(tmp_path / 'sm2')


@pytest.mark.parametrize('net, name', [
    ('osnet_x0_25', 'osnet_x0_25'), ('osnet', 'osnet_x1_0'), ('osnet_ain_x0_5', 'osnet_ain_x0_5'),
    ('osnet_ain', 'osnet_ain_x1_0'), ('osnet_ibn', 'osnet_ibn_x1_0'),
    ('fastreid_r101_ibn', 'resnet101'), ('resnet_v1_152', 'resnet152'),
    ('keras_mobilenet_v2_035', 'mobilenetv2_x1_0'), ('torchreid_resnet50', 'resnet50'),
    ('fastreid_r50_ibn_nl', 'resnet50'), ('lunet', 'resnet50'),
])
def test_each_net_is_named_after_its_nearest_boxmot_architecture(net, name):
    assert tracker.boxmot_architecture(net) == name
    experiment = Experiment(net, 'fc1024', 128, 'avg', 1, 'torch', 256, 128, 256, 128)
    assert tracker.file_names(experiment, '/x/../runs/a b!', ['onnx']) == {
        'onnx': '{}_a_b.onnx'.format(name)}


def test_bad_tracker_exports_are_one_message_and_write_nothing(experiment, tmp_path):
    base = ['--experiment_root', experiment, '--output', str(tmp_path / 'sm'), '--quiet']
    bad = tmp_path / 'bad.json'
    for text, match in (('{"mAP": 0.5}', r'records no distance threshold at a false-positive'),
                        ('{"verification": {"threshold_at_fpr": {"0.001": null}}}',
                         'records no distance threshold'),
                        ('{"verification": {"threshold_at_fpr": {"0.001": -1}}}',
                         'records no distance threshold'),
                        ('[', 'is corrupt')):
        bad.write_text(text)
        with pytest.raises(cli.UserError, match=match):
            export.main(base + ['--tracker', str(tmp_path / 't'), '--evaluation', str(bad)])
    with pytest.raises(cli.UserError, match='--evaluation gives the threshold of the --tracker'):
        export.main(base + ['--evaluation', str(bad)])
    (tmp_path / 'file').write_text('x')
    with pytest.raises(cli.UserError, match='is a file; give a folder'):
        export.main(base + ['--tracker', str(tmp_path / 'file')])
    with pytest.raises(SystemExit):
        export.main(base + ['--tracker', str(tmp_path / 't'), '--tracker_formats', 'pt'])
    for folder in ('sm', 'sm/inside'):
        with pytest.raises(cli.UserError, match='is the SavedModel\'s folder .* or lies inside it'):
            export.main(base + ['--tracker', str(tmp_path / folder)])
    with pytest.raises(cli.UserError, match='`args.json` could not be found'):
        export.main(['--experiment_root', str(tmp_path), '--output', str(tmp_path / 'sm'),
                     '--tracker', str(tmp_path / 't'), '--quiet'])
    assert not os.path.exists(tmp_path / 'sm') and not os.path.exists(tmp_path / 't')
