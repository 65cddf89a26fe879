"""Tracklets of video re-id sets (MARS, iLIDS-VID, PRID-2011, DukeMTMC-VideoReID,
footage), named `identity/camera/track` as embed.py names them: ignore the
same identity seen by the same camera, and junk tracklets (identity -1),
the MARS protocol."""

import numpy as np

from triplet_reid import cli
from triplet_reid.excluders._camera import camera_mask


def excluder(query_fids, gallery_fids):
    def parse(names):
        parts = [str(name).split('/') for name in names]
        bad = next((name for name, part in zip(names, parts) if len(part) != 3), None)
        if bad is not None:
            raise cli.UserError('`{}` is not a tracklet name `identity/camera/track`; embed the '
                                'tracklet CSV with embed.py, or use the excluder of an image '
                                'set.'.format(bad))
        return np.array([p[0] for p in parts]), np.array([p[1] for p in parts])

    return camera_mask(*parse(query_fids), *parse(gallery_fids))
