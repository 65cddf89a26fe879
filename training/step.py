"""The training step: a `tf.function` from one P×K batch to the loss, the
gradients applied, and the values that the log and TensorBoard show, on one
device or across the replicas of a `tf.distribute` strategy; and the
identity and center heads it trains beside the model.
"""


import keras
import tensorflow as tf

from triplet_reid.training import cluster_memory, collapse, distributed
from triplet_reid import loss
from triplet_reid.inputs import sampler


# The per-image losses beside the triplet loss, as the step returns and
# TensorBoard shows them.
AUXILIARY_LOSSES = ('id_loss', 'center_loss', 'memory_loss')


def auxiliary_heads(args, num_ids, embedding_dim):
    """What --id_loss_weight and --center_loss_weight train beside the model,
    to be built in the strategy's scope: a dict with the identity
    `classifier` (a bias-free Dense layer, initialised with std 0.001 as in
    BoT) and the identity `centers` (C, D) with their own SGD
    `center_optimizer`, each only when its loss is on; and, when training
    on pseudo-identities (--pseudo_labels), the cluster `memory` (C, D),
    whose C changes from round to round, with the first iteration of its
    round (`round_start`, -1 before the first) and the round's number. All
    of it belongs in the checkpoint and none of it in the exported model."""
    extras = {}
    if args.id_loss_weight:
        classifier = keras.layers.Dense(
            num_ids, use_bias=False, dtype='float32', name='classifier',
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.001))
        classifier.build((None, embedding_dim))
        extras['classifier'] = classifier
    if args.center_loss_weight:
        extras['centers'] = tf.Variable(
            keras.random.normal((num_ids, embedding_dim)), trainable=False, name='centers')
        extras['center_optimizer'] = keras.optimizers.SGD(args.center_learning_rate)
        extras['center_optimizer'].build([extras['centers']])
    if getattr(args, 'pseudo_labels', False):
        extras['memory'] = tf.Variable(tf.zeros((0, embedding_dim)), trainable=False,
                                       shape=tf.TensorShape((None, embedding_dim)), name='memory')
        extras['round_start'] = tf.Variable(-1, dtype=tf.int64, trainable=False,
                                            name='round_start')
        extras['round'] = tf.Variable(0, dtype=tf.int64, trainable=False, name='round')
        if getattr(args, 'camera_proxies', False):
            # The memory's rows are then proxies, one per pseudo-identity and
            # camera; the round sets these (Q,) from its labels.
            for name in ('proxy_cluster', 'proxy_camera'):
                extras[name] = tf.Variable(tf.zeros(0, tf.int32), trainable=False, name=name,
                                           shape=tf.TensorShape([None]))
    return extras


def trainable_variables(model, extras):
    """The variables the main optimizer trains: the model's, the classifier's
    and those of a learnt temporal aggregation (video training's `temporal`)."""
    return model.trainable_variables + [variable for name in ('classifier', 'temporal')
                                        if name in extras
                                        for variable in extras[name].trainable_variables]


def jpm_parts(args):
    """The parts of TransReID's jigsaw patch module that the model's features
    hold beside the global one (0: none). train.py's arguments hold --jpm;
    the `StepSettings` records of the benchmarks train no JPM."""
    return getattr(args, 'jpm', 0)


def part_mean(values, parts):
    """TransReID's weighting of a JPM loss (each (b,), the global part's
    first): half the global part's, half the mean of the others'."""
    if not parts:
        return values[0]
    return 0.5 * values[0] + 0.5 * tf.add_n(values[1:]) / parts


def triplet_losses(loss_fn, emb, batch_emb, labels, args, anchors, seed):
    """((A,) the triplet losses of the anchors `emb` (A, D) against the batch
    `batch_emb` (B, D), (A, B) their distances). With JPM each part has its
    own triplet loss (`part_mean` weighs them); the global part's distances
    are the ones returned, which the log monitors."""
    parts = jpm_parts(args)
    each = [loss.cdist(a, b, metric=args.metric) for a, b in zip(
        tf.split(emb, 1 + parts, axis=-1), tf.split(batch_emb, 1 + parts, axis=-1))]
    return part_mean([loss_fn(dists, labels, args.margin, anchors=anchors, seed=seed)
                      for dists in each], parts), each[0]


