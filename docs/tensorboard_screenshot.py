#!/usr/bin/env python3
"""Redraw docs/demo_tensorboard.png, the README's picture of the demo run in TensorBoard.

The Time Series tab, filtered to the loss, batch_top1 and the validation
scores, without smoothing and with the whole range of every curve. Run it
after `make demo`, from the repository root; it needs a headless Chromium
(Debian: `apt install chromium`):

    .venv/bin/python docs/tensorboard_screenshot.py [--logdir experiments] [--output PNG]

TensorBoard keeps some settings (the settings pane, outliers, card width)
in the browser's local storage only, so the browser opens TensorBoard
through a small proxy of the same origin whose first page stores them.
"""

import argparse
import http.server
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

SETTINGS = ('{"ignoreOutliers": false, "timeSeriesSettingsPaneOpened": false, '
            '"scalarSmoothing": 0, "timeSeriesCardMinWidth": 320}')
# Headless Chromium draws no WebGL, so the charts are SVG.
ADDRESS = '/?forceSVG=true&smoothing=0&tagFilter=val%7C%5Eloss%24%7Cbatch_top1#timeseries'


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def serve_proxy(board):
    """A same-origin proxy of `board` whose /prepare page stores SETTINGS and
    opens ADDRESS; returns its port."""
    prepare = ("<script>localStorage.setItem('_tb_global_settings', '{}');"
               "location.replace('{}');</script>".format(SETTINGS, ADDRESS)).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def forward(self, data=None):
            if self.path == '/prepare':
                body, kind = prepare, 'text/html'
            else:
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ('content-type', 'x-xsrf-protected')}
                request = urllib.request.Request(board + self.path, data=data, headers=headers)
                with urllib.request.urlopen(request) as response:
                    body, kind = response.read(), response.headers.get('Content-Type')
            self.send_response(200)
            self.send_header('Content-Type', kind)
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self.forward()

        def do_POST(self):
            self.forward(self.rfile.read(int(self.headers.get('Content-Length', 0))))

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def main():
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split('\n')[0])
    parser.add_argument('--logdir', default='experiments', help='TensorBoard\'s --logdir.')
    parser.add_argument('--output', default=os.path.join('docs', 'demo_tensorboard.png'),
                        help='The PNG to write.')
    args = parser.parse_args()
    chromium = next(filter(None, map(shutil.which, ('chromium', 'chromium-browser',
                                                    'google-chrome'))), None)
    if chromium is None:
        sys.exit('No Chromium found; install one (Debian: apt install chromium).')
    port = free_port()
    board = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), 'tensorboard'),
                              '--logdir', args.logdir, '--port', str(port), '--host',
                              '127.0.0.1'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = 'http://127.0.0.1:{}'.format(port)
        for _ in range(60):
            try:
                urllib.request.urlopen(url + '/data/runs').read()
                break
            except OSError:
                time.sleep(1)
        proxy = serve_proxy(url)
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run([chromium, '--headless', '--no-sandbox', '--disable-gpu',
                            '--hide-scrollbars', '--window-size=1700,1000',
                            '--user-data-dir=' + profile, '--virtual-time-budget=25000',
                            '--screenshot=' + os.path.abspath(args.output),
                            'http://127.0.0.1:{}/prepare'.format(proxy)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    finally:
        board.terminate()
    print('Wrote', args.output)


if __name__ == '__main__':
    main()
