"""train.py's choice of optimiser: Adam as the original, SGD with momentum
as TransReID and fast-reid's ViTs train, or AdamW with decoupled weight
decay; and gradient clipping. TensorFlow-free, so that --help answers at
once; `training/run.py` builds the optimiser.
"""

from triplet_reid.cli import flags
from triplet_reid.experiment import StepSettings

OPTIMIZERS = ('adam', 'sgd', 'adamw')


def add_flags(group):
    """Adds the optimiser's flags to train.py's optimiser `group`."""
    group.add_argument(
        '--optimizer', default=StepSettings.optimizer, choices=OPTIMIZERS,
        help='`adam`, as the original (epsilon 1e-8, TF1\'s); `sgd` with --momentum, as '
             'TransReID trains its ViTs (with --lr_schedule cosine and --warmup_iterations); '
             '`adamw`, Adam with --weight_decay decoupled from the gradient (applied to the '
             'weights directly rather than added to the loss). Stored with the experiment.')
    group.add_argument(
        '--momentum', default=0.9, type=flags.float_between(0, 0.999),
        help='The momentum of --optimizer sgd (TransReID: 0.9).')
    group.add_argument(
        '--clip_norm', default=0.0, type=flags.float_between(0, 1e6),
        help='Clip the gradients to this global L2 norm before each update, as transformers '
             'often train (0: no clipping).')
