"""Train, evaluate, save and export one LSTM classifier: `train_and_evaluate(config)`.

Plain arguments only: `python -m mnist_rnn.train` maps its flags onto a `TrainConfig`; tests
and notebooks build one directly, and may pass their own `datasets`.
"""

import contextlib
import dataclasses
import functools
import json
import math
import os
import shutil
import signal
import sys
import time
from typing import TextIO

import tensorflow as tf

from mnist_rnn import compat, files

from mnist_rnn.data import pipeline as data

from mnist_rnn.evaluation import report

from mnist_rnn.serving import predictor, saved_model, tflite

from mnist_rnn.training import checkpoint, distribute, rundir
from mnist_rnn.training.callbacks import Backup, Evaluation, Evaluator, Guard, StepTimer, StopOnSignal
from mnist_rnn.compat import keras
from mnist_rnn.config import TrainConfig, run_defining
from mnist_rnn.errors import Interrupted, NumericalError, UserError, setting
from mnist_rnn.model.lstm import build_for, learning_rate_at, schedule_for, seed
from mnist_rnn.training.rundir import LOGS_DIR, METRICS_FILE, MODEL_FILE, SAVED_MODEL_DIR
from mnist_rnn.training.tensorboard import TensorBoardLog


@dataclasses.dataclass
class _Run:
    """What a run is working with, once prepared."""

    config: TrainConfig
    strategy: tf.distribute.Strategy
    out_dir: str  # model_dir for the chief; a private directory for other workers.
    backup_dir: str  # The chief's, which is the run's: other workers only read it.
    state: dict | None  # The backup's, when resuming.
    dataset_name: str
    datasets: data.Datasets | None = None
    model: keras.Model | None = None
    # Whether the directory's outputs are this run's: true once it has backed up.
    handed_over: bool = False

    @property
    def chief(self) -> bool:
        return distribute.is_chief(self.strategy)

    @property
    def start_step(self) -> int:
        return self.state["step"] if self.state else 0


def train_and_evaluate(config: TrainConfig, datasets: data.Datasets | None = None,
                       out: TextIO = sys.stdout) -> tuple[keras.Model, dict]:
    """Trains per `config`, resuming from the backup in `config.model_dir` if there is one;
    writes model.keras, saved_model/, metrics.json and the evaluation report there.

    datasets: the data to use instead of `config.dataset` (tests inject their own).
    Returns the trained model and the metrics written to metrics.json.
    """
    clock = Clock()
    with contextlib.ExitStack() as held:
        with clock.phase("prepare"):
            run = _prepare(config, datasets, held)
        if run.state and run.state.get("finished"):
            return _already_finished(config, run.state, out)
        try:
            return _train(run, clock, out)
        finally:
            if run.chief:  # A run that failed before its first backup gives the old one back.
                rundir.recover(run.out_dir)


