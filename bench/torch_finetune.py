"""The PyTorch side of `bench.real`: the same recipes, implemented independently.

Runs under a Python with PyTorch, NumPy, scikit-learn and Pillow (not the
project's environment, and never imported by the project): `bench.real`
starts it with `--torch_python`. MobileNetV2 at width 0.35 is written out here
as Keras builds it (ReLU6, batch norm with ε = 1e-3, the stride-2 convolutions
padded by one row and column at the bottom and right), loading the body's
weights from the .npz of `layer/weight` arrays that `bench.real` writes from
the same Keras weights file the project loads; without `--weights` it starts
from PyTorch's default initialisation. Batch norm keeps PyTorch's default
momentum (0.1), as a PyTorch user fine-tuning would.

Recipes (see bench/real.py): `trinet_*` (fc1024 head, 128-d embedding,
batch-hard soft margin, Adam with the original's decay, crops from 9/8 of the
input, flips; Euclidean) and `bot_imagenet` (the fc1024 head with a BNNeck on
its embedding, or with `--bnneck_on_features` BoT's BNNeck straight on the
pooled features; label-smoothed identity
loss, batch-hard margin 0.3, center loss 5e-4 with its own SGD at 0.5, Adam
3.5e-4 with warm-up and two ×0.1 steps, weight decay 5e-4, flips, padding and
random crop; cosine on the features after the BNNeck). `--random_erasing`
adds BoT's random erasing (filled with the mean colour). Prints one JSON line
with mAP and CMC.
"""

import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from sklearn.metrics import average_precision_score

# (expansion, output filters, stride) of the 17 inverted residual blocks.
BLOCKS = [(1, 16, 1), (6, 24, 2), (6, 24, 1), (6, 32, 2), (6, 32, 1), (6, 32, 1),
          (6, 64, 2), (6, 64, 1), (6, 64, 1), (6, 64, 1), (6, 96, 1), (6, 96, 1), (6, 96, 1),
          (6, 160, 2), (6, 160, 1), (6, 160, 1), (6, 320, 1)]


def divisible(value, divisor=8):
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvBN(nn.Module):
    """Conv (no bias) + BN (+ ReLU6); stride 2 pads bottom and right as Keras."""

    def __init__(self, cin, cout, kernel, stride, name, bn_name, groups=1, relu=True):
        super().__init__()
        self.stride, self.relu, self.kernel = stride, relu, kernel
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2 if stride == 1 else 0,
                              groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)
        self.names = (name, bn_name, groups > 1)

    def forward(self, x):
        if self.stride == 2:
            x = F.pad(x, (0, 1, 0, 1))
        x = self.bn(self.conv(x))
        return F.relu6(x) if self.relu else x


class InvertedResidual(nn.Module):
    def __init__(self, cin, expansion, cout, stride, prefix):
        super().__init__()
        hidden = cin * expansion
        layers = []
        if expansion != 1:
            layers.append(ConvBN(cin, hidden, 1, 1, prefix + 'expand', prefix + 'expand_BN'))
        layers += [ConvBN(hidden, hidden, 3, stride, prefix + 'depthwise',
                          prefix + 'depthwise_BN', groups=hidden),
                   ConvBN(hidden, cout, 1, 1, prefix + 'project', prefix + 'project_BN',
                          relu=False)]
        self.layers = nn.Sequential(*layers)
        self.residual = cin == cout and stride == 1

    def forward(self, x):
        y = self.layers(x)
        return x + y if self.residual else y


def mobilenet_v2(alpha=0.35):
    cin = divisible(32 * alpha)
    layers = [ConvBN(3, cin, 3, 2, 'Conv1', 'bn_Conv1')]
    for index, (expansion, filters, stride) in enumerate(BLOCKS):
        prefix = 'block_{}_'.format(index) if index else 'expanded_conv_'
        cout = divisible(filters * alpha)
        layers.append(InvertedResidual(cin, expansion, cout, stride, prefix))
        cin = cout
    layers.append(ConvBN(cin, 1280, 1, 1, 'Conv_1', 'Conv_1_bn'))
    return nn.Sequential(*layers)


def load_keras_weights(body, path):
    """Copies the Keras arrays into the convolutions and batch norms, checking shapes."""
    arrays = dict(np.load(path))
    used = 0
    for module in body.modules():
        if not isinstance(module, ConvBN):
            continue
        name, bn_name, depthwise = module.names
        kernel = arrays[name + '/kernel']
        # Keras: (h, w, in, out), depthwise (h, w, in, 1); PyTorch: (out, in/groups, h, w).
        kernel = kernel.transpose(2, 3, 0, 1) if depthwise else kernel.transpose(3, 2, 0, 1)
        assert kernel.shape == module.conv.weight.shape, (name, kernel.shape)
        module.conv.weight.data.copy_(torch.from_numpy(np.ascontiguousarray(kernel)))
        for keras_name, tensor in (('gamma', module.bn.weight), ('beta', module.bn.bias),
                                   ('moving_mean', module.bn.running_mean),
                                   ('moving_variance', module.bn.running_var)):
            tensor.data.copy_(torch.from_numpy(arrays['{}/{}'.format(bn_name, keras_name)]))
        used += 5
    assert used == len(arrays), 'unused arrays in {}'.format(path)


