#!/usr/bin/env python3
"""Benchmark: the project's training step against a PyTorch step, same weights and batches.

bench.parity compares whole runs, whose mAP varies by ±5 points between
seeds, so a small systematic difference hides in the noise. This compares the
step itself. The project builds the parity recipe's `tiny` + `fc1024`
(128 dimensions), draws `--steps` real P=18 K=4 batches of the demo set with
its own sampler (128×64 crops from 144×72), and takes its real training step
(`training.step.make_train_step`: batch-hard, soft margin, Euclidean, Adam 3e-4 with
ε 1e-8). A PyTorch program (`TORCH_STEP` below: the reference's architecture,
loss and optimiser) loads the same initial weights and takes the same steps
on the same batches. Reported: the loss of every step in both; each layer's
first gradient in the project against PyTorch's (both in float32), beside
PyTorch's float32 gradient against its float64 one, the scale of rounding;
and the correlation of the two implementations' weight updates after all
steps. Both follow the recipe's schedule (Adam 3e-4, the original's decay
from 3/5 of `--steps`).

With `--evaluate` both sides then embed the demo's query and gallery images
and are evaluated alike (market1501 rules): a paired whole run, in which
only the two implementations differ, not the draws of initial weights and
batches that make whole runs of different seeds ±5 points apart:

    .venv/bin/python -m bench.step_parity --torch_python ../torchenv/bin/python \\
        --steps 600 --evaluate --seeds 0 1 2 --json bench/results/step_parity_runs.json

PyTorch is not one of the project's requirements; give the Python of an
environment that has it (torch numpy):

    .venv/bin/python -m bench.step_parity --torch_python ../torchenv/bin/python \\
        --json bench/results/step_parity.json
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, 'data', 'demo')

# Runs in the PyTorch environment: python -c TORCH_STEP IN.npz OUT.npz.
TORCH_STEP = r'''
import copy, sys
import numpy as np, torch, torch.nn as nn, torch.nn.functional as F

data = np.load(sys.argv[1])
layers, cin = [], 3
for cout in (32, 64, 128, 1024):
    layers += [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
               nn.MaxPool2d(2)]
    cin = cout

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(1024, 1024)
        self.bn = nn.BatchNorm1d(1024, eps=1e-5, momentum=0.1)
        self.emb = nn.Linear(1024, 128)

    def forward(self, x):
        return self.emb(F.relu(self.bn(self.fc(self.body(x / 255.0).mean((2, 3))))))

def batch_hard_soft(e, labels):
    d = torch.sqrt(((e[:, None] - e[None]) ** 2).sum(-1) + 1e-12)
    same = labels[:, None] == labels[None]
    positive = same & ~torch.eye(len(labels), dtype=torch.bool)
    furthest = (d * positive).max(1).values
    closest = d.masked_fill(same, float('inf')).min(1).values
    return F.softplus(furthest - closest).mean()

net = Net()
names = {}
for i in range(4):
    conv, bn = net.body[4 * i], net.body[4 * i + 1]
    names['conv{}/kernel'.format(i + 1)] = conv.weight
    names.update({'conv{}_bn/'.format(i + 1) + k: v for k, v in (
        ('gamma', bn.weight), ('beta', bn.bias), ('moving_mean', bn.running_mean),
        ('moving_variance', bn.running_var))})
names.update({'fully_connected/kernel': net.fc.weight, 'fully_connected_bn/gamma': net.bn.weight,
              'fully_connected_bn/beta': net.bn.bias,
              'fully_connected_bn/moving_mean': net.bn.running_mean,
              'fully_connected_bn/moving_variance': net.bn.running_var,
              'emb/kernel': net.emb.weight, 'emb/bias': net.emb.bias})

def to_torch(array):
    """Keras' (H, W, in, out) and (in, out) kernels as PyTorch's (out, in, H, W) and (out, in)."""
    return array.transpose(3, 2, 0, 1) if array.ndim == 4 else array.T if array.ndim == 2 else array

with torch.no_grad():
    for name, tensor in names.items():
        tensor.copy_(torch.from_numpy(np.ascontiguousarray(to_torch(data['init/' + name]))))
    # Keras' dense layer before the batch norm has no bias; the batch norm cancels one anyway.
    net.fc.bias.zero_()
images = torch.from_numpy(data['images']).permute(0, 1, 4, 2, 3)  # uint8
labels = torch.from_numpy(data['labels'].astype(np.int64))
out = {}
parameter_names = {id(v): k for k, v in names.items()}
for dtype in (torch.float64, torch.float32):
    twin = copy.deepcopy(net).to(dtype).train()
    batch_hard_soft(twin(images[0].to(dtype)), labels[0]).backward()
    for original, copied in zip(net.parameters(), twin.parameters()):
        if id(original) in parameter_names:
            out['grad{}/{}'.format(32 if dtype == torch.float32 else 64,
                                   parameter_names[id(original)])] = copied.grad.double().numpy()
optimizer = torch.optim.Adam(net.parameters(), 3e-4)
steps = len(images)
decay_start = steps * 3 // 5
schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 1.0 if i < decay_start else
                                             0.001 ** ((i - decay_start) / (steps - decay_start)))
losses = []
for step in range(steps):
    loss = batch_hard_soft(net(images[step].float()), labels[step])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    schedule.step()
    losses.append(loss.item())
out['losses'] = np.array(losses)
net.eval()
with torch.no_grad():
    for part in ('query', 'gallery'):
        if part in data:
            x = torch.from_numpy(data[part]).permute(0, 3, 1, 2).float()
            out[part] = np.concatenate([net(x[i:i + 256]).numpy() for i in range(0, len(x), 256)])
out.update({'final/' + k: v.detach().numpy() for k, v in names.items()})
np.savez(sys.argv[2], **out)
'''


def demo_images(csv):
    """The (N, 128, 64, 3) uint8 images and the pids and fids of a demo CSV."""
    from triplet_reid.common import load_dataset
    from triplet_reid.inputs.images import load_image

    pids, fids = load_dataset(os.path.join(DEMO, csv), DEMO)
    images = np.stack([load_image(os.path.join(DEMO, f), (128, 64)).numpy()
                       for f in fids])
    return np.round(images).astype(np.uint8), pids, fids


def project_side(steps, seed, path, evaluate):
    """Takes `steps` of the project's training step on demo batches; writes the
    initial weights, the batches, the first gradients, the losses and the final
    weights to `path` (and, with `evaluate`, the query and gallery images and
    their embeddings). Returns the query and gallery (pids, fids) or None."""
    import keras
    import tensorflow as tf

    from triplet_reid.training import distributed
    from triplet_reid.inputs import sampler
    from triplet_reid import training
    import triplet_reid.training.step  # noqa: F401
    from triplet_reid.training import schedules
    from triplet_reid.experiment import StepSettings
    from triplet_reid.common import load_dataset
    from triplet_reid.inputs.images import Preprocessing
    from triplet_reid.models.build import build_model

    # train.py's defaults for the step.
    args = StepSettings(batch_p=18, batch_k=4, seed=seed)
    pids, fids = load_dataset(os.path.join(DEMO, 'demo_train.csv'), DEMO)
    # Rounded to 8 bits (the crops of the 144×72 resize are not whole numbers),
    # so that 600 batches fit in memory; both sides see the same rounded pixels.
    batches = [(np.round(x.numpy()).astype(np.uint8), y.numpy()) for x, _, _, y in
               sampler.pk_dataset(pids, fids, DEMO, Preprocessing((128, 64), (144, 72)),
                                  batch_p=18, batch_k=4, crop_augment=True,
                                  seed=seed).take(steps)]
    images = np.stack([x for x, _ in batches])
    labels = np.stack([y for _, y in batches])
    del batches
    strategy = distributed.make_strategy('none')
    keras.utils.set_random_seed(seed)
    model, _ = build_model('tiny', 'fc1024', 128)
    model(np.zeros((2, 128, 64, 3), np.float32), training=False)
    init = {w.path: w.numpy() for w in model.weights}
    # train.py's optimizer and the recipe's schedule.
    optimizer = keras.optimizers.Adam(schedules.LearningRate(3e-4, steps * 3 // 5, steps),
                                      epsilon=1e-8)
    optimizer.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64)
    train_step, gradients = training.step.make_train_step(model, optimizer, step, args, strategy)
    _, first = gradients(tf.constant(images[0], tf.float32), tf.constant(labels[0]))
    losses = [float(tf.reduce_mean(train_step(tf.constant(x, tf.float32), tf.constant(y))[
        'losses'])) for x, y in zip(images, labels)]
    extra, sets = {}, None
    if evaluate:
        sets = {}
        for part, csv in (('query', 'demo_query.csv'), ('gallery', 'demo_test.csv')):
            extra[part], *sets[part] = demo_images(csv)
            extra['project_' + part] = np.concatenate([
                model(extra[part][i:i + 256].astype(np.float32), training=False)['emb'].numpy()
                for i in range(0, len(extra[part]), 256)])
    np.savez(path, images=images, labels=labels, losses=np.array(losses),
             **{'init/' + k: v for k, v in init.items()},
             **{'grad/' + v.path: g.numpy() for v, g in zip(model.trainable_variables, first)},
             **{'final/' + w.path: w.numpy() for w in model.weights}, **extra)
    return sets


def mean_average_precision(sets, query_embs, gallery_embs):
    """evaluate.py's mAP and top-1 with the market1501 rules."""
    from triplet_reid.evaluation import metrics
    from triplet_reid.excluders.market1501 import excluder

    (q_pids, q_fids), (g_pids, g_fids) = sets['query'], sets['gallery']
    result = metrics.evaluate(q_pids, q_fids, g_pids,
                              metrics.metric_distances(query_embs, gallery_embs, 'euclidean'),
                              excluder(q_fids, g_fids))
    return float(result['mAP']), float(result['CMC'][0])


