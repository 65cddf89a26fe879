"""A static HTML report of an evaluation or a search, as one self-contained page.

`evaluate.py --html DIR` and `search.py --html DIR` write DIR/index.html:
the figures, the CMC and ROC pictures (evaluate.py), and the ranked gallery
of chosen queries with each result's distance, matches and junk marked, and
the verification threshold drawn as a line between the results within it
and those beyond. Images are inlined as small JPEG thumbnails, so the page
can be moved, mailed or archived on its own. No server and no script: any
browser shows it. NumPy, Pillow and Matplotlib only.
"""

import base64
import html
import io
import os

import numpy as np

from triplet_reid import cli
from triplet_reid.storage import files
from triplet_reid.evaluation import visualize

THUMB_HEIGHT = 96

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table.figures { border-collapse: collapse; margin-bottom: 1em; }
table.figures td, table.figures th { padding: 0.2em 0.8em; border-bottom: 1px solid #ddd;
  text-align: left; }
.pictures img { margin-right: 1em; border: 1px solid #ddd; }
.query { margin: 0.8em 0; display: flex; align-items: flex-start; flex-wrap: wrap; }
.result { display: inline-block; margin: 0 3px; text-align: center; font-size: 11px; }
.result img { display: block; border: 4px solid #fff; height: 96px; }
.probe img { border-color: #000; }
.correct img { border-color: #1a9641; }
.wrong img { border-color: #d7191c; }
.junk img { border-color: #9e9e9e; opacity: 0.45; }
.match img { border-color: #1a9641; }
.threshold { width: 3px; align-self: stretch; background: #2b83ba; margin: 0 6px; }
.legend span { display: inline-block; padding: 0 0.5em; margin-right: 0.5em; color: #fff; }
h3 { margin: 1.2em 0 0.2em; font-size: 1em; }
.caption { font-size: 12px; color: #555; }
"""


def thumbnail(path, advice, height=THUMB_HEIGHT):
    """A data: URI of a JPEG thumbnail, `height` pixels high, of the image at `path`."""
    from PIL import Image
    try:
        with Image.open(path) as image:
            return image_uri(image.convert('RGB'), height)
    except (OSError, Image.DecompressionBombError) as e:
        raise cli.UserError('cannot read the image `{}` for the report: {}; {}.'.format(
            path, e, advice))


def image_uri(image, height=THUMB_HEIGHT):
    """A data: URI of a JPEG thumbnail, `height` pixels high, of the RGB PIL `image`."""
    from PIL import Image
    width = max(1, round(image.width * height / max(image.height, 1)))
    small = image.resize((width, height), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    small.save(buffer, format='JPEG', quality=85)
    return 'data:image/jpeg;base64,' + base64.b64encode(buffer.getvalue()).decode('ascii')


def png_uri(png):
    return 'data:image/png;base64,' + base64.b64encode(png).decode('ascii')


def result_cell(uri, kind, caption, title):
    return ('<div class="result {}" title="{}"><img src="{}" alt="{}"><div>{}</div></div>'
            .format(kind, html.escape(title), uri, html.escape(kind), html.escape(caption)))


def ranking(query_uri, query_title, results, threshold):
    """One query's row: the query, then `results` [(uri, kind, distance,
    title)] nearest first, with the threshold line before the first result
    farther than `threshold` (None: no line)."""
    cells = [result_cell(query_uri, 'probe', 'query', query_title)]
    line_drawn = threshold is None
    for position, (uri, kind, distance, title) in enumerate(results, 1):
        if not line_drawn and distance > threshold:
            cells.append('<div class="threshold" title="threshold {:.4g}"></div>'.format(
                threshold))
            line_drawn = True
        cells.append(result_cell(uri, kind, '{}: {:.3f}'.format(position, distance), title))
    return '<div class="query">{}</div>'.format(''.join(cells))


def page(title, figures, pictures, sections, legend):
    """The whole page: `figures` [(name, value)], `pictures` [(caption, png
    bytes)], `sections` [(heading, [ranking HTML])], `legend` [(kind, text)]."""
    rows = ''.join('<tr><th>{}</th><td>{}</td></tr>'.format(html.escape(name), html.escape(value))
                   for name, value in figures)
    shown = ''.join('<img src="{}" alt="{}" title="{}">'.format(png_uri(png), html.escape(c),
                                                                html.escape(c))
                    for c, png in pictures)
    keys = ''.join('<span class="key" style="background:{}">{}</span>'.format(colour,
                                                                              html.escape(text))
                   for colour, text in legend)
    body = ''.join('<h3>{}</h3>{}'.format(html.escape(heading), ''.join(rows_html))
                   for heading, rows_html in sections)
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<title>{0}</title><style>{1}</style></head><body><h1>{0}</h1>'
            '<table class="figures">{2}</table><div class="pictures">{3}</div>'
            '<p class="legend">{4}</p>{5}</body></html>\n').format(
                html.escape(title), STYLE, rows, shown, keys, body)


def write(directory, text):
    """Writes `text` as DIR/index.html (the folder is made if needed), whole or not at all."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, 'index.html')
    files.atomic_write(path, text)
    return path


def chosen_queries(aps, valid, count, seed=0):
    """[(heading, query indices)]: the `count` worst queries by AP, the
    `count` best, and `count` drawn at random from the rest. `aps` holds
    the AP of each query in `valid` (a (Q,) bool mask), in order."""
    candidates = np.flatnonzero(valid)
    order = candidates[np.argsort(np.asarray(aps), kind='stable')]
    worst = order[:count]
    best = [q for q in order[::-1][:count] if q not in worst]
    rest = np.setdiff1d(candidates, np.concatenate([worst, best]).astype(int))
    drawn = np.sort(np.random.default_rng(seed).permutation(rest)[:count])
    return [('Worst queries by average precision', list(worst)),
            ('Best queries by average precision', list(best)),
            ('Random queries', list(drawn))]


def evaluation_report(directory, image_root, query, gallery, excluder, distances, result,
                      verification, figures, label, count=4, top_k=10):
    """Writes the report of an evaluation; returns its path.

    Args:
        query, gallery: (pids, fids) pairs.
        excluder, distances: as metrics.evaluate takes them.
        result, verification: metrics.evaluate's and metrics.verification's
            (None without the pairs).
        figures: [(name, value)] for the table of figures.
        label: the distance's name, for the pictures.
    """
    query_pids, query_fids = map(np.asarray, query)
    gallery_pids, gallery_fids = map(np.asarray, gallery)
    advice = 'check --image_root'
    threshold = None
    if verification:
        threshold = verification['threshold_at_fpr'].get('0.001')
    valid = ~np.isin(query_fids, result['skipped'])
    ap_of = dict(zip(np.flatnonzero(valid), result['aps']))
    sections = []
    for heading, queries in chosen_queries(result['aps'], valid, count):
        rows = []
        for q in queries:
            d = distances(np.array([q]))[0]
            mask = excluder(np.array([q]))[0]
            indices, kinds = visualize.top_ranked(d, mask, gallery_pids == query_pids[q], top_k)
            results = [(thumbnail(os.path.join(image_root, str(gallery_fids[g])), advice),
                        'junk' if kind == 'ignored' else kind, float(d[g]),
                        '{} (identity {})'.format(gallery_fids[g], gallery_pids[g]))
                       for g, kind in zip(indices, kinds)]
            rows.append(ranking(thumbnail(os.path.join(image_root, str(query_fids[q])), advice),
                                '{} (identity {}, AP {:.1%})'.format(query_fids[q],
                                                                     query_pids[q], ap_of[q]),
                                results, threshold))
        sections.append((heading, rows))
    pictures = [('CMC', visualize.plot_cmc(None, result['CMC'], result['mAP'], label))]
    if verification:
        pictures.append(('ROC', visualize.plot_roc(None, verification, label)))
    legend = [('#1a9641', 'same identity'), ('#d7191c', 'another identity'),
              ('#9e9e9e', 'junk (ignored by the excluder)')]
    if threshold is not None:
        legend.append(('#2b83ba', 'threshold at 0.1% false positives: {:.4g}'.format(threshold)))
    return write(directory, page('Evaluation', figures, pictures, sections, legend))


def search_report(directory, table, threshold, label, line=True):
    """Writes the report of search.py's `table` (see search.results_table);
    returns its path. The threshold line is left out (`line` False) where
    the distances shown are not those the threshold applies to (re-ranked)."""
    advice = visualize.SEARCH_ADVICE
    rows = []
    for entry in table:
        results = [(thumbnail(row['file'], advice), 'match' if row.get('match') else 'result',
                    row['distance'], row['file']) for row in entry['results']]
        rows.append(ranking(thumbnail(entry['query'], 'check --query'), entry['query'],
                            results, threshold if line else None))
    figures = [('queries', str(len(table))), ('distance', label)]
    legend = [('#000', 'query')]
    if threshold is not None:
        figures.append(('threshold', '{:g}'.format(threshold)))
        legend.append(('#1a9641', 'within the threshold'))
        if line:
            legend.append(('#2b83ba', 'threshold'))
    return write(directory, page('Search', figures, [], [('Rankings', rows)], legend))


def association_page(figures, identities):
    """The page of a multi-camera association: `figures` [(name, value)],
    then each identity of `identities` [(heading, [(uri, caption, title)])]
    as one strip of its tracks' thumbnails, in the order given (time)."""
    sections = [(heading, ['<div class="query">{}</div>'.format(''.join(
        result_cell(uri, 'match', caption, title) for uri, caption, title in tracks))])
        for heading, tracks in identities]
    return page('Global identities across cameras', figures, [], sections,
                [('#1a9641', 'each track, at its middle box, in the order of the shared clock')])
