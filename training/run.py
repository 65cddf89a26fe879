"""The training run behind train.py: its data, model, optimizer and
checkpoint, the summaries and the loop. The step is `training_step`'s, the
learning-rate schedule `schedules`', the collapse watch `collapse`'s and the
memory checks `memory`'s.

train.py parses the arguments and calls these in order: `checks.check_arguments`,
`load_data`, `make_validation`, `choose_seed`, `build_run`,
`restore_or_initialise`, then, once the experiment's arguments are stored,
`save` (the step-0 checkpoint of a new run) and `loop`.
"""

import logging
import os
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

import keras
import numpy as np
import tensorflow as tf

from triplet_reid import cli
from triplet_reid.training import adaptation, checks, detailed_logs, distributed
from triplet_reid import experiment
from triplet_reid.cli import flags
from triplet_reid.experiment import checkpoints
from triplet_reid.storage import files
from triplet_reid.experiment import Experiment
from triplet_reid.inputs import sampler
from triplet_reid.training import validation
from triplet_reid.training.collapse import collapse_warning, looks_collapsed
from triplet_reid.inputs.images import Preprocessing
from triplet_reid.models.inference import frame_function, inference_function
from triplet_reid.training.memory import check_input_size
from triplet_reid.models import video
from triplet_reid.models.build import build_video, load_body_weights, load_head_weights, restore
from triplet_reid.training.schedules import LearningRate
from triplet_reid.training.step import (AUXILIARY_LOSSES, auxiliary_heads, make_train_step,
                                        trainable_variables)
from triplet_reid.uninterrupt import Uninterrupt

# The training loop's lines keep the logger name users and tests know.
log = logging.getLogger('train')


class TrainingDiverged(cli.UserError):
    """The loss became NaN or infinite; reported like bad input, as the remedy is the user's."""


def format_eta(seconds):
    """`H:MM:SS` (with days when longer), or a plain statement beyond 100
    years, which no `timedelta` holds for --train_iterations near 2**63."""
    if seconds > 100 * 365 * 86400:
        return 'more than 100 years'
    return str(timedelta(seconds=int(seconds)))


def write_summaries(writer, step, out, lr, seconds, batch_k, histograms=True):
    """The original's TensorBoard scalars for one step, and its histograms when
    `histograms` (they cost more than the step of a small net)."""
    with writer.as_default(step=step):
        tf.summary.scalar('loss', tf.reduce_mean(out['losses']))
        tf.summary.scalar('batch_top1', out['top1'])
        tf.summary.scalar('batch_prec_at_{}'.format(batch_k - 1), out['prec_at_k'])
        tf.summary.scalar('active_count', out['active_count'])
        tf.summary.scalar('learning_rate', lr)
        tf.summary.scalar('secs_per_iter', seconds)
        tf.summary.scalar('embedding_spread', out['spread'])
        for name in AUXILIARY_LOSSES:
            if name in out:
                tf.summary.scalar(name, tf.reduce_mean(out[name]))
        if not histograms:
            return
        tf.summary.histogram('loss_distribution', out['losses'])
        tf.summary.histogram('embedding_dists', out['dists'])
        dists = out['dists'].numpy()
        tf.summary.histogram('embedding_pos_dists', dists[out['pos_mask'].numpy() == 1])
        tf.summary.histogram('embedding_neg_dists', dists[out['neg_mask'].numpy() == 1])
        tf.summary.histogram('embedding_lengths', out['emb_lengths'])


def sequential_ops():
    """Runs independent operations one after another (one inter-op thread).

    With --deterministic, each kernel is deterministic, but at the demo's batch
    size (P=18, K=4, 128×64) operations that run side by side in the
    inter-op pool still let two runs drift apart from the second step: their
    order of execution changes what the oneDNN kernels and the gradient
    accumulation compute. One inter-op thread makes the order fixed; kernels
    keep their intra-op threads, so a step of the tiny net costs the same.
    It must be set before TensorFlow runs its first operation; in a process
    that already ran some (such as a test calling main() twice), a warning
    says so when the setting differs.
    """
    try:
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        if tf.config.threading.get_inter_op_parallelism_threads() != 1:
            log.warning('--deterministic could not fix the order of operations, as TensorFlow '
                        'already runs in this process; runs may differ in the last bits.')


