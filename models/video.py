"""Video re-id with any net and head: the forward pass over the T frames of
each tracklet of a batch, and embedding whole tracklets of any length.

The temporal aggregation (a `temporal/` plug-in) combines the frames'
embeddings (`--temporal_position embedding`, after the head) or the body's
pooled features, which the head then embeds (`features`, before the head);
`models.build.build_video` builds the parts.
"""

import numpy as np
import tensorflow as tf

def tracklet_forward(model, frame_features, layer, position, seq_len):
    """`forward(images, training)`: the endpoints (B, D) of B tracklets from
    their frames, images (B * T, H, W, 3) tracklet-major (as
    `sampler.pkt_dataset` batches them)."""
    def forward(images, training=True):
        if position == 'features':
            features = frame_features(images, training=training)
            clips = tf.reshape(features, (-1, seq_len, features.shape[-1]))
            return model.get_layer('head')(layer(clips), training=training)
        endpoints = model(images, training=training)
        return {key: layer(tf.reshape(value, (-1, seq_len, value.shape[-1])))
                for key, value in endpoints.items()}
    return forward


def tracklet_function(model, layer, position):
    """`combine(frames (n, F)) -> (D,)`: one tracklet's embedding from its
    frames' aggregation inputs (see `inference.frame_function`)."""
    def combine(frames):
        pooled = layer(tf.constant(frames[None]))
        if position == 'features':
            pooled = model.get_layer('head')(pooled, training=False)['emb']
        return pooled.numpy()[0]
    return combine


def embed_tracklets(frame_batches, bounds, combine, progress=None):
    """The embeddings (T, D) of tracklets whose frames come in order from
    `frame_batches` (an iterable of (b, F) arrays), tracklet t's being rows
    `bounds[t]:bounds[t + 1]` of all of them. Each tracklet is combined as soon
    as its last frame arrives, so memory holds one batch and the longest
    tracklet, not every frame of the set.

    Args:
        combine: (n, F) frames -> (D,), such as `tracklet_function`'s.
        progress: called with (frames done, frames) after each batch.
    """
    count = len(bounds) - 1
    embs, pending, start = [], None, 0
    for batch in frame_batches:
        batch = np.asarray(batch, np.float32)
        # `pending` holds the frames from `start` on that no tracklet has used yet.
        pending = batch if pending is None else np.concatenate([pending, batch])
        done = start + len(pending)
        while len(embs) < count and bounds[len(embs) + 1] <= done:
            current = len(embs)
            embs.append(combine(pending[bounds[current] - start:bounds[current + 1] - start]))
        pending, start = pending[bounds[len(embs)] - start:], bounds[len(embs)]
        if progress is not None:
            progress(done, int(bounds[-1]))
    return np.asarray(embs, np.float32)
