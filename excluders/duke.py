"""DukeMTMC-reID: ignore the same identity in the same camera (and any junk, -1)."""

from triplet_reid.excluders._camera import same_camera_excluder

PATTERN = r'(-?\d+)_c(\d+)_.*'


def excluder(query_fids, gallery_fids):
    return same_camera_excluder(query_fids, gallery_fids, PATTERN,
                                'DukeMTMC-reID `PPPP_cC_fFFFFFFF.jpg`')
