#!/usr/bin/env python3
"""Our models in BoxMOT, the tracking suite with re-id: export.py --tracker's
ONNX and TensorFlow Lite files, loaded by BoxMOT's own re-id backends,
embed the same crops as embed.py, and a BoxMOT tracker runs on them.

    .venv/bin/python -m bench.tracker_exports --experiment_root EXP \\
        --boxmot_python ENV/bin/python --footage data/footage \\
        --json bench/results/tracker_exports.json

ENV is an environment of its own with `torch torchvision boxmot onnxruntime`
(BoxMOT and PyTorch are no dependencies of this project); it runs
bench/boxmot_peer.py, which imports nothing of the project. The crops are
the footage's ground-truth boxes (data/make_footage.py), resized here to the
net input size, so that both sides embed the same pixels: BoxMOT's resize
to its input size then leaves them as they are. The cosine of each crop's
embedding by load_embedder (which embed.py's embeddings equal, see
tests/test_embed.py) and by BoxMOT is reported, and BoT-SORT with each file
as its re-id model tracks every camera's boxes.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

if __package__ in (None, ''):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import checkout
    checkout.register()
from triplet_reid import cli  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER = os.path.join(ROOT, 'bench', 'boxmot_peer.py')


def footage_crops(footage, size, count):
    """(N, H, W, 3) uint8 RGB crops of the footage's ground-truth boxes, the
    first `count` over all cameras, resized to `size` (H, W) as embed.py
    resizes."""
    import tensorflow as tf
    from triplet_reid.inputs.images import resize
    crops = []
    for camera in sorted(os.listdir(footage)):
        gt = os.path.join(footage, camera, 'gt', 'gt.txt')
        if not os.path.isfile(gt):
            continue
        for frame, _, left, top, width, height, *_ in np.loadtxt(gt, delimiter=',', ndmin=2):
            image = tf.io.decode_jpeg(tf.io.read_file(os.path.join(
                footage, camera, 'img1', '{:06d}.jpg'.format(int(frame))))).numpy()
            crop = image[max(int(top), 0):int(top + height), max(int(left), 0):int(left + width)]
            if crop.size:
                pixels = resize(tf.constant(crop, tf.float32), size, True)
                crops.append(np.clip(np.round(pixels.numpy()), 0, 255).astype(np.uint8))
            if len(crops) == count:
                return np.stack(crops)
    return np.stack(crops)


def peer(python, *argv):
    done = subprocess.run([python, PEER] + list(argv), capture_output=True, text=True)
    if done.returncode:
        raise cli.UserError('BoxMOT\'s side failed: {}'.format(done.stderr[-2000:]))
    return done.stdout


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], allow_abbrev=False)
    parser.add_argument('--experiment_root', required=True, help='The model to export.')
    parser.add_argument('--boxmot_python', required=True,
                        help='The python of an environment with torch, torchvision, boxmot '
                             'and onnxruntime.')
    parser.add_argument('--footage', required=True, help='data/make_footage.py\'s output.')
    parser.add_argument('--crops', type=int, default=200, help='How many crops to compare.')
    parser.add_argument('--json', default=None, help='Where to write the figures.')
    args = parser.parse_args(argv)

    from triplet_reid.experiment import Experiment, read_args
    from triplet_reid.models.inference import load_embedder
    experiment = Experiment.of(read_args(args.experiment_root))
    work = tempfile.mkdtemp(prefix='boxmot-bench-')
    folder = os.path.join(work, 'tracker')
    subprocess.run([sys.executable, os.path.join(ROOT, 'export.py'), '--experiment_root',
                    args.experiment_root, '--output', os.path.join(work, 'saved_model'),
                    '--tracker', folder, '--quiet'], check=True)
    crops = footage_crops(args.footage, experiment.net_input_size, args.crops)
    np.savez(os.path.join(work, 'crops.npz'), crops=crops)
    ours = load_embedder(args.experiment_root)(crops)
    ours /= np.linalg.norm(ours, axis=1, keepdims=True)
    results = {'experiment_root': os.path.abspath(args.experiment_root),
               'net': experiment.model_name, 'input_size': list(experiment.net_input_size),
               'crops': len(crops), 'formats': {}}
    for name in sorted(os.listdir(folder)):
        if name.endswith('.metadata.json'):
            continue
        path = os.path.join(folder, name)
        out = os.path.join(work, name + '.npz')
        peer(args.boxmot_python, 'embed', path, os.path.join(work, 'crops.npz'), out)
        theirs = np.load(out)
        cosines = (theirs['features'] * ours).sum(axis=1)
        tracks = [json.loads(peer(args.boxmot_python, 'track', path, args.footage, camera,
                                  os.path.join(work, '{}_{}.txt'.format(name, camera)))
                             .strip().splitlines()[-1])
                  for camera in sorted(os.listdir(args.footage))
                  if os.path.isdir(os.path.join(args.footage, camera, 'img1'))]
        results['formats'][name.rsplit('.', 1)[1]] = {
            'file': name, 'boxmot_model_name': str(theirs['model_name']),
            'boxmot_input_shape': theirs['input_shape'].tolist(),
            'cosine_min': float(cosines.min()), 'cosine_mean': float(cosines.mean()),
            'tracking': tracks}
        print('{}: BoxMOT reads it as {} at {}; cosine to embed.py min {:.6f}, mean {:.6f}; '
              'BoT-SORT tracked {} cameras ({} boxes, {} tracks for {} people)'.format(
                  name, theirs['model_name'], theirs['input_shape'].tolist(), cosines.min(),
                  cosines.mean(), len(tracks), sum(t['tracked_boxes'] for t in tracks),
                  sum(t['tracks'] for t in tracks), sum(t['true_people'] for t in tracks)))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == '__main__':
    cli.run(main)