@dataclass
class Run:
    """What one training run holds: the network, the identity heads and
    centers of `auxiliary_heads` (`extras`, with the `temporal` layer of
    video training), the optimizer and its schedule, the step, the checkpoint
    with its manager and folder, and the model of the body's pooled
    features that video training aggregates before the head."""
    args: object
    chief: bool
    strategy: object
    model: object
    body: object
    extras: dict
    learning_rate: object
    optimizer: object
    step: tf.Variable
    checkpoint: tf.train.Checkpoint
    manager: tf.train.CheckpointManager
    checkpoint_dir: str
    frame_features: object = None


def begin_rounds(run, data):
    """(the `TrainingData` of the round training resumes in or begins with, the
    run's `adaptation.Rounds`) with --pseudo_labels, else (`data`, None). A first
    round is clustered before anything is written, so a clustering that leaves
    nothing to train on stops the run without a trace."""
    if data.crops is None:
        return data, None
    rounds = adaptation.Rounds(run.args, run.model, run.extras, data.crops)
    return data._replace(**rounds.begin(int(run.step.numpy()))), rounds


def next_round(run, rounds, data, batches, step, writer):
    """(data, batches, whether the checkpoint of `step` was saved) of the round
    iteration `step` is in. A new round's labels are written, and the
    checkpoint of `step` is saved with its cluster memory."""
    if rounds.starts_at(step):
        data = data._replace(**rounds.begin(step))
        batches = make_batches(run, data, step)
    if not rounds.fresh:
        return data, batches, False
    if run.chief:
        rounds.commit(writer)
    save(run, step)
    return data, batches, True


def make_validation(args, chief):
    """The validation of train.py's --val_* arguments, on the chief only, or
    None (see `validation.make_validation`)."""
    if not (chief and args.val_query):
        return None
    return validation.make_validation(
        args.val_query, args.val_gallery, flags.as_list(args.image_root)[0], args.val_excluder,
        Preprocessing.of(Experiment.of(args)), args.metric, args.val_camera_regex,
        args.loading_threads, args.max_image_pixels,
        (args.camera_regex, args.sie_cameras) if args.sie_cameras else None)


def choose_seed(args):
    """Chooses a seed when none is given (it is stored with the arguments;
    experiments of the TF1 original have none yet), and logs the arguments.

    Returns:
        Whether the seed is new, so that args.json must be written again.
    """
    new_seed = args.seed is None
    if new_seed:
        args.seed = secrets.randbelow(2 ** 31)
    log.info('Training using the following parameters:')
    for key, value in sorted(vars(args).items()):
        log.info('%s: %s', key, value)
    return new_seed


def make_optimizer(args, learning_rate):
    """The optimiser of --optimizer at `learning_rate`, clipping the global
    gradient norm at --clip_norm when it is positive."""
    clip = {'global_clipnorm': args.clip_norm} if args.clip_norm else {}
    if args.optimizer == 'sgd':
        return keras.optimizers.SGD(learning_rate, momentum=args.momentum, **clip)
    if args.optimizer == 'adamw':
        return keras.optimizers.AdamW(learning_rate, weight_decay=args.weight_decay,
                                      epsilon=1e-8, **clip)
    # TF1's Adam epsilon, as the original trained with (Keras defaults to 1e-7).
    return keras.optimizers.Adam(learning_rate, epsilon=1e-8, **clip)


def build_run(args, strategy, num_ids, chief):
    """The model, initialised from the seed so that the same seed gives the
    same run, its auxiliary heads for `num_ids` identities, the optimizer
    (built now, so that its slots exist in the step-0 checkpoint), and the
    checkpoint of everything that decides the future of the run."""
    keras.utils.set_random_seed(args.seed)
    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    with strategy.scope():
        model, body, frame_features, layer = build_video(Experiment.of(args),
                                                         args.mixed_precision)
        if strategy.num_replicas_in_sync > 1:
            distributed.synchronize_batch_norm(model)
        extras = auxiliary_heads(args, num_ids, args.embedding_dim)
        if layer is not None:
            extras['temporal'] = layer
        learning_rate = LearningRate(args.learning_rate, args.decay_start_iteration,
                                     args.train_iterations, args.lr_schedule,
                                     args.warmup_iterations, args.lr_decay_steps,
                                     args.lr_decay_factor)
        optimizer = make_optimizer(args, learning_rate)
        if args.mixed_precision == 'float16':
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(trainable_variables(model, extras))
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name='global_step')
    checkpoint = tf.train.Checkpoint(model=model, body=body, optimizer=optimizer, step=step,
                                     **extras)
    # Other workers of a multi-worker run write to a scratch folder they delete.
    task_type, task_index = distributed.worker_task(args.distribution)
    checkpoint_dir = args.experiment_root if chief else os.path.join(
        args.experiment_root, '.{}_{}'.format(task_type, task_index))
    if chief:
        checkpoints.remove_damaged_index(checkpoint_dir)
    manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir,
                                         max_to_keep=args.keep_checkpoints,
                                         checkpoint_name='checkpoint')
    return Run(args, chief, strategy, model, body, extras, learning_rate, optimizer, step,
               checkpoint, manager, checkpoint_dir, frame_features)


