"""VeRi-776: ignore the same vehicle in the same camera, the official junk."""

from triplet_reid.excluders._camera import same_camera_excluder

PATTERN = r'(\d+)_c(\d+)_.*'


def excluder(query_fids, gallery_fids):
    return same_camera_excluder(query_fids, gallery_fids, PATTERN,
                                'VeRi-776 `VVVV_cCCC_FFFFFFFF_N.jpg`')
