"""Pictures of an evaluation: ranked galleries of some queries, and the CMC curve.

`evaluate.py --plot DIR --image_root ROOT` writes DIR/rankings.png and
DIR/cmc.png through these functions. Matplotlib draws off-screen (Agg), so
no display is needed; NumPy, Pillow and Matplotlib only.
"""

import io
import os

import numpy as np

from triplet_reid import cli
from triplet_reid.storage import files

CORRECT, WRONG, IGNORED, QUERY = '#1a9641', '#d7191c', '#9e9e9e', '#000000'


def pick_queries(valid, count):
    """`count` query indices spread evenly over those with a valid match."""
    candidates = np.flatnonzero(valid)
    if len(candidates) == 0:
        return candidates
    return np.unique(candidates[np.linspace(0, len(candidates) - 1, min(count, len(candidates)))
                                .round().astype(int)])


def top_ranked(d, mask, matches, top_k):
    """The raw top-k of one query's gallery and what each entry counts as.

    Args:
        d: (G,) distances; mask: (G,) excluded (junk); matches: (G,) same identity.

    Returns:
        (indices, kinds): gallery indices nearest first, and for each 'ignored'
        (junk, or what the excluder drops), 'correct' or 'wrong'. Ignored
        entries keep their place but do not count.
    """
    indices = np.argsort(d, kind='stable')[:top_k]
    kinds = np.where(mask[indices], 'ignored',
                     np.where(matches[indices], 'correct', 'wrong'))
    return indices, kinds


def _load(image_root, fid, grey=False, advice='check --image_root'):
    from PIL import Image
    path = os.path.join(image_root, str(fid))
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert('RGB'), np.float32) / 255
    except (OSError, Image.DecompressionBombError) as e:
        raise cli.UserError('cannot read the image `{}` for the plot: {}; {}.'.format(
            path, e, advice))
    if grey:
        # Faded grey: visible, but clearly not part of the evaluation.
        array = 0.35 * array.mean(-1, keepdims=True).repeat(3, -1) + 0.65
    return array