def keras_to_torch(array):
    """Keras' (H, W, in, out) and (in, out) kernels in PyTorch's (out, in, H, W) and (out, in)
    layout, as TORCH_STEP loads them."""
    return array.transpose(3, 2, 0, 1) if array.ndim == 4 else array.T if array.ndim == 2 \
        else array


def relative(a, b):
    """‖a − b‖ / ‖b‖."""
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def compare(project, reference):
    """Per step and per layer figures from the two sides' results."""
    layers = []
    for name, init in project['init'].items():
        # The embedding's bias has no true gradient (the loss sees only
        # differences of embeddings): both sides' are rounding noise.
        if 'grad64/' + name not in reference or name == 'emb/bias':
            continue
        init = keras_to_torch(init)
        exact = reference['grad64/' + name]
        moved = keras_to_torch(project['final'][name]) - init
        moved_reference = reference['final/' + name] - init
        layers.append({
            'layer': name,
            'project_f32_vs_torch_f64': relative(keras_to_torch(project['grad'][name]), exact),
            'torch_f32_vs_f64': relative(reference['grad32/' + name], exact),
            'project_vs_torch_f32': relative(keras_to_torch(project['grad'][name]),
                                             reference['grad32/' + name]),
            'update_correlation': float(np.corrcoef(moved.ravel(), moved_reference.ravel())[0, 1])})
    return {'losses': {'project': project['losses'].tolist(),
                       'reference': reference['losses'].tolist()}, 'layers': layers}


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split('\n')[0])
    parser.add_argument('--torch_python', required=True,
                        help='The Python of an environment with PyTorch and NumPy.')
    parser.add_argument('--steps', type=int, default=10, help='Steps each side takes.')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0],
                        help='Seeds of the weights and batches; one comparison each.')
    parser.add_argument('--evaluate', action='store_true',
                        help='Then embed the demo\'s query and gallery on both sides and '
                        'evaluate them alike.')
    parser.add_argument('--json', help='Also write the results to this JSON file.')
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error('--steps must be at least 1.')
    check = subprocess.run([args.torch_python, '-c', 'import torch, numpy'], capture_output=True,
                           text=True) if os.access(args.torch_python, os.X_OK) else None
    if check is None or check.returncode:
        sys.exit('--torch_python {} cannot import torch and numpy{}; give the Python of an '
                 'environment that has them.'.format(args.torch_python, ': ' + check.stderr.strip(
                 ).splitlines()[-1] if check and check.stderr.strip() else ''))
    sys.path.insert(0, ROOT)
    runs = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix='step-parity-') as scratch:
            mine, theirs = os.path.join(scratch, 'project.npz'), os.path.join(scratch, 'torch.npz')
            sets = project_side(args.steps, seed, mine, args.evaluate)
            subprocess.run([args.torch_python, '-c', TORCH_STEP, mine, theirs], check=True)
            with np.load(mine) as p, np.load(theirs) as r:
                project = {'losses': p['losses']}
                for part in ('init', 'grad', 'final'):
                    project[part] = {k[len(part) + 1:]: p[k] for k in p.files
                                     if k.startswith(part + '/')}
                reference = {k: r[k] for k in r.files}
                result = compare(project, reference)
                if args.evaluate:
                    for side, q, g in (('project', p['project_query'], p['project_gallery']),
                                       ('reference', reference['query'], reference['gallery'])):
                        result[side + '_mAP'], result[side + '_top1'] = \
                            mean_average_precision(sets, q, g)
        result['seed'] = seed
        runs.append(result)
        report(result)
    if args.evaluate:
        print('\nseed  project mAP  PyTorch mAP  project top-1  PyTorch top-1')
        for r in runs:
            print('{:>4}  {:>11.2%}  {:>11.2%}  {:>13.2%}  {:>13.2%}'.format(
                r['seed'], r['project_mAP'], r['reference_mAP'], r['project_top1'],
                r['reference_top1']))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'machine': platform.processor() or platform.machine(),
                       'cpus': os.cpu_count(), 'argv': sys.argv[1:], 'runs': runs}, f, indent=2)
            f.write('\n')


def report(result):
    """Prints the losses (the first and last ten steps) and the layers' table."""
    losses = list(enumerate(zip(result['losses']['project'], result['losses']['reference']), 1))
    print('step  project loss  PyTorch loss')
    for i, (a, b) in losses[:10] + (losses[-10:] if len(losses) > 20 else losses[10:]):
        print('{:>4}  {:>12.6f}  {:>12.6f}'.format(i, a, b))
    print('\n{:<36} {:>18} {:>18} {:>18}'.format(
        'layer', 'project − PyTorch', 'float32 − float64', 'update correlation'))
    for row in result['layers']:
        print('{:<36} {:>18.1e} {:>18.1e} {:>18.4f}'.format(
            row['layer'], row['project_vs_torch_f32'], row['torch_f32_vs_f64'],
            row['update_correlation']))
    print('(first gradients, relative: the project\'s against PyTorch\'s, both in float32, and '
          'PyTorch\'s float32 against its float64, the scale of rounding)')


if __name__ == '__main__':
    main()