def restore_or_initialise(run, resuming, num_ids):
    """Restores the newest checkpoint, or initialises the body from
    --initial_checkpoint, then checks that the net takes the input size.

    Returns:
        The restored checkpoint's path, or None for a new run.
    """
    args = run.args
    # One reading of the newest checkpoint tells that it is complete, what it
    # trained and its format.
    latest = checkpoints.newest_checkpoint_file(args.experiment_root)
    if resuming and run.chief and not latest:
        checkpoints.check_checkpoints_not_lost(args.experiment_root)
    if latest:
        checks.check_identity_count(latest, num_ids, args.train_set)
        restore(latest, run.checkpoint, run.model, run.body, run.optimizer, run.step,
                what='the model {} + {} with embedding_dim {}'.format(
                    args.model_name, args.head_name, args.embedding_dim))
    elif args.initial_checkpoint:
        whole = args.pseudo_labels if args.initial_head is None else args.initial_head
        log.info('Initialising the %s from %s', 'model' if whole else 'body',
                 args.initial_checkpoint)
        load_body_weights(args.model_name, run.body, args.initial_checkpoint)
        if whole:
            load_head_weights(run.model, args.initial_checkpoint)
    check_input_size(run.model, args)
    return latest.path if latest else None


def save(run, number):
    """Writes checkpoint `number` (other workers' copies are deleted again)."""
    run.manager.save(checkpoint_number=number)
    if not run.chief:
        tf.io.gfile.rmtree(run.checkpoint_dir)


def make_batches(run, data, start_step):
    """The iterator of training batches of `data` (a `TrainingData`) from
    `start_step` on: one input pipeline per worker, yielding one piece per
    local replica."""
    args, strategy = run.args, run.strategy

    def make_dataset(context=None):
        shards = context.num_input_pipelines if context else 1
        options = dict(
            batch_p=args.batch_p, batch_k=args.batch_k, flip_augment=args.flip_augment,
            crop_augment=args.crop_augment, seed=args.seed,
            loading_threads=args.loading_threads, start_step=start_step, num_shards=shards,
            shard_index=context.input_pipeline_id if context else 0,
            splits=strategy.num_replicas_in_sync // shards, pad_crop=args.pad_crop,
            erasing=args.random_erasing, erasing_fill=args.erasing_fill)
        preprocessing = Preprocessing.of(Experiment.of(args))
        if data.tracklets is not None:
            return sampler.pkt_dataset(data.tracklets, data.image_root, preprocessing,
                                       seq_len=args.seq_len,
                                       frame_sampling=args.frame_sampling, **options)
        return sampler.pk_dataset(data.pids, data.fids, data.image_root, preprocessing,
                                  labels=data.labels, cameras=data.cameras, **options)
    if strategy.num_replicas_in_sync > 1:
        return iter(strategy.distribute_datasets_from_function(make_dataset))
    return iter(make_dataset())


def make_validator(run, validate):
    """`run_validation(step, writer)` for the chief: validates, writes the scores to
    TensorBoard and the log, and copies a new best checkpoint to `best/`,
    where the regular ones' --keep_checkpoints cannot delete it. Two are kept
    there so that best.json, written after the copy, always names one that
    exists."""
    root = run.args.experiment_root
    forward, combine = inference_function(run.model), None
    if 'temporal' in run.extras:
        # Validation on tracklets combines their frames as embed.py does.
        layer, position = run.extras['temporal'], run.args.temporal_position
        forward = frame_function(run.model, run.frame_features, position)
        combine = video.tracklet_function(run.model, layer, position)
    best = experiment.read_best(root)
    best_manager = tf.train.CheckpointManager(run.checkpoint, os.path.join(root, 'best'),
                                              max_to_keep=2, checkpoint_name='checkpoint')

    def run_validation(current, writer):
        nonlocal best
        start_time = time.time()
        scores = validate(forward, combine)
        with writer.as_default():
            for name, value in scores.items():
                tf.summary.scalar('val/' + name, value, step=current)
        writer.flush()
        improved = best is None or scores['mAP'] > best['mAP']
        log.info('validation at iter %d: mAP %.2f%%, top-1 %.2f%%, top-5 %.2f%% (%.1fs)%s',
                 current, 100 * scores['mAP'], 100 * scores['top1'], 100 * scores['top5'],
                 time.time() - start_time, ', the best so far' if improved else '')
        if improved:
            path = best_manager.save(checkpoint_number=current)
            best = dict(scores, step=current, checkpoint=os.path.relpath(path, root))
            files.write_json(os.path.join(root, 'best.json'), best, experiment=True)
    return run_validation


