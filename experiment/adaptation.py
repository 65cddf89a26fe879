"""Training on unlabelled crops: train.py's flags for pseudo-identities, and
their record. TensorFlow-free, so that --help answers at once.

With --pseudo_labels, train.py ignores the identities of --train_set (a CSV
of `identity,path` rows, of `path` rows, with a header naming its columns,
or a folder of crops) and, every --cluster_every iterations, embeds the
crops with the current model, clusters them (`training.pseudo_labels`) and
trains on the clusters as identities (`training.adaptation`).
"""

import argparse
import dataclasses
from dataclasses import dataclass

from triplet_reid.cli import flags, patterns


@dataclass(frozen=True)
class Adaptation:
    """How pseudo-identities are made: train.py's flags of the same names,
    whose defaults train.py reads from here. The defaults are the clustering
    baselines' (SpCL, Cluster Contrast): k-reciprocal Jaccard distances with
    k1 = 30 and k2 = 6, DBSCAN with eps 0.6 and 4 samples a core."""
    pseudo_labels: bool = False
    cluster_every: int = 200
    cluster_eps: float = 0.6
    cluster_min_samples: int = 4
    cluster_k1: int = 30
    cluster_k2: int = 6
    camera_regex: object = None
    camera_centering: bool = False
    initial_head: object = None
    cluster_camera_penalty: float = 0.0

    @classmethod
    def of(cls, args):
        """The record of train.py's arguments (a Namespace or an args.json
        dict); a field they lack keeps its default."""
        get = args.get if isinstance(args, dict) else lambda name, default: getattr(
            args, name, default)
        return cls(**{field.name: get(field.name, field.default)
                      for field in dataclasses.fields(cls)})


def add_flags(parser, step_settings, loss_flags):
    """Adds the `pseudo-labels` flag group to train.py's `parser`, and
    --triplet_loss_weight to its group `loss_flags`; the losses' defaults
    come from `step_settings` (`experiment.StepSettings`), as the step reads
    them."""
    loss_flags.add_argument(
        '--triplet_loss_weight', default=step_settings.triplet_loss_weight,
        type=flags.float_between(0, 1e6),
        help='Weight of the triplet loss (--loss). 0 turns it off, for training on the '
             'identity or cluster-memory loss alone.')
    group = parser.add_argument_group(
        'pseudo-labels', 'Training without identity labels (unsupervised domain adaptation): '
        'the crops are clustered into pseudo-identities, trained on, and clustered again.')
    default = Adaptation()
    group.add_argument(
        '--pseudo_labels', action='store_true', default=default.pseudo_labels,
        help='Ignore the identities of --train_set and train on pseudo-identities: every '
             '--cluster_every iterations the crops are embedded with the current model and '
             'clustered (k-reciprocal Jaccard distances, DBSCAN); crops no cluster takes are '
             'left out of the round. --train_set may then be a folder of crops, a CSV of '
             '`path` rows, or a CSV with a header naming its columns: `path` and any of '
             '`camera`, `track`, `frame` (footage: every crop of a track is one person, two '
             'tracks at the same time in one camera are two) and `identity` (for measuring the '
             'pseudo-labels only). Start from a trained model with --initial_checkpoint.')
    group.add_argument(
        '--initial_head', action=argparse.BooleanOptionalAction, default=default.initial_head,
        help='Start the head too, not only the body, from --initial_checkpoint (a checkpoint '
             'of this project with the same net, head and embedding size, such as a model '
             'imported with import_model.py), so that training starts from the whole trained '
             'model. On by default with --pseudo_labels, whose first round clusters that '
             'model\'s embeddings; off otherwise, where the head starts fresh as in the '
             'original.')
    group.add_argument(
        '--cluster_every', default=default.cluster_every, type=flags.positive_int,
        help='Cluster again every this many iterations (a round); each round\'s pseudo-labels '
             'are written to pseudo_labels/ in the experiment root.')
    group.add_argument(
        '--cluster_eps', default=default.cluster_eps, type=flags.float_between(0, 1, False),
        help='DBSCAN\'s neighbourhood radius in Jaccard distance (0 to 1): larger merges more '
             'crops into fewer, larger pseudo-identities and leaves fewer outliers.')
    group.add_argument(
        '--cluster_min_samples', default=default.cluster_min_samples,
        type=flags.int_between(2, 1000),
        help='DBSCAN\'s crops within --cluster_eps that make a crop a core of a cluster.')
    group.add_argument(
        '--cluster_k1', default=default.cluster_k1, type=flags.int_between(2, 1000),
        help='Nearest neighbours of the k-reciprocal encoding (as re-ranking\'s k1).')
    group.add_argument(
        '--cluster_k2', default=default.cluster_k2, type=flags.int_between(1, 1000),
        help='Neighbours whose encodings are averaged into each crop\'s (re-ranking\'s k2; '
             '1 turns the expansion off).')
    add_camera_flags(group, default)
    add_memory_flags(group, step_settings)