class Clock:
    """Seconds spent in each named phase of a run, in the order first entered."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str):
        began = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - began

    def describe(self) -> str:
        return "Time: " + ", ".join(f"{name.replace('_', ' ')} {s:.1f} s"
                                    for name, s in self.seconds.items())


def _train(run: _Run, clock: Clock, out: TextIO) -> tuple[keras.Model, dict]:
    """Trains the prepared run to its end and writes its outputs."""
    config = run.config
    with clock.phase("data"):
        seed(config.seed)
        run.datasets = run.datasets or data.load_for(config, run.dataset_name)
    if run.state:
        checkpoint.check_step(run.state, run.backup_dir,
                              config.last_step(run.datasets.steps_per_epoch))
    with clock.phase("build"), run.strategy.scope():
        # Keras 3 fails to run several steps per call over replicas: one step each there.
        run.model = build_for(config, run.datasets, steps_per_execution=(
            execution_steps(config, run.datasets.steps_per_epoch, run.start_step)
            if run.strategy.num_replicas_in_sync == 1 else 1))
        if run.state:
            checkpoint.restore(run.model, run.backup_dir, run.state)
    print(distribute.describe(run.strategy, config.batch_size), file=out)
    print(_describe(run), file=out, flush=True)
    if run.state:
        print(f"Resuming from the backup at step {run.start_step} in {run.backup_dir}", file=out)
    with clock.phase("training"):
        timer, evaluator, tensorboard = _fit(run, out)
    with clock.phase("final_evaluation"):
        final = evaluator.evaluate()  # Runs only when the last step was not evaluated yet.
    if tensorboard:
        tensorboard.finish()
    metrics = _metrics(run, timer, evaluator, final)
    _write_outputs(run, metrics, evaluator.last_pass, clock)
    if "saved_model" in metrics:
        print(f"SavedModel: {saved_model.describe_export(metrics['saved_model'])}", file=out)
    for info in metrics.get("tflite", []):
        print(tflite.describe_line(info), file=out)
    if not run.chief:
        shutil.rmtree(run.out_dir, ignore_errors=True)  # Only the chief's files are the run's.
        return run.model, metrics
    # Only now is the run done: a kill before this line resumes and writes it all again.
    files.write_or_fail(checkpoint.mark_finished, run.backup_dir, _state(run, timer, evaluator))
    print(clock.describe(), file=out)
    print(f"Saved to {run.out_dir}: {', '.join(rundir.written(run.out_dir))}", file=out)
    return run.model, metrics


def _prepare(config: TrainConfig, datasets: data.Datasets | None,
             held: contextlib.ExitStack) -> _Run:
    """Picks the strategy and the dataset, locks and cleans the directories, reads the backup
    and refuses to mix another run's settings or dataset into it. Nothing is written before
    the data is known to be there (or preparable). The chief's lock on model_dir is `held`
    until the run ends."""
    if config.export_tflite:
        tflite.check_backend()
    # Multi-worker strategies must exist before any other TensorFlow work.
    strategy = distribute.make_strategy(config.distribution_strategy)
    name = datasets.name if datasets else data.resolve_dataset(
        config.dataset, config.data_dir, mnist_dir=config.mnist_dir)
    out_dir = distribute.write_dir(config.model_dir, strategy)
    rundir.check_kinds(config.model_dir)
    files.ensure_writable_dir(config.model_dir)
    chief = distribute.is_chief(strategy)
    if chief:
        held.enter_context(files.exclusive(config.model_dir))
        rundir.recover(config.model_dir)
    files.ensure_writable_dir(out_dir)
    files.remove_stale_tmp(out_dir, rundir.OUTPUTS.__contains__)
    backup_dir = os.path.join(config.model_dir, checkpoint.BACKUP_DIR)
    if chief:
        files.remove_stale_tmp(backup_dir, checkpoint.is_backup_file)
    state = None if config.overwrite else checkpoint.load_state(backup_dir)
    if state and state["flags"].get("dry_run") and not config.dry_run:
        state = None  # A dry run is a smoke test, not a run to resume: this one replaces it.
    if state:
        checkpoint.check_compatible(state, run_defining(config), name)
    # Starting over keeps the earlier run whole until this one's first backup (see rundir).
    return _Run(config, strategy, out_dir, backup_dir, state, name, datasets,
                handed_over=bool(state) or not chief)


def _describe(run: _Run) -> str:
    config, datasets = run.config, run.datasets
    text = (f"Training the {config.rnn} LSTM ({config.units} units, "
            f"{run.model.count_params():,} parameters) on {datasets.name} "
            f"({datasets.train_size:,} train / {datasets.test_size:,} test images), "
            f"{datasets.timesteps} timesteps of {datasets.features} features")
    if config.batch_size > datasets.train_size:
        text += (f"\nThe batch size {config.batch_size:,} is larger than the training set: "
                 f"each epoch is one batch of {datasets.train_size:,}")
    return text


def execution_steps(config: TrainConfig, steps_per_epoch: int, start_step: int) -> int:
    """The largest divisor of config.steps_per_execution that every step where something
    must happen (evaluation, backup, max_steps, epoch end, the resumed start) is a multiple
    of, since Keras runs callbacks only between executions."""
    events = [steps_per_epoch, start_step % steps_per_epoch, config.eval_every_steps,
              config.backup_every_steps, config.max_steps]
    return math.gcd(config.steps_per_execution, *[e for e in events if e])


def _fit(run: _Run, out: TextIO) -> tuple[StepTimer, Evaluator, TensorBoardLog | None]:
    """Trains from the run's start step to its end; returns its timer, its evaluator and its
    TensorBoard log (None when off)."""
    config, datasets, state = run.config, run.datasets, run.state or {}
    timer = StepTimer(run.start_step, elapsed_before=state.get("wall_time_s", 0.0),
                      first_step_s=state.get("time_to_first_step_s"))
    in_memory = predictor.from_keras_model(run.model, os.path.join(run.out_dir, MODEL_FILE))
    evaluator = Evaluator(
        test_pass=lambda: report.test_pass(in_memory, datasets.test, steps=True),
        steps_per_epoch=datasets.steps_per_epoch, clock=timer.elapsed,
        every_steps=config.eval_every_steps, target_accuracy=config.target_accuracy, out=out,
        start_step=run.start_step,
        history=[Evaluation(**e) for e in state.get("evaluations", [])],
        eval_time_s=state.get("eval_time_s", 0.0))
    tensorboard = TensorBoardLog(
        os.path.join(run.out_dir, LOGS_DIR), lambda: evaluator.history,
        lambda: _steady_samples_per_s(timer, datasets),
        functools.partial(learning_rate_at, schedule_for(config, datasets.steps_per_epoch)),
        run.start_step, graph=compat.HAS_TF_GRAPHS and distribute.is_default(run.strategy),
    ) if config.tensorboard and run.chief else None
    backup = Backup(config.backup_every_steps or config.eval_every_steps,
                    lambda model: _back_up(run, model, _state(run, timer, evaluator),
                                           tensorboard), run.start_step)
    if evaluator.reached_target() or run.start_step >= config.last_step(datasets.steps_per_epoch):
        return timer, evaluator, tensorboard
    stopper = StopOnSignal(run.start_step)
    try:
        callbacks = [timer, Guard(max_steps=config.max_steps, start_step=run.start_step),
                     evaluator, tensorboard, backup, stopper]
        if config.verbose:
            callbacks.insert(0, compat.progress_bar())
        with stopper.caught():
            _fit_epochs(run, [c for c in callbacks if c])
    except NumericalError as e:
        if config.verbose == 1:
            print(file=out)  # Ends the progress bar's line.
        last = checkpoint.load_state(run.backup_dir) if run.handed_over else None
        kept = (f"the last good backup (step {last['step']}) is kept in {run.backup_dir}"
                if last else "no backup was written yet")
        raise NumericalError(f"{e.marked}: training stopped and nothing was saved; {kept}; "
                             f"lower {setting('learning_rate')}") from None
    if stopper.signal_number is not None:  # Even after the last step: the outputs are next.
        backup.save()  # Nothing to redo on resume: the backup is at the step stopped at.
        if tensorboard:
            tensorboard.finish()
        raise Interrupted(f"stopped at step {evaluator.step} on "
                          f"{signal.Signals(stopper.signal_number).name}; run the same "
                          "command to resume", stopper.signal_number)
    return timer, evaluator, tensorboard


def _back_up(run: _Run, model: keras.Model, state: dict,
             tensorboard: TensorBoardLog | None) -> None:
    """Writes the TensorBoard curves noted so far, then the backup. The first backup of a run
    started afresh first moves the directory's earlier run out of the way, and deletes it
    once the backup is complete."""
    if not run.handed_over:
        files.write_or_fail(rundir.hand_over, run.out_dir)
    if tensorboard:
        files.write_or_fail(tensorboard.write)
    files.write_or_fail(checkpoint.save, model, os.path.join(run.out_dir, checkpoint.BACKUP_DIR),
                        state)
    if not run.handed_over:
        rundir.finish_hand_over(run.out_dir)
        run.handed_over = True


def _fit_epochs(run: _Run, callbacks: list) -> None:
    """model.fit from the run's start step on. Every epoch has `steps_per_epoch` steps, so the
    step alone says where a resumed run is in the data; a part-done epoch is finished first."""
    config, datasets = run.config, run.datasets
    steps = datasets.steps_per_epoch
    epoch, done_in_epoch = divmod(run.start_step, steps)
    fit = dict(callbacks=callbacks, verbose=config.verbose,
               shuffle=False)  # The pipeline shuffles, seeded per epoch.
    if done_in_epoch:
        run.model.fit(datasets.train_epochs(epoch, epoch + 1, done_in_epoch),
                      initial_epoch=epoch, epochs=epoch + 1,
                      steps_per_epoch=steps - done_in_epoch, **fit)
        epoch += 1
    if epoch < config.epochs and not run.model.stop_training:
        run.model.fit(datasets.train_epochs(epoch, config.epochs), initial_epoch=epoch,
                      epochs=config.epochs, steps_per_epoch=steps, **fit)


def _state(run: _Run, timer: StepTimer, evaluator: Evaluator) -> dict:
    """What a backup records besides the weights."""
    return {
        "step": evaluator.step,
        "evaluations": [dataclasses.asdict(e) for e in evaluator.history],
        "eval_time_s": evaluator.eval_time_s,
        "wall_time_s": timer.elapsed(),
        "time_to_first_step_s": timer.first_step_s,
        "flags": run_defining(run.config),
        "dataset": run.dataset_name,
        "runtime": compat.RUNTIME,
    }


def samples_seen(steps: int, batch_size: int, train_size: int,
                 steps_per_epoch: int | None = None) -> int:
    """Training samples in `steps` batches, counting each epoch's smaller last batch(es).
    Exact for whole epochs; a part-done epoch counts full batches."""
    steps_per_epoch = steps_per_epoch or math.ceil(train_size / batch_size)
    full_epochs, rest = divmod(steps, steps_per_epoch)
    return full_epochs * train_size + min(rest * batch_size, train_size)


def _largest_batch(config: TrainConfig, datasets: data.Datasets) -> int:
    return min(config.batch_size, datasets.train_size)


def _steady_samples_per_s(timer: StepTimer, datasets: data.Datasets) -> float | None:
    """Training examples per second after the warm-up (None before it ends): steps per
    second times the examples per step over an epoch, whose last batches may be smaller."""
    steady = timer.steady_steps_per_s()
    return steady * datasets.train_size / datasets.steps_per_epoch if steady else None


def _metrics(run: _Run, timer: StepTimer, evaluator: Evaluator,
             final: Evaluation) -> dict:
    """metrics.json: the settings, the data, every evaluation and the timings."""
    config, datasets = run.config, run.datasets
    wall_time_s = timer.elapsed()
    train_time_s = wall_time_s - evaluator.eval_time_s
    samples = samples_seen(evaluator.step, config.batch_size, datasets.train_size,
                           datasets.steps_per_epoch)
    return {
        "flags": dataclasses.asdict(config),
        "batch_size": _largest_batch(config, datasets),
        "dataset": {"name": datasets.name, "train_size": datasets.train_size,
                    "test_size": datasets.test_size, "timesteps": datasets.timesteps,
                    "features": datasets.features},
        "parameters": run.model.count_params(),
        "evaluations": [dataclasses.asdict(e) for e in evaluator.history],
        "steps": evaluator.step,
        "epochs_started": math.ceil(evaluator.step / datasets.steps_per_epoch),
        "final_test_accuracy": final.accuracy,
        "final_test_loss": final.loss,
        "reached_target": evaluator.reached_target(),
        "resumed_from_step": run.start_step,
        "wall_time_s": wall_time_s,
        "train_time_s": train_time_s,
        "time_to_first_step_s": timer.first_step_s,
        "train_samples": samples,
        "train_samples_per_s": samples / train_time_s if train_time_s > 0 else None,
        # After the warm-up: the speed a long run settles at.
        "steady_train_samples_per_s": _steady_samples_per_s(timer, datasets),
        "backend": compat.BACKEND,
        "versions": compat.versions(),
    }


def _write_outputs(run: _Run, metrics: dict, final_pass: report.TestPass, clock: Clock) -> None:
    """model.keras, saved_model/, the .tflite files, the evaluation report and metrics.json
    (with what each export is and the time of each phase), each crash-safe."""
    config = run.config
    model_path = os.path.join(run.out_dir, MODEL_FILE)
    with clock.phase("save"):
        files.write_or_fail(files.save_model, run.model, model_path)
    with clock.phase("export"):
        check_digits = (report.test_images(run.datasets.test,
                                           range(min(200, run.datasets.test_size)))
                        if config.export_tflite else None)
        if config.export:
            metrics["saved_model"] = saved_model.write(
                run.model, os.path.join(run.out_dir, SAVED_MODEL_DIR), config.saved_model_xla)
        if config.export_tflite:
            metrics["tflite"] = tflite.export(run.model, run.out_dir, check_digits)
    with clock.phase("report"):
        evaluation, error_images = report.build_report(
            final_pass, model_path, run.datasets.name, run.datasets.test)
        files.write_or_fail(report.write_report, evaluation, error_images, run.out_dir,
                            "model_dir")
    metrics["phase_s"] = dict(clock.seconds)  # This session's; metrics.json itself is last.
    files.write_or_fail(files.write_json, os.path.join(run.out_dir, METRICS_FILE), metrics)


def _already_finished(config: TrainConfig, state: dict,
                      out: TextIO) -> tuple[keras.Model, dict]:
    try:
        metrics = load_metrics(config.model_dir)
        if metrics.get("steps") != state["step"]:
            raise ValueError(f"its backup's step {state['step']} is not metrics.json's "
                             f"{metrics.get('steps')}")
        model = keras.models.load_model(os.path.join(config.model_dir, MODEL_FILE))
    except (OSError, ValueError) as e:
        raise UserError(
            f"{config.model_dir} holds a finished run whose files are damaged ({e}); "
            f"rerun with {setting('overwrite', True)} to train again"
        ) from None
    print(
        f"{config.model_dir} already holds this run, finished at step {state['step']} with "
        f"test accuracy {metrics['final_test_accuracy']:.4f}: nothing to do (overwrite it to "
        "train again)",
        file=out,
    )
    return model, metrics


def load_metrics(model_dir: str) -> dict:
    """The metrics.json of a finished run in `model_dir`."""
    with open(os.path.join(model_dir, METRICS_FILE)) as f:
        return json.load(f)
