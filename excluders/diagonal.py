"""For query and gallery being the same set: ignore each image matched with itself."""

import numpy as np


def excluder(query_fids, gallery_fids):
    gallery = np.asarray(gallery_fids)
    query = np.asarray(query_fids)

    def mask(query_indices):
        return query[query_indices, None] == gallery[None]
    return mask
