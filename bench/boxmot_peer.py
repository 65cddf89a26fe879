"""BoxMOT's side of bench/tracker_exports.py, run in an environment of its own
(`torch torchvision boxmot onnxruntime`), without TensorFlow or this project.

    python bench/boxmot_peer.py embed MODEL CROPS.npz OUT.npz
        BoxMOT's own re-id backend (chosen by the file's suffix) loads the
        exported MODEL and embeds each crop of CROPS.npz (`crops`, (N, H, W, 3)
        RGB uint8 at the model's input size) as a tracker does: the crop is
        the whole of a frame given in BGR, as OpenCV reads frames, and its box
        covers it.
    python bench/boxmot_peer.py track MODEL FOOTAGE CAMERA OUT.txt
        BoT-SORT with that re-id model tracks the ground-truth boxes of one
        camera of data/make_footage.py's footage, frame by frame, and writes
        the tracks in the MOT-Challenge format; prints a JSON summary.
"""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def backend(model):
    """BoxMOT's re-id backend of the exported file `model`, on the CPU."""
    import torch
    if model.endswith('.onnx'):
        from boxmot.reid.backends.onnx_backend import ONNXBackend as Backend
    else:
        from boxmot.reid.backends.tflite_backend import TFLiteBackend as Backend
    return Backend(weights=Path(model), device=torch.device('cpu'), half=False)


def embed(model, crops_file, out_file):
    crops = np.load(crops_file)['crops']
    reid = backend(model)
    features = []
    for crop in crops:
        height, width = crop.shape[:2]
        frame = np.ascontiguousarray(crop[:, :, ::-1])  # RGB to BGR, as cv2.imread gives.
        features.append(reid.get_features(np.array([[0, 0, width, height]]), frame)[0])
    np.savez(out_file, features=np.stack(features), input_shape=np.array(reid.input_shape),
             model_name=str(reid.model_name))


def track(model, footage, camera, out_file):
    import cv2
    import torch
    from boxmot.trackers.box.botsort.tracker import BotSort
    boxes = np.loadtxt(os.path.join(footage, camera, 'gt', 'gt.txt'), delimiter=',', ndmin=2)
    frames = sorted(os.listdir(os.path.join(footage, camera, 'img1')))
    tracker = BotSort(reid_weights=Path(model), device=torch.device('cpu'), half=False,
                      use_embeddings=True)
    began, rows, ids = time.time(), [], set()
    for number, name in enumerate(frames, 1):
        image = cv2.imread(os.path.join(footage, camera, 'img1', name))
        here = boxes[boxes[:, 0] == number]
        dets = np.zeros((len(here), 6), np.float32)
        dets[:, :2] = here[:, 2:4]
        dets[:, 2:4] = here[:, 2:4] + here[:, 4:6]
        dets[:, 4] = 1.0
        for x1, y1, x2, y2, track_id, *_ in tracker.update(dets, image):
            rows.append('{},{},{:.1f},{:.1f},{:.1f},{:.1f},1,-1,-1,-1'.format(
                number, int(track_id), x1, y1, x2 - x1, y2 - y1))
            ids.add(int(track_id))
    with open(out_file, 'w') as f:
        f.write('\n'.join(rows) + '\n')
    print(json.dumps({'camera': camera, 'frames': len(frames), 'boxes': int(len(boxes)),
                      'tracked_boxes': len(rows), 'tracks': len(ids),
                      'true_people': int(len(set(boxes[:, 1].astype(int)))),
                      'seconds': round(time.time() - began, 2)}))


if __name__ == '__main__':
    {'embed': embed, 'track': track}[sys.argv[1]](*sys.argv[2:])
