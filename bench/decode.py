#!/usr/bin/env python3
"""Benchmark: reading camera footage from a video file against a folder of frames.

Renders one camera of data/make_footage.py's footage (`--frames` frames of
512×256, JPEG quality 92) and encodes it as H.264 (CRF 18, as
make_footage.py --video), then measures, best of `--repeats`:

  - `decode`: frames/s of reading every frame into an RGB image: PIL on the
    JPEG files, PyAV on the video (inputs/footage.py's readers);
  - `crop`: frames/s of embed.py's cropping of every box of the MOT file
    (`footage.crop_detections`) from the folder and from the video, PNG crops
    written included;
  - the bytes on disk of each.

    .venv/bin/python -m bench.decode --json bench/results/decode.json
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time

if __package__ in (None, ''):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import checkout
    checkout.register()
from triplet_reid.data import make_footage  # noqa: E402
from triplet_reid.inputs import footage  # noqa: E402


def best_time(function, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def size_of(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(path, name)) for name in os.listdir(path))


def measure(camera, repeats):
    frames_folder, video = os.path.join(camera, 'img1'), os.path.join(camera, 'video.mp4')
    folder_frames = footage.frame_files(frames_folder)
    count = len(folder_frames)
    detections = footage.read_detections(os.path.join(camera, 'gt', 'gt.txt'))
    sources = {'folder': folder_frames, 'video': footage.VideoFile(video)}
    readers = {'folder': footage.folder_images, 'video': footage.video_images}
    result = {'frames': count, 'boxes': len(detections),
              'bytes': {'folder': size_of(frames_folder), 'video': size_of(video)}}
    for name, source in sources.items():
        seconds = best_time(lambda: sum(1 for _ in readers[name](
            source, sorted(folder_frames), None)), repeats)
        result.setdefault('decode_frames_per_second', {})[name] = count / seconds

        def crop():
            with tempfile.TemporaryDirectory() as crops:
                footage.crop_detections(detections, source, crops)
        result.setdefault('crop_frames_per_second', {})[name] = count / best_time(crop, repeats)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split('\n')[0])
    parser.add_argument('--demo', default=os.path.join('data', 'demo'),
                        help='The demo set (make demo) whose people walk.')
    parser.add_argument('--frames', type=int, default=300, help='Frames of the footage.')
    parser.add_argument('--people', type=int, default=10, help='People in the camera.')
    parser.add_argument('--repeats', type=int, default=3, help='Best of this many runs.')
    parser.add_argument('--json', help='Write the results here.')
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix='bench-decode-') as scratch:
        make_footage.generate(scratch, args.demo, 1, args.frames, args.people, 0, video=True)
        camera = os.path.join(scratch, sorted(n for n in os.listdir(scratch)
                                              if n.startswith('cam'))[0])
        result = measure(camera, args.repeats)
    result['machine'] = '{} CPUs, {}'.format(os.cpu_count(), platform.processor() or
                                             platform.machine())
    for key in ('decode_frames_per_second', 'crop_frames_per_second'):
        rates = result[key]
        print('{:<26} folder {:7.1f}  video {:7.1f}  (video/folder {:.2f}x)'.format(
            key, rates['folder'], rates['video'], rates['video'] / rates['folder']))
    print('bytes: folder {folder}, video {video}'.format(**result['bytes']))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=1, default=float)
    return 0


if __name__ == '__main__':
    sys.exit(main())
