"""CUHK03 (new protocol): ignore the same person seen from the same view.

data/convert.py names the images `C_PPP_V_II.png`: the person is the pair
(camera pair C, person PPP) and the camera is the view V within that pair.
"""

from triplet_reid.excluders._camera import same_camera_excluder

PATTERN = r'(\d+_\d+)_(\d+)_\d+'


def excluder(query_fids, gallery_fids):
    return same_camera_excluder(query_fids, gallery_fids, PATTERN,
                                'CUHK03 `C_PPP_V_II.png` (from data/convert.py)')
