"""The names and limits that the scripts' flags offer, without TensorFlow.

The scripts build their parsers from these before TensorFlow is imported, so
`--help` and a mistyped flag answer at once. The modules that implement each
choice import their tuple from here; tests/test_layout.py checks that the
loss names match the functions of `loss.LOSS_CHOICES` and `loss.ID_LOSSES`.
"""

# What a checkpoint's variables depend on: --override cannot change these.
ARCHITECTURE_ARGUMENTS = ('model_name', 'head_name', 'embedding_dim', 'pooling', 'last_stride',
                          'net_padding')

# The global poolings of layers.pooling_layer.
POOLINGS = ('avg', 'max', 'gem')

# The triplet losses of loss.LOSS_CHOICES and the identity losses of loss.ID_LOSSES.
LOSSES = ('batch_hard', 'batch_all', 'batch_all_mean', 'batch_sample', 'weighted')
ID_LOSSES = ('softmax', 'cosface', 'arcface', 'circle')

# The learning-rate schedules of training.learning_rate_schedule.
LR_SCHEDULES = ('exponential', 'step', 'cosine')

# The fills of sampler.random_erasing.
ERASING_FILLS = ('mean', 'noise')

# Images with more pixels than this are refused before they are decoded: a
# small file can hold a huge single-colour picture (20000×20000 PNGs take 1.2
# MB on disk and 13 GB in training). Person crops have a few thousand pixels.
MAX_IMAGE_PIXELS = 25_000_000
