"""Reference graphs of the TF1 original, built with tf_slim in tf.compat.v1 (tests only).

tf_slim 1.1 predates TF 2.21: it needs tf-keras, the alias
`tf_keras.legacy_tf_layers` for `tf_keras.src.legacy_tf_layers`, and
`tensorflow.python.framework.ops.Tensor` set back to `tf.Tensor` before import.
"""

import sys

import numpy as np
import tensorflow as tf

v1 = tf.compat.v1
_slim = None

# slim's mobilenet_v1 `MOBILENETV1_CONV_DEFS` after Conv2d_0: (stride, depth).
MOBILENET_DEFS = [(1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512), (1, 512),
                  (1, 512), (1, 512), (1, 512), (1, 512), (2, 1024), (1, 1024)]


def slim():
    """tf_slim, imported with the shims it needs under TF 2.21."""
    global _slim
    if _slim is None:
        import tensorflow.python.framework.ops as ops
        ops.Tensor = tf.Tensor
        import tf_keras.src.legacy_tf_layers as legacy
        sys.modules['tf_keras.legacy_tf_layers'] = legacy
        import tf_slim
        _slim = tf_slim
    return _slim


def resnet_body(images, name):
    from tf_slim.nets import resnet_v1
    s = slim()
    x = images - tf.constant([123.68, 116.78, 103.94], shape=(1, 1, 1, 3))
    with s.arg_scope(resnet_v1.resnet_arg_scope(batch_norm_decay=0.9, weight_decay=0.0)):
        _, endpoints = getattr(resnet_v1, name)(x, num_classes=None, is_training=False,
                                                global_pool=True)
    return tf.reduce_mean(endpoints[name + '/block4'], [1, 2])


def mobilenet_body(images):
    """slim's published mobilenet_v1 up to Conv2d_13_pointwise, then global pooling."""
    s = slim()
    with s.arg_scope([s.conv2d, s.separable_conv2d], normalizer_fn=s.batch_norm,
                     activation_fn=tf.nn.relu6, padding='SAME'), \
            s.arg_scope([s.batch_norm], decay=0.9, epsilon=0.001, scale=True,
                        is_training=False), \
            v1.variable_scope('MobilenetV1'):
        net = s.conv2d(images / 255.0, 32, [3, 3], stride=2, scope='Conv2d_0')
        for i, (stride, depth) in enumerate(MOBILENET_DEFS, start=1):
            net = s.separable_conv2d(net, None, [3, 3], depth_multiplier=1, stride=stride,
                                     scope='Conv2d_{}_depthwise'.format(i))
            net = s.conv2d(net, depth, [1, 1], stride=1, scope='Conv2d_{}_pointwise'.format(i))
    return tf.reduce_mean(net, [1, 2])


def fc1024_head(features, embedding_dim, is_training=False):
    """The original's heads/fc1024.py."""
    s = slim()
    hidden = s.fully_connected(features, 1024, normalizer_fn=s.batch_norm, normalizer_params={
        'decay': 0.9, 'epsilon': 1e-5, 'scale': True, 'is_training': is_training})
    return s.fully_connected(hidden, embedding_dim, activation_fn=None,
                             weights_initializer=v1.orthogonal_initializer(), scope='emb')


def build_and_save(net, path, images, embedding_dim=16, with_head=True, train_graph=False,
                   seed=0):
    """Builds the original's graph, randomises every variable (batch-norm
    statistics included), saves a TF1 checkpoint and returns the embeddings of
    `images` (or the body's features without a head).

    With `train_graph`, the original's training graph: Adam (with slots made
    non-zero) and `global_step`, one training step run before saving.
    """
    rng = np.random.default_rng(seed)
    graph = tf.Graph()
    with graph.as_default():
        v1.set_random_seed(seed)
        inputs = v1.placeholder(tf.float32, (None,) + images.shape[1:])
        body = mobilenet_body(inputs) if net == 'mobilenet_v1_1_224' else \
            resnet_body(inputs, net)
        out = fc1024_head(body, embedding_dim) if with_head else body
        global_step = v1.train.get_or_create_global_step()
        train_op = None
        if train_graph:
            loss = tf.reduce_mean(tf.square(out))
            train_op = v1.train.AdamOptimizer(1e-3).minimize(loss, global_step=global_step)
        saver = v1.train.Saver()
        variables = v1.global_variables()
        placeholders = [v1.placeholder(v.dtype.base_dtype, v.shape) for v in variables]
        assign = tf.group(*[v.assign(p) for v, p in zip(variables, placeholders)])
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            values = session.run(variables)
            for i, var in enumerate(variables):
                name = var.op.name
                if name.endswith('moving_variance'):
                    values[i] = rng.uniform(0.5, 2.0, values[i].shape)
                elif name.endswith(('moving_mean', 'beta')):
                    values[i] = rng.normal(0, 0.2, values[i].shape)
                elif name.endswith('gamma'):
                    values[i] = rng.uniform(0.5, 1.5, values[i].shape)
                elif name.endswith(('/Adam', '/Adam_1')):
                    values[i] = rng.uniform(0, 1e-3, values[i].shape)
                elif name == 'global_step':
                    values[i] = 1234
            session.run(assign, dict(zip(placeholders, values)))
            if train_op is not None:
                session.run(train_op, {inputs: images})
            embeddings = session.run(out, {inputs: images})
            saver.save(session, path)
    return embeddings