def add_camera_flags(group, default):
    """The flags of the crops' cameras and the clustering's use of them, in
    `group`, with the defaults of the `Adaptation` `default`."""
    group.add_argument(
        '--camera_regex', default=default.camera_regex, type=patterns.argument(
            '--camera_regex', groups=1, remedy='put the camera in parentheses, as `_c(\\d+)`.'),
        help='The regular expression whose first group, searched in each crop\'s path, is its '
             'camera (such as `_c(\\d+)`), for crops whose CSV has no camera column.')
    group.add_argument(
        '--camera_centering', action='store_true', default=default.camera_centering,
        help='Before clustering, subtract each camera\'s mean embedding, so that crops cluster '
             'by person rather than by camera (needs cameras, from a column or --camera_regex).')
    group.add_argument(
        '--cluster_camera_penalty', default=default.cluster_camera_penalty,
        type=flags.float_between(0, 4),
        help='Before clustering, add this to the squared distance (of unit-length embeddings, '
             '0 to 4) between two crops of one camera, so that each crop\'s nearest neighbours, '
             'and so its pseudo-identity, reach into the other cameras, where the same person '
             'looks least alike (needs cameras, from a column or --camera_regex). 0 turns it '
             'off.')


# The lowest --memory_temperature: its inverse scales the memory loss's
# logits and gradients, and below it one step's update can make the weights
# infinite (1e-30 took the loss to 2e29, then the weights to NaN). Cluster
# Contrast uses 0.05.
MIN_TEMPERATURE = 0.001


def add_memory_flags(group, step_settings):
    """The cluster-memory loss's flags, in `group`."""
    group.add_argument(
        '--memory_loss_weight', default=step_settings.memory_loss_weight,
        type=flags.float_between(0, 1e6),
        help='Weight of the cluster-memory loss (Cluster Contrast): a contrastive loss of each '
             'crop against one momentum-updated centroid per pseudo-identity. 0 turns it off.')
    group.add_argument(
        '--memory_temperature', default=step_settings.memory_temperature,
        type=flags.float_between(MIN_TEMPERATURE, 10),
        help='Temperature of the cluster-memory loss\'s softmax ({} to 10): it divides '
             'cosine similarities, so that lower values sharpen the softmax and scale the '
             'gradients by its inverse.'.format(MIN_TEMPERATURE))
    group.add_argument(
        '--memory_momentum', default=step_settings.memory_momentum,
        type=flags.float_between(0, 1),
        help='How much of a centroid each step keeps: the centroid of each pseudo-identity in '
             'the batch becomes momentum × itself + (1 − momentum) × its hardest crop.')
    group.add_argument(
        '--camera_proxies', action=argparse.BooleanOptionalAction,
        default=step_settings.camera_proxies,
        help='Camera-aware proxies (CAP): the cluster memory keeps one centroid per '
             'pseudo-identity and camera, and the memory loss compares each crop with the '
             'proxies of its own camera only, so that a person whom the clustering split by '
             'camera is no negative of himself, plus --inter_camera_weight times a loss that '
             'pulls it towards its pseudo-identity\'s proxies in every camera. Needs the '
             'crops\' cameras (a `camera` column or --camera_regex).')
    group.add_argument(
        '--inter_camera_weight', default=step_settings.inter_camera_weight,
        type=flags.float_between(0, 1e6),
        help='With --camera_proxies, the weight of the inter-camera term.')
    group.add_argument(
        '--proxy_negatives', default=step_settings.proxy_negatives,
        type=flags.int_between(1, 100000),
        help='With --camera_proxies, the most similar proxies of other pseudo-identities that '
             'the inter-camera term compares each crop with.')