def identity_loss(features, kernel, labels, args):
    """(b,) the identity loss of --id_loss on `features` (b, D) with the
    classifier's `kernel` (D, C)."""
    margin_softmax = loss.ID_LOSSES[args.id_loss]
    if margin_softmax is None:
        logits = tf.matmul(features, kernel)
    else:
        logits = margin_softmax(
            loss.cosine_logits(features, kernel), labels, args.id_scale,
            loss.ID_MARGINS[args.id_loss] if args.id_margin is None else args.id_margin)
    return loss.identity_loss(logits, labels, args.label_smoothing)


def auxiliary_losses(extras, endpoints, emb, labels, args, proxies=None):
    """The per-image identity, center and memory losses that are on: {name:
    (b,)}; `proxies` (b,) are the crops' rows of a memory of camera proxies.
    With JPM each part has its own identity classifier (its rows of the
    classifier's kernel), weighted as TransReID weighs them (`part_mean`)."""
    terms = {}
    if 'classifier' in extras:
        # Before any L2 normalisation: a softmax over unit vectors would need a
        # temperature to reach confident logits, and learns nothing without one.
        # The margin softmaxes normalise both sides and bring their own scale.
        features = tf.cast(endpoints['emb_raw'], tf.float32)
        parts = jpm_parts(args)
        kernel = extras['classifier'].kernel
        terms['id_loss'] = part_mean([
            identity_loss(f, k, labels, args) for f, k in zip(
                tf.split(features, 1 + parts, axis=-1), tf.split(kernel, 1 + parts, axis=0))],
            parts)
    if 'centers' in extras:
        terms['center_loss'] = loss.center_loss(emb, extras['centers'], labels)
    if 'memory' in extras and args.memory_loss_weight:
        if 'proxy_cluster' in extras:
            terms['memory_loss'] = cluster_memory.camera_loss(
                emb, extras['memory'], proxies, extras['proxy_cluster'], extras['proxy_camera'],
                args.memory_temperature, args.inter_camera_weight, args.proxy_negatives)
        else:
            terms['memory_loss'] = cluster_memory.loss(emb, extras['memory'], labels,
                                                    args.memory_temperature)
    return terms


def make_replica_gradients(model, optimizer, step, args, extras, variables, replicas,
                           forward=None):
    """`replica_gradients(images, labels)` -> (gradients of `variables`, a dict
    of the replica's tensors): one replica's part of the step (see
    `make_train_step`)."""
    loss_fn = loss.LOSS_CHOICES[args.loss]
    global_mining = replicas > 1 and not args.per_replica_mining
    global_batch = args.batch_p * args.batch_k
    weights = {'id_loss': args.id_loss_weight, 'center_loss': args.center_loss_weight,
               'memory_loss': args.memory_loss_weight}

    # XLA compiles the network's forward pass and, through the tape, its
    # backward pass; the gathering across replicas stays outside it.
    # Video training's forward pass embeds tracklets from their frames.
    network = forward or model
    forward = tf.function(lambda images: network(images, training=True), jit_compile=True) \
        if args.xla else (lambda images: network(images, training=True))

    def replica_gradients(images, labels):
        context = tf.distribute.get_replica_context()
        # With camera proxies the batches carry each crop's proxy, whose
        # pseudo-identity every other loss takes as the label.
        proxies = labels
        if 'proxy_cluster' in extras:
            labels = tf.gather(extras['proxy_cluster'], proxies)
        with tf.GradientTape() as tape:
            endpoints = forward(images)
            emb = tf.cast(endpoints.get('metric_emb', endpoints['emb']), tf.float32)
            batch_emb, batch_labels, anchors = emb, labels, None
            if global_mining:
                batch_emb = distributed.all_gather(emb)
                batch_labels = distributed.all_gather(labels)
                anchors = context.replica_id_in_sync_group * tf.shape(emb)[0] + tf.range(
                    tf.shape(emb)[0])
            # Losses that draw at random draw from the step, so resuming redraws the same.
            losses, dists = triplet_losses(loss_fn, emb, batch_emb, batch_labels, args, anchors,
                                           sampler.stream_seed(args.seed, 4, step))
            terms = auxiliary_losses(extras, endpoints, emb, labels, args, proxies)
            total = tf.add_n([args.triplet_loss_weight * tf.reduce_sum(losses)] + [
                weights[name] * tf.reduce_sum(value) for name, value in terms.items()])
            total /= global_batch
            if args.weight_decay and args.optimizer != 'adamw':
                # Each replica adds its share, so that the sum over replicas adds it once;
                # AdamW decays the weights itself.
                total += args.weight_decay / (2 * replicas) * tf.add_n(
                    [tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in variables])
            scaled = optimizer.scale_loss(total)
        grads = tape.gradient(scaled, variables)
        same, positive, negative = loss.identity_masks(batch_labels, anchors)
        top1, prec_at_k, _ = loss.top_k_precision(dists, same, args.batch_k - 1)
        # Masks travel as int32: tf.distribute cannot gather booleans.
        out = dict(terms, **{
            'losses': losses, 'emb': emb, 'dists': dists, 'labels': labels,
            'pos_mask': tf.cast(positive, tf.int32), 'neg_mask': tf.cast(negative, tf.int32),
            'top1': top1[None], 'prec_at_k': prec_at_k[None],
            'emb_lengths': tf.norm(tf.cast(endpoints['emb_raw'], tf.float32), axis=1)})
        if 'proxy_cluster' in extras:
            # The memory's rows, for its update after the step.
            out['proxies'] = proxies
        return grads, out
    return replica_gradients


