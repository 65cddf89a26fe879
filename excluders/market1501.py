"""Market-1501: ignore the same identity in the same camera, and junk images (-1)."""

from triplet_reid.excluders._camera import same_camera_excluder

PATTERN = r'(-?\d+)_c(\d+)s\d+_.*'


def excluder(query_fids, gallery_fids):
    return same_camera_excluder(query_fids, gallery_fids, PATTERN,
                                'Market-1501 `PPPP_cCsS_FFFFFF_BB.jpg`')
