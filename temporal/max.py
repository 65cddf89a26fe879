"""Temporal max pooling (torchreid's `max`): each dimension's largest value over the frames."""

import keras


def layer():
    return keras.layers.Lambda(lambda frames: keras.ops.max(frames, axis=1), name='temporal')
