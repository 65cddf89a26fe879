"""Learnt temporal attention (as torchreid's `att`, on vectors): each frame
gets a score from a linear map of its vector, the scores are a softmax over
the tracklet's frames, and the tracklet is the frames' weighted sum. Frames
the network finds reliable (a whole, unoccluded person) so count more."""

import keras


class TemporalAttention(keras.layers.Layer):
    """(B, T, D) -> (B, D): softmax over T of `frames @ kernel + bias`, as weights."""

    def build(self, input_shape):
        # Zero weights start as the temporal average, which trains stably.
        self.kernel = self.add_weight(shape=(input_shape[-1], 1), initializer='zeros',
                                      name='kernel')
        self.bias = self.add_weight(shape=(1,), initializer='zeros', name='bias')

    def call(self, frames):
        frames = keras.ops.cast(frames, 'float32')
        weights = keras.ops.softmax(keras.ops.matmul(frames, self.kernel) + self.bias, axis=1)
        return keras.ops.sum(weights * frames, axis=1)


def layer():
    return TemporalAttention(name='temporal', dtype='float32')
