"""The temporal average (torchreid's `avg`): the mean of the frames' vectors."""

import keras


def layer():
    return keras.layers.Lambda(lambda frames: keras.ops.mean(frames, axis=1),
                               name='temporal')