class Net(nn.Module):
    """The body, TriNet's fc1024 head unless `mlp` is False, and with `bot` a
    BNNeck and an identity classifier on what the head gives."""

    def __init__(self, bot, mlp, identities):
        super().__init__()
        self.bot, self.mlp = bot, mlp
        self.body = mobilenet_v2()
        width = 128 if mlp else 1280
        if mlp:
            self.fc = nn.Linear(1280, 1024)
            self.bn = nn.BatchNorm1d(1024)
            self.emb = nn.Linear(1024, width)
            nn.init.orthogonal_(self.emb.weight)
            nn.init.zeros_(self.emb.bias)
        if bot:
            self.neck = nn.BatchNorm1d(width)
            self.neck.bias.requires_grad_(False)
            self.classifier = nn.Linear(width, identities, bias=False)
            nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, x):
        """(features for the metric losses, logits or None, embedding to evaluate)."""
        features = self.body(x / 127.5 - 1.0).mean((2, 3))
        if self.mlp:
            features = self.emb(F.relu(self.bn(self.fc(features))))
        if self.bot:
            normalized = self.neck(features)
            return features, self.classifier(normalized), normalized
        return features, None, features


def batch_hard(e, labels, margin):
    d = torch.sqrt(((e[:, None] - e[None]) ** 2).sum(-1) + 1e-12)
    same = labels[:, None] == labels[None]
    positive = (d * (same & ~torch.eye(len(labels), dtype=torch.bool))).max(1).values
    negative = d.masked_fill(same, float('inf')).min(1).values
    gap = positive - negative
    return F.softplus(gap) if margin == 'soft' else F.relu(gap + float(margin))


