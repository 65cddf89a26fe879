"""No head: the body's pooled features are the embedding, as torchreid's `resnet50`
embeds (its classifier sits on them directly). `embedding_dim` must be the body's
width (2048 for the ResNet-50s)."""

import keras

from triplet_reid.cli import UserError


def head(features, embedding_dim):
    if features.shape[-1] != embedding_dim:
        raise UserError('--head_name pooled embeds the body\'s {} pooled features as they are; '
                        'pass --embedding_dim {}.'.format(features.shape[-1],
                                                          features.shape[-1]))
    emb = keras.layers.Activation('linear', dtype='float32', name='emb')(features)
    return {'emb_raw': emb, 'emb': emb}
