"""Temporal aggregation plug-ins: how the frames of a tracklet become one vector.

Each choice is a module `temporal/<name>.py` with one function

    layer() -> keras.layers.Layer

whose layer maps the frame vectors of tracklets, a float32 tensor
(B, T, D), to one vector per tracklet (B, D), for any T and D. Video training
(train.py --seq_len) applies it to the T frames of each tracklet of a batch,
after the head (to the embeddings) or before it (to the body's pooled
features, then the head), as --temporal_position says; embed.py applies it
to all the frames of each tracklet of a tracklet CSV. A layer with weights
learns them in training and is checkpointed as `temporal`.
"""

TEMPORAL_CHOICES = (
    'attention',
    'avg',
    'max',
)


def load(name):
    """The layer of the temporal aggregation `name` (see the contract above)."""
    from importlib import import_module
    return import_module('triplet_reid.temporal.' + name).layer()