def main():
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split('\n')[0])
    parser.add_argument('--recipe', required=True,
                        choices=('trinet_scratch', 'trinet_imagenet', 'bot_imagenet'))
    for name in ('train_csv', 'query_csv', 'gallery_csv', 'image_root'):
        parser.add_argument('--' + name, required=True)
    parser.add_argument('--weights', help='The body\'s .npz; PyTorch\'s initialisation without.')
    parser.add_argument('--steps', type=int, required=True)
    parser.add_argument('--H', type=int, default=128)
    parser.add_argument('--W', type=int, default=64)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--bnneck_on_features', action='store_true',
                        help='bot_imagenet with BoT\'s BNNeck on the pooled features, no MLP.')
    parser.add_argument('--random_erasing', type=float, default=0.0,
                        help='The probability of random erasing (BoT: 0.5).')
    a = parser.parse_args()
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    bot = a.recipe == 'bot_imagenet'
    P = 16 if bot else 18
    K = 4
    pad = round(10 * a.H / 256)
    # TriNet resizes to 9/8 and crops; BoT resizes to the input, pads and crops.
    PH, PW = (a.H + 2 * pad, a.W + 2 * pad) if bot else (a.H * 9 // 8, a.W * 9 // 8)

    def load(csv, size, padding=0):
        rows = [line.strip().split(',') for line in open(csv) if line.strip()]
        images = np.stack([np.pad(np.asarray(
            Image.open(os.path.join(a.image_root, f)).convert('RGB').resize(
                (size[1], size[0]), Image.BILINEAR)), ((padding, padding), (padding, padding),
                                                       (0, 0))) for _, f in rows])
        return np.array([p for p, _ in rows]), np.array([f for _, f in rows]), images

    tp, _, timages = load(a.train_csv, (a.H, a.W) if bot else (PH, PW), pad if bot else 0)
    mean_colour = timages.reshape(-1, 3).mean(0)
    pids = np.array(sorted(set(tp)))
    pid_index = {p: i for i, p in enumerate(pids)}
    by_pid = {}
    for i, p in enumerate(tp):
        by_pid.setdefault(p, []).append(i)

    net = Net(bot, not a.bnneck_on_features, len(pids)).to(memory_format=torch.channels_last)
    if a.weights:
        load_keras_weights(net.body, a.weights)
    if bot:
        optimizer = torch.optim.Adam(net.parameters(), 3.5e-4, weight_decay=5e-4)
        centers = torch.zeros(len(pids), 1280 if a.bnneck_on_features else 128,
                              requires_grad=True)
        nn.init.normal_(centers)
        center_optimizer = torch.optim.SGD([centers], 0.5)
        warmup, steps = a.steps // 12, (a.steps * 3 // 5, a.steps * 17 // 20)

        def factor(i):
            ramp = 0.01 + 0.99 * min(i / warmup, 1.0) if warmup else 1.0
            return ramp * 0.1 ** sum(i >= s for s in steps)
    else:
        optimizer = torch.optim.Adam(net.parameters(), 3e-4)
        decay_start = a.steps * 3 // 5

        def factor(i):
            return 1.0 if i < decay_start else 0.001 ** ((i - decay_start) /
                                                         (a.steps - decay_start))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    order = []

    def batch():
        nonlocal order
        if len(order) < P:
            order = list(rng.permutation(pids)[:len(pids) // P * P])
        chosen, order = order[:P], order[P:]
        indices, labels = [], []
        for p in chosen:
            pool = np.tile(by_pid[p], -(-K // len(by_pid[p])))
            indices += list(rng.permutation(pool)[:K])
            labels += [pid_index[p]] * K
        x = np.empty((len(indices), a.H, a.W, 3), np.float32)
        for j, i in enumerate(indices):
            y0, x0 = rng.integers(0, PH - a.H + 1), rng.integers(0, PW - a.W + 1)
            image = timages[i, y0:y0 + a.H, x0:x0 + a.W].astype(np.float32)
            if rng.random() < 0.5:
                image = image[:, ::-1]
            if rng.random() < a.random_erasing:
                image = erase(image)
            x[j] = image
        x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
        return x, torch.tensor(labels)

    def erase(image):
        """Random erasing (Zhong et al.): 2-40% of the area, aspect 0.3-3.3, mean colour."""
        image = image.copy()
        for _ in range(100):
            area = rng.uniform(0.02, 0.4) * a.H * a.W
            aspect = np.exp(rng.uniform(np.log(0.3), np.log(1 / 0.3)))
            h, w = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
            if h < a.H and w < a.W:
                y, x = rng.integers(0, a.H - h + 1), rng.integers(0, a.W - w + 1)
                image[y:y + h, x:x + w] = mean_colour
                return image
        return image

    start = time.time()
    net.train()
    for step in range(a.steps):
        x, labels = batch()
        features, logits, _ = net(x)
        loss = batch_hard(features, labels, 0.3 if bot else 'soft').mean()
        if bot:
            loss = loss + F.cross_entropy(logits, labels, label_smoothing=0.1)
            center = ((features - centers[labels]) ** 2).sum(1).mean()
            loss = loss + 5e-4 * center
            center_optimizer.zero_grad()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if bot:
            # BoT: the centers learn from the unweighted center loss.
            centers.grad.data *= 1 / 5e-4
            center_optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == a.steps - 1:
            print('iter {} loss {:.3f} {:.2f}s/it'.format(
                step, loss.item(), (time.time() - start) / (step + 1)), flush=True)
    train_seconds = time.time() - start

    @torch.no_grad()
    def embed(images):
        net.eval()
        out = []
        for s in range(0, len(images), 256):
            x = torch.from_numpy(images[s:s + 256].astype(np.float32)).permute(0, 3, 1, 2)
            out.append(net(x.contiguous(memory_format=torch.channels_last))[2].numpy())
        return np.concatenate(out)

    qp, qf, qimages = load(a.query_csv, (a.H, a.W))
    gp, gf, gimages = load(a.gallery_csv, (a.H, a.W))
    qe, ge = embed(qimages), embed(gimages)
    if bot:
        qe = qe / np.linalg.norm(qe, axis=1, keepdims=True)
        ge = ge / np.linalg.norm(ge, axis=1, keepdims=True)
        d = 1 - qe @ ge.T
    else:
        d = np.sqrt(np.maximum(((qe[:, None] - ge[None]) ** 2).sum(-1), 0))

    def camera(files):
        return np.array([int(os.path.basename(f).split('_')[1][:2]) // 5 for f in files])
    qc, gc = camera(qf), camera(gf)
    aps, cmc = [], np.zeros(len(gp))
    for i in range(len(qp)):
        ignore = (gp == qp[i]) & (gc == qc[i])
        match = (gp == qp[i]) & ~ignore
        distances = np.where(ignore, np.inf, d[i])
        if not match.any():
            continue
        keep = ~ignore
        aps.append(average_precision_score(match[keep], -distances[keep]))
        cmc[np.where(match[np.argsort(distances)])[0][0]:] += 1
    cmc /= len(qp)
    print(json.dumps(dict(recipe=a.recipe, steps=a.steps, seed=a.seed, mAP=float(np.mean(aps)),
                          top1=float(cmc[0]), top5=float(cmc[4]),
                          train_seconds=round(train_seconds))))


if __name__ == '__main__':
    main()
