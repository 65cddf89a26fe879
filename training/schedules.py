"""The learning-rate schedules of --lr_schedule (flags.LR_SCHEDULES), with
warm-up, as one Keras schedule that the optimizer reads at every step.
"""

import keras
import numpy as np
import tensorflow as tf


class LearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """The learning rate at each iteration (counted from 0).

    `exponential` is the original's schedule: constant until `decay_start`,
    then exponential decay that reaches 0.001 × `initial` at `end`. `cosine`
    is constant until `decay_start`, then follows half a cosine down to 0 at
    `end`. For both, a negative `decay_start` (or one at or past `end`)
    disables the decay. `step` multiplies the rate by `factor` at each
    iteration of `steps`. A positive `warmup` scales the first `warmup`
    iterations linearly from 1% up to the full rate of the schedule.
    """

    def __init__(self, initial, decay_start, end, schedule='exponential', warmup=0, steps=(),
                 factor=0.1):
        self.initial, self.decay_start, self.end = float(initial), int(decay_start), int(end)
        self.schedule, self.warmup, self.factor = schedule, int(warmup), float(factor)
        self.steps = tuple(int(s) for s in steps)

    def decayed(self, step):
        """The schedule without warm-up: a float32 scalar."""
        step = tf.cast(step, tf.float32)
        if self.schedule == 'step':
            passed = tf.reduce_sum(tf.cast(step >= tf.constant(self.steps or (0,), tf.float32),
                                           tf.float32)) if self.steps else 0.0
            return self.initial * tf.pow(self.factor, passed)
        if not 0 <= self.decay_start < self.end:
            return tf.constant(self.initial, tf.float32)
        progress = tf.maximum(0.0, step - self.decay_start) / (self.end - self.decay_start)
        if self.schedule == 'cosine':
            return self.initial * 0.5 * (1.0 + tf.cos(np.pi * tf.minimum(progress, 1.0)))
        return self.initial * tf.pow(0.001, progress)

    def __call__(self, step):
        rate = self.decayed(step)
        if self.warmup > 0:
            fraction = tf.minimum(tf.cast(step, tf.float32) / self.warmup, 1.0)
            rate *= 0.01 + 0.99 * fraction
        return rate

    def get_config(self):
        return {'initial': self.initial, 'decay_start': self.decay_start, 'end': self.end,
                'schedule': self.schedule, 'warmup': self.warmup, 'steps': self.steps,
                'factor': self.factor}
