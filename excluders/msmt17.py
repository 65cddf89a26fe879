"""MSMT17: ignore the same identity in the same camera (no junk)."""

from triplet_reid.excluders._camera import same_camera_excluder

PATTERN = r'(\d+)_\d+_(\d+)_.*'


def excluder(query_fids, gallery_fids):
    return same_camera_excluder(query_fids, gallery_fids, PATTERN,
                                'MSMT17 `PPPP_NNN_CC_<time>_NNNN_N.jpg`')