def _save(figure, path):
    """The figure as PNG bytes, also written to `path` unless it is None."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format='png', dpi=80)
    if path is not None:
        files.atomic_write(path, buffer.getvalue(), 'wb')
    return buffer.getvalue()


def plot_rankings(path, image_root, query_pids, query_fids, gallery_pids, gallery_fids,
                  excluder, distances, queries, top_k=10):
    """One row per query: the query, then its top-k gallery images framed in
    green (same identity), red (another) or grey (junk and the like, which
    the excluder ignores; in Market-1501 also the query person seen by the
    query's camera)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    d = distances(queries)
    mask = excluder(queries)
    matches = np.asarray(gallery_pids)[None] == np.asarray(query_pids)[queries, None]
    figure, axes = plt.subplots(len(queries), top_k + 1, squeeze=False,
                                figsize=(1.0 * (top_k + 1), 2.1 * len(queries)))
    for row, query in enumerate(queries):
        indices, kinds = top_ranked(d[row], mask[row], matches[row], top_k)
        cells = [(query_fids[query], 'query {}'.format(query_pids[query]), QUERY, False)]
        counted = 0
        for index, kind in zip(indices, kinds):
            if kind == 'ignored':
                cells.append((gallery_fids[index], 'ignored', IGNORED, True))
            else:
                counted += 1
                cells.append((gallery_fids[index], '{}. {}'.format(counted, gallery_pids[index]),
                              CORRECT if kind == 'correct' else WRONG, False))
        for ax, (fid, title, colour, grey) in zip(axes[row], cells):
            ax.imshow(_load(image_root, fid, grey), aspect='auto')
            ax.set_title(title, fontsize=7, color=colour if colour != QUERY else 'black')
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(3)
        for ax in axes[row][len(cells):]:
            ax.axis('off')
    figure.suptitle('Top-{} of {} queries: green same identity, red another, grey ignored '
                    '(junk, same camera)'.format(top_k, len(queries)), fontsize=9)
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    _save(figure, path)
    plt.close(figure)


def plot_cmc(path, cmc, mean_ap, label, max_rank=50):
    """The CMC curve up to `max_rank`, its top-1/5/10 marked, mAP in the title;
    written to `path` (None: not written) and returned as PNG bytes."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    cmc = np.asarray(cmc)[:max_rank]
    ranks = np.arange(1, len(cmc) + 1)
    figure, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(ranks, 100 * cmc, color='#2b83ba', linewidth=2, label=label)
    marked = [k for k in (1, 5, 10) if k <= len(cmc)]
    ax.plot(marked, [100 * cmc[k - 1] for k in marked], 'o', color='#2b83ba')
    # One block of figures in a corner: on a good curve the three points lie
    # too close together for a label beside each.
    ax.text(0.03, 0.05, '\n'.join('top-{}: {:.1f}%'.format(k, 100 * cmc[k - 1]) for k in marked),
            transform=ax.transAxes, fontsize=8)
    ax.set_xlabel('rank')
    ax.set_ylabel('matching rate (%)')
    ax.set_xlim(0, max(len(cmc), 2))
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc='lower right', fontsize=8)
    ax.set_title('CMC, mAP {:.2%}'.format(mean_ap))
    figure.tight_layout()
    png = _save(figure, path)
    plt.close(figure)
    return png


def plot_roc(path, verification, label):
    """The verification ROC curve (true- against false-positive rate, the latter
    logarithmic) of `metrics.verification` with its curve, the four rates and
    the equal error rate marked; written to `path` (None: not written) and
    returned as PNG bytes."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(5, 3.6))
    curve = verification['curve']
    ax.plot(curve['fpr'], 100 * np.asarray(curve['tpr']), color='#d7191c', linewidth=2,
            label=label)
    for rate, tpr in verification['tpr_at_fpr'].items():
        ax.plot(float(rate), 100 * tpr, 'o', color='#d7191c')
        ax.annotate('{:.1f}%'.format(100 * tpr), (float(rate), 100 * tpr),
                    textcoords='offset points', xytext=(4, -12), fontsize=8)
    ax.set_xscale('log')
    ax.set_xlabel('false-positive rate (different identities accepted)')
    ax.set_ylabel('true-positive rate (%)')
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3, which='both')
    ax.legend(loc='lower right', fontsize=8)
    ax.set_title('Verification ROC, EER {:.2%}'.format(verification['eer']))
    figure.tight_layout()
    png = _save(figure, path)
    plt.close(figure)
    return png


# search.py has no image root: its gallery's file names are as embed.py stored
# them, relative to the dataset's image root for a CSV.
SEARCH_ADVICE = ('the gallery stores its file names as embed.py was given them (relative to '
                 'the image root for --dataset), so run search.py from the folder they are '
                 'relative to, or embed the gallery with --images')


def plot_search(path, table, thumb_height=2.0):
    """The rankings of search.py: one row per query, the query first (black
    border), then its results with their distances; a green border marks a
    result within the threshold. Image paths are used as they are."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    columns = 1 + max(len(entry['results']) for entry in table)
    figure, axes = plt.subplots(len(table), columns, squeeze=False,
                                figsize=(columns * thumb_height * 0.55, len(table) * thumb_height))
    for row, entry in enumerate(table):
        cells = [(entry['query'], 'query', QUERY)] + [
            (r['file'], '{:.3f}'.format(r['distance']),
             CORRECT if r.get('match') else IGNORED) for r in entry['results']]
        for column in range(columns):
            ax = axes[row, column]
            ax.axis('off')
            if column >= len(cells):
                continue
            fid, title, colour = cells[column]
            ax.imshow(_load('', fid, advice=SEARCH_ADVICE))
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_color(colour)
                spine.set_linewidth(3)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.axis('on')
            ax.set_title(title, fontsize=7)
    figure.tight_layout()
    _save(figure, path)
    plt.close(figure)
