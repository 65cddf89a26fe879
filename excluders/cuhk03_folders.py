"""CUHK03 as folders of `IIII_KK.jpg` crops (`data/convert.py cuhk03_folders`):
ignore the same person seen by the same camera. Images 00-04 of a person come
from one camera of its pair, 05-09 from the other."""

from triplet_reid.excluders._camera import same_camera_excluder

PATTERN = r'(\d+)_(\d{2})$'
IMAGES_PER_CAMERA = 5


def camera(numbers):
    """The camera (0 or 1) of each image number `KK` (strings)."""
    return numbers.astype(int) // IMAGES_PER_CAMERA


def excluder(query_fids, gallery_fids):
    return same_camera_excluder(query_fids, gallery_fids, PATTERN,
                                'CUHK03 folders `IIII_KK.jpg`', camera=camera)