def checked_step(train_step, images, labels, run):
    """Runs one training step; refuses a batch that does not fit in memory
    and a loss that is not finite, before any checkpoint holds it.

    Returns:
        (out, per-anchor losses (B,), {auxiliary loss: mean}).
    """
    args = run.args
    try:
        out = train_step(images, labels)
    except tf.errors.ResourceExhaustedError as e:
        raise cli.UserError(
            'a training batch of {} images of {}x{} does not fit in memory ({}); lower '
            '--batch_p, --batch_k or the input size.'.format(
                args.batch_p * args.batch_k, args.net_input_height, args.net_input_width,
                str(e).strip().splitlines()[0][:200]))
    b_loss = out['losses'].numpy()
    terms = {name: float(np.mean(out[name])) for name in AUXILIARY_LOSSES if name in out}
    if not np.all(np.isfinite(b_loss)) or not np.all(np.isfinite(list(terms.values()))):
        broken = ['loss'] * (not np.all(np.isfinite(b_loss))) + [
            name for name, value in terms.items() if not np.isfinite(value)]
        raise TrainingDiverged(
            'the {} became {} at iteration {}; no checkpoint was written for it. What scales it '
            'and its gradients: {}. Rerun with gentler values (a lower learning rate or weight, '
            'a higher temperature) and --override, which resumes from the last checkpoint '
            '`{}`.'.format(
                ' and '.join('triplet loss' if name == 'loss' else name.replace('_', ' ')
                             for name in broken),
                'NaN' if np.isnan(b_loss).any() or np.isnan(list(terms.values())).any()
                else 'infinite', int(run.step.numpy()), ', '.join(diverging_flags(args, broken)),
                checkpoints.newest_checkpoint(args.experiment_root)))
    return out, b_loss, terms


def diverging_flags(args, broken):
    """The flags that scale the losses `broken` (names of `out`: 'loss' for
    the triplet loss, or `AUXILIARY_LOSSES`) and their gradients, as given."""
    named = {'loss': ['--triplet_loss_weight', '--margin'],
             'id_loss': ['--id_loss_weight'],
             'center_loss': ['--center_loss_weight', '--center_learning_rate'],
             'memory_loss': ['--memory_loss_weight', '--memory_temperature'] + (
                 ['--inter_camera_weight'] if getattr(args, 'camera_proxies', False) else [])}
    found = ['--learning_rate']
    for name in broken:
        found += [flag for flag in named.get(name, []) if flag not in found]
    return ['{} ({})'.format(flag, getattr(args, flag[2:])) for flag in found
            if getattr(args, flag[2:], None) is not None]


def log_iteration(args, current, b_loss, terms, out, elapsed_time):
    """The iteration's line in the log: the loss, the auxiliary losses, the
    batch precision and the time left."""
    seconds_todo = (args.train_iterations - current) * elapsed_time
    log.info('iter:%6d, loss min|avg|max: %.3f|%.3f|%6.3f, %sbatch-p@%d: %.2f%%, ETA: %s '
             '(%.2fs/it)', current, b_loss.min(), b_loss.mean(), b_loss.max(),
             ''.join('{}: {:.3f}, '.format(n, v) for n, v in terms.items()),
             args.batch_k - 1, 100 * float(out['prec_at_k']),
             format_eta(seconds_todo), elapsed_time)


def watch_collapse(collapsed_for, b_loss, out, args):
    """The number of steps in a row that looked collapsed, with the step of
    `out` and its per-anchor losses `b_loss`; warns when it reaches
    --collapse_patience."""
    collapsed_for = collapsed_for + 1 if looks_collapsed(
        float(b_loss.mean()), float(out['spread']), args.margin, float(out['prec_at_k']),
        (args.batch_k - 1) / (args.batch_p * args.batch_k - 1)) else 0
    if args.collapse_patience and collapsed_for == args.collapse_patience:
        log.warning(collapse_warning(collapsed_for, args.margin))
    return collapsed_for


