"""Training on several devices or machines with `tf.distribute`.

The strategy of `--distribution`, this process's task in a multi-worker
cluster, a differentiable all-gather that works under every strategy, and
batch-norm layers that use the statistics of the whole global batch.
"""

import os

import keras
import tensorflow as tf

from triplet_reid import cli
from triplet_reid.storage import json_files


def synchronize_batch_norm(model):
    """Makes every batch-norm layer use the statistics of the whole global
    batch, so that a distributed step computes what one device would."""
    # Private Keras API (docs/private_apis.md): the layers of the nested body too.
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True


def make_strategy(name):
    """The tf.distribute strategy of `--distribution` (the default one for `none`)."""
    if name == 'mirrored':
        return tf.distribute.MirroredStrategy()
    if name == 'multi_worker':
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def worker_task(distribution):
    """This process's (task type, index) in a multi-worker cluster, from TF_CONFIG."""
    if distribution != 'multi_worker':
        return 'chief', 0
    try:
        config = json_files.parse_json(os.environ.get('TF_CONFIG', ''))
        task = config['task']
        if 'chief' in config['cluster'] or task['type'] != 'worker' or task['index'] != 0:
            return task['type'], int(task['index'])
        return 'chief', 0  # Without a chief, worker 0 does the chief's work.
    except (ValueError, KeyError, TypeError):
        raise cli.UserError('--distribution multi_worker needs the TF_CONFIG environment '
                            'variable describing the cluster and this task, see '
                            'https://www.tensorflow.org/guide/distributed_training.')


def all_gather(value):
    """Concatenates `value` (b, …) from all replicas along axis 0, in replica
    order, differentiably.

    Written as a sum over replicas of `value` placed in its own slot:
    `ReplicaContext.all_gather` refuses tensors without a device under
    MultiWorkerMirroredStrategy, while all-reduce works everywhere. The
    gradient of the sum sends every replica the gradients of its own slot.
    """
    context = tf.distribute.get_replica_context()
    slots = tf.one_hot(context.replica_id_in_sync_group, context.num_replicas_in_sync,
                       dtype=value.dtype)
    placed = tf.reshape(slots, [-1] + [1] * value.shape.rank) * value[None]
    gathered = context.all_reduce(tf.distribute.ReduceOp.SUM, placed)
    return tf.reshape(gathered, tf.concat([[-1], tf.shape(value)[1:]], 0))


def agreed_stop(strategy):
    """`stop(flag) -> bool`, true on every worker when any worker's `flag` is.

    Every worker of a multi-worker run must call it at the same step: it is
    one all-reduce of a single number. A signal that reaches one worker
    (SIGTERM from a scheduler, Ctrl+C in one terminal) thus stops all of them
    after the same step, where they write the final checkpoint together,
    instead of leaving the others waiting in a collective forever.
    """
    with strategy.scope():
        # A variable lives on the strategy's devices, as the all-reduce needs.
        flags = tf.Variable(0.0, trainable=False, name='stop_flag',
                            aggregation=tf.VariableAggregation.NONE)

    @tf.function
    def any_flag():
        per_replica = strategy.run(lambda: tf.identity(flags))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    def stop(flag):
        flags.assign(float(flag))
        return bool(any_flag().numpy() > 0)
    return stop
