"""Run as a script by test_distributed.py: TensorFlow must see two logical CPU
devices before it starts, so these checks need a process of their own.

    python distributed_helper.py gradients global|per_replica LOSS...  # JSON: single vs mirrored
    python distributed_helper.py train ARGS  # train.py on two logical CPUs
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import checkout
checkout.register()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices('CPU')[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

from triplet_reid.training import distributed  # noqa: E402
from triplet_reid import train  # noqa: E402
from triplet_reid import training  # noqa: E402
import triplet_reid.training.step  # noqa: F401, E402
from triplet_reid.models.build import build_model  # noqa: E402


# `name:margin:strong` adds the strong baseline's extra terms to the loss:
# BNNeck, the identity loss, the center loss (whose centers' gradient is
# compared last) and weight decay.
STRONG = ['--head_name', 'bnneck', '--id_loss_weight', '1', '--center_loss_weight', '0.5',
          '--weight_decay', '0.01']


def gradients(per_replica_mining, loss_names):
    """Loss and gradients of one batch on one device and on two mirrored ones,
    for each loss of `loss_names` (a name, `name:margin` or `name:margin:strong`):
    {loss: differences and scales}."""
    argv = ['--experiment_root', '/nonexistent', '--model_name', 'tiny', '--embedding_dim', '8',
            '--batch_p', '4', '--batch_k', '4', '--seed', '3']
    rng = np.random.default_rng(0)
    # Per-image colour and contrast, so that the pooled features differ between
    # images: on pure noise they are nearly equal, their batch variance is far
    # below the mean's square, and the synchronised batch norm's E[x²] − E[x]²
    # loses the digits that a single device's two-pass variance keeps.
    images = (rng.uniform(0, 255, (16, 32, 16, 3)) * rng.uniform(0.1, 1, (16, 1, 1, 3)) +
              rng.uniform(0, 100, (16, 1, 1, 3))).clip(0, 255).astype(np.float32)
    labels = np.repeat(np.arange(4, dtype=np.int32), 4)
    results = {loss: {} for loss in loss_names}
    weights = {}
    for name in ('none', 'mirrored'):
        strategy = distributed.make_strategy(name)
        for loss in loss_names:
            spec = loss.split(':') + ['soft', '']
            args = train.parser.parse_args(argv + ['--loss', spec[0], '--margin', spec[1]] + (
                ['--per_replica_mining'] if per_replica_mining else []) + (
                STRONG if spec[2] == 'strong' else []))
            with strategy.scope():
                keras.utils.set_random_seed(1)
                model, _ = build_model('tiny', args.head_name, 8)
                extras = training.step.auxiliary_heads(args, 4, 8)
                # The same starting point on both strategies, one per head.
                start = weights.setdefault(args.head_name, (
                    model.get_weights(),
                    [v.numpy() for v in training.step.trainable_variables(model, extras)[
                        len(model.trainable_variables):]],
                    extras['centers'].numpy() if 'centers' in extras else None))
                model.set_weights(start[0])
                for variable, value in zip(training.step.trainable_variables(model, extras)[
                        len(model.trainable_variables):], start[1]):
                    variable.assign(value)
                if 'centers' in extras:
                    extras['centers'].assign(start[2])
                if strategy.num_replicas_in_sync > 1:
                    distributed.synchronize_batch_norm(model)
                optimizer = keras.optimizers.Adam()
                optimizer.build(training.step.trainable_variables(model, extras))
                step = tf.Variable(0, dtype=tf.int64)
            _, compute = training.step.make_train_step(model, optimizer, step, args, strategy,
                                                       extras)
            if strategy.num_replicas_in_sync > 1:
                def piece(context, data):
                    size = len(data) // context.num_replicas_in_sync
                    return data[context.replica_id_in_sync_group * size:][:size]
                inputs = [strategy.experimental_distribute_values_from_function(
                    lambda context, d=d: piece(context, d)) for d in (images, labels)]
            else:
                inputs = [tf.constant(images), tf.constant(labels)]
            losses, grads = compute(*inputs)
            # The batch norms' moving statistics after the step, which each replica
            # updates from the global batch.
            moving = [v.numpy() for v in model.non_trainable_variables
                      if v.name.startswith('moving_')]
            results[loss][name] = (losses.numpy(), [g.numpy() for g in grads], moving)
    summary = {}
    for loss, result in results.items():
        (l1, g1, m1), (l2, g2, m2) = result['none'], result['mirrored']
        summary[loss] = {'replicas': 2, 'loss_diff': float(np.abs(l1 - l2).max()),
                         'loss_scale': float(np.abs(l1).max()),
                         'grad_diff': max(float(np.abs(a - b).max()) for a, b in zip(g1, g2)),
                         'grad_scale': max(float(np.abs(a).max()) for a in g1),
                         'moving_count': len(m1),
                         'moving_rel_diff': max(float(np.abs(a - b).max() / np.abs(a).max())
                                                for a, b in zip(m1, m2))}
    return summary


if __name__ == '__main__':
    if sys.argv[1] == 'gradients':
        # One mining mode per process: two MirroredStrategy objects in one
        # process may mix up their collective keys.
        print(json.dumps(gradients(sys.argv[2] == 'per_replica', sys.argv[3:])))
    else:
        sys.exit(train.main(sys.argv[2:]))