def open_detailed_logs(args, data):
    """The --detailed_logs arrays (embeddings, losses, fids), wide enough for
    every path of `data`, of any round."""
    fids = data.fids if data.crops is None else data.crops.fids
    return detailed_logs.open_logs(
        args.experiment_root, args.train_iterations, args.batch_p * args.batch_k,
        args.embedding_dim, max(len(f.encode('utf-8')) for f in fids))


def training_step(run):
    """The run's `tf.function` training step (see `step.make_train_step`), on
    tracklets with --seq_len."""
    forward = None
    if 'temporal' in run.extras:
        forward = video.tracklet_forward(run.model, run.frame_features, run.extras['temporal'],
                                         run.args.temporal_position, run.args.seq_len)
    return make_train_step(run.model, run.optimizer, run.step, run.args, run.strategy,
                           run.extras, forward)[0]


def loop(run, data, validate, changed, latest, rounds=None):
    """Trains on `data` (a `TrainingData`) from the restored step to
    --train_iterations, checkpointing, validating (`validate`, on the chief)
    and watching for a collapse, until done or interrupted; then writes the
    final checkpoint. `changed` says that the resumed run's arguments changed
    and are stored after its first iteration; `latest` is the restored
    checkpoint, if any; `rounds`, with --pseudo_labels, begins each round
    (`begin_rounds`).

    Returns:
        The exit status, 0.
    """
    args, chief, strategy, step = run.args, run.chief, run.strategy, run.step
    start_step = int(step.numpy())
    train_step = training_step(run)
    run_validation = make_validator(run, validate) if validate else None
    if start_step >= args.train_iterations:
        log.info('The experiment already finished its %d iterations.', args.train_iterations)
        return 0
    batches = make_batches(run, data, start_step)
    if args.detailed_logs and chief:
        log_embs, log_loss, log_fids = open_detailed_logs(args, data)
    writer = tf.summary.create_file_writer(args.experiment_root if chief else run.checkpoint_dir)
    log.info('Starting training from iteration %d; the first iteration also traces and '
             'compiles the step, which takes a few seconds more.', start_step)
    saved_step = start_step if latest else None
    collapsed_for = 0
    # The workers of a multi-worker run agree each step whether any was interrupted.
    stop = distributed.agreed_stop(strategy) if args.distribution == 'multi_worker' else bool
    with Uninterrupt(log=log) as u:
        for i in range(start_step, args.train_iterations):
            if rounds is not None:
                data, batches, saved = next_round(run, rounds, data, batches, i, writer)
                saved_step = i if saved else saved_step
            start_time = time.time()
            images, batch_fids, _, labels = next(batches)
            out, b_loss, terms = checked_step(train_step, images, labels, run)
            elapsed_time = time.time() - start_time
            current = int(step.numpy())
            if changed and chief and i == start_step:
                experiment.write_args(args)
            collapsed_for = watch_collapse(collapsed_for, b_loss, out, args)
            if chief:
                write_summaries(writer, current, out, run.learning_rate(current - 1),
                                elapsed_time, args.batch_k, current % args.histogram_every == 0)
            if args.detailed_logs and chief:
                log_embs[i], log_loss[i] = out['emb'].numpy(), b_loss
                log_fids[i] = np.concatenate([t.numpy() for t in
                                              strategy.experimental_local_results(batch_fids)])
            log_iteration(args, current, b_loss, terms, out, elapsed_time)
            if args.checkpoint_frequency > 0 and current % args.checkpoint_frequency == 0:
                save(run, current)
                saved_step = current
            if validate and (current % args.val_every == 0 or current == args.train_iterations):
                run_validation(current, writer)
            if stop(u.interrupted):
                log.info('Interrupted on request%s!', '' if u.interrupted else
                         ' of another worker')
                break

        # A final checkpoint, crucial when intermediate storing is disabled or
        # the run was interrupted.
        if saved_step != int(step.numpy()):
            save(run, int(step.numpy()))
        writer.flush()
        if args.detailed_logs and chief:
            for array in (log_embs, log_loss, log_fids):
                array.flush()
    log.info('Stopped at iteration %d; checkpoint %s.', int(step.numpy()),
             checkpoints.newest_checkpoint(args.experiment_root))
    return 0