def make_train_step(model, optimizer, step, args, strategy, extras=None, forward=None):
    """The training step: a `tf.function` from one (per-replica) batch of
    images and integer labels to a dict of global tensors. `args` is
    train.py's arguments or an `experiment.StepSettings`. `forward(images,
    training)` replaces `model` in video training, where the labels are the
    tracklets' (`models.video.tracklet_forward`).

    Each replica embeds its images; unless --per_replica_mining, it gathers
    the embeddings of all replicas so that its anchors are mined against the
    whole batch. Its loss is the sum of its anchors' losses (and of the
    weighted identity and center losses of its images) over the global batch
    size, so that the summed gradients equal a single device's. `extras` is
    `auxiliary_heads`'s dict.

    Returns:
        (train_step, gradients): `gradients(images, labels)` computes the
        global per-anchor losses and the summed gradients of the trainable
        variables (and, last, of the centers) without applying them, to
        compare a distributed step with a single device's.
    """
    extras = extras or {}
    replicas = strategy.num_replicas_in_sync
    global_batch = args.batch_p * args.batch_k
    variables = trainable_variables(model, extras)
    replica_gradients = make_replica_gradients(model, optimizer, step, args, extras, variables,
                                               replicas, forward)

    def center_gradients(out):
        """The centers' gradient of the unweighted center loss, as BoT steps them."""
        return loss.center_gradient(out['emb'], extras['centers'], out['labels']) / global_batch

    def replica_step(images, labels):
        grads, out = replica_gradients(images, labels)
        optimizer.apply_gradients(zip(grads, variables))
        if 'centers' in extras:
            extras['center_optimizer'].apply_gradients([(center_gradients(out),
                                                         extras['centers'])])
        if replicas > 1:
            # Every replica gets the whole batch's values; the first one's are kept.
            out = {key: distributed.all_gather(value) for key, value in out.items()}
        return out

    # Without AutoGraph: the step has no Python control flow on tensors, and
    # converting it and Keras' code took two seconds before the first step.
    @tf.function(autograph=False)
    def train_step(images, labels):
        out = strategy.experimental_local_results(
            strategy.run(replica_step, args=(images, labels)))[0]
        step.assign_add(1)
        if 'memory' in extras:
            rows, centroids = cluster_memory.update(out['emb'], extras['memory'],
                                                 out.get('proxies', out['labels']),
                                                 args.memory_momentum)
            extras['memory'].scatter_nd_update(rows[:, None], centroids)
        out['top1'], out['prec_at_k'] = (tf.reduce_mean(out[k]) for k in ('top1', 'prec_at_k'))
        out['active_count'] = tf.reduce_sum(tf.cast(out['losses'] > 1e-5, tf.float32))
        out['spread'] = collapse.embedding_spread(
            out['dists'], out['pos_mask'] + out['neg_mask'] > 0, out['emb'], args.metric)
        return out

    def replica_losses_and_gradients(images, labels):
        grads, out = replica_gradients(images, labels)
        if 'centers' in extras:
            grads = grads + [center_gradients(out)]
        context = tf.distribute.get_replica_context()
        return distributed.all_gather(out['losses']) if replicas > 1 else out['losses'], [
            context.all_reduce(tf.distribute.ReduceOp.SUM, g) for g in grads]

    @tf.function(autograph=False)
    def gradients(images, labels):
        return strategy.experimental_local_results(
            strategy.run(replica_losses_and_gradients, args=(images, labels)))[0]

    return train_step, gradients
