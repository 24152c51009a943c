"""Train one LSTM classifier: `train_and_evaluate(config, exports=...)` prepares the run, fits,
saves model.keras, writes the exports it is given, the evaluation report and metrics.json.

Plain arguments only: `python -m mnist_rnn.train` maps its flags onto a `TrainConfig`; tests
and notebooks build one directly, and may pass their own `datasets`. The exports are serving's
(the SavedModel, the .tflite files), composed by `mnist_rnn.train.train_and_evaluate`: training
itself needs nothing of serving.
"""

import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import time
from typing import Protocol, Sequence, TextIO

import tensorflow as tf

from mnist_rnn import compat, files
from mnist_rnn.compat import keras
from mnist_rnn.config import TrainConfig, run_defining
from mnist_rnn.data import pipeline, sources
from mnist_rnn.errors import Interrupted, NumericalError, UserError, setting
from mnist_rnn.evaluation import report
from mnist_rnn.model.lstm import build_for, schedule_for, seed
from mnist_rnn.model.predictor import KerasPredictor
from mnist_rnn.outputs import BACKUP_DIR, LOGS_DIR, METRICS_FILE, MODEL_FILE, OUTPUTS
from mnist_rnn.training import checkpoint, distribute, rundir
from mnist_rnn.training.callbacks import (Backup, Evaluation, Evaluator, Guard, StepTimer,
                                          StopOnSignal)
from mnist_rnn.training.tensorboard import TensorBoardLog


class Export(Protocol):
    """A format a finished run is also written in, as its last stage."""

    name: str  # Its entry in metrics.json.

    def check(self) -> None:
        """Refuses, before anything is written, an export that cannot be made here."""

    def write(self, model: keras.Model, out_dir: str, datasets: pipeline.Datasets):
        """Writes it into `out_dir`, crash-safe, checked on `datasets`' test digits where it
        checks; returns what it is, for metrics.json."""

    def describe(self, info) -> list[str]:
        """Lines saying what was written."""


def train_and_evaluate(config: TrainConfig, datasets: pipeline.Datasets | None = None,
                       out: TextIO = sys.stdout, exports: Sequence[Export] = ()
                       ) -> tuple[keras.Model, dict]:
    """Trains per `config`, resuming from the backup in `config.model_dir` if there is one;
    writes model.keras, each of `exports`, metrics.json and the evaluation report there.

    datasets: the data to use instead of `config.dataset` (tests inject their own).
    Returns the trained model and the metrics written to metrics.json.
    """
    clock = Clock()
    with contextlib.ExitStack() as held:
        with clock.phase("prepare"):
            run = Run.prepare(config, datasets, exports, held, out)
        if run.state and run.state.get("finished"):
            return _already_finished(config, run.state, out)
        try:
            return run.train(clock)
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


class Run:
    """One training run, once prepared: its settings, where it writes, the backup it resumes
    from, its data, its model and the callbacks that act on them. `train` reads top to
    bottom: data, model, fit, final evaluation, outputs."""

    def __init__(self, config: TrainConfig, strategy: tf.distribute.Strategy, out_dir: str,
                 state: dict | None, dataset_name: str, datasets: pipeline.Datasets | None,
                 exports: Sequence[Export], out: TextIO):
        self.config = config
        self.strategy = strategy
        self.out_dir = out_dir  # model_dir for the chief; a private directory for the others.
        self.backup_dir = os.path.join(config.model_dir, BACKUP_DIR)  # The chief's: the run's.
        self.state = state  # The backup's, when resuming.
        self.dataset_name = dataset_name
        self.datasets = datasets
        self.exports = exports
        self.out = out
        self.chief = distribute.is_chief(strategy)
        self.start_step = state["step"] if state else 0
        self.model = None

    @classmethod
    def prepare(cls, config: TrainConfig, datasets: pipeline.Datasets | None,
                exports: Sequence[Export], held: contextlib.ExitStack, out: TextIO) -> "Run":
        """Picks the strategy and the dataset, locks and cleans the directories, reads the
        backup and refuses to mix another run's settings or dataset into it. Nothing is
        written before the data is known to be there (or preparable). The chief's lock on
        model_dir is `held` until the run ends."""
        for export in exports:
            export.check()
        # Multi-worker strategies must exist before any other TensorFlow work.
        strategy = distribute.make_strategy(config.distribution_strategy)
        name = datasets.name if datasets else sources.resolve_dataset(
            config.dataset, config.data_dir, mnist_dir=config.mnist_dir)
        out_dir = distribute.write_dir(config.model_dir, strategy)
        rundir.check_kinds(config.model_dir)
        files.ensure_writable_dir(config.model_dir)
        if distribute.is_chief(strategy):
            held.enter_context(files.exclusive(config.model_dir))
            rundir.recover(config.model_dir)
            files.remove_stale_tmp(os.path.join(config.model_dir, BACKUP_DIR),
                                   checkpoint.is_backup_file)
        files.ensure_writable_dir(out_dir)
        files.remove_stale_tmp(out_dir, OUTPUTS.__contains__)
        state = None if config.overwrite else checkpoint.load_state(
            os.path.join(config.model_dir, BACKUP_DIR))
        if state and state["flags"].get("dry_run") and not config.dry_run:
            state = None  # A dry run is a smoke test, not a run to resume: this one replaces it.
        if state:
            checkpoint.check_compatible(state, run_defining(config), name)
        return cls(config, strategy, out_dir, state, name, datasets, exports, out)

    def train(self, clock: Clock) -> tuple[keras.Model, dict]:
        """Trains the prepared run to its end and writes its outputs."""
        with clock.phase("data"):
            seed(self.config.seed)
            self.datasets = self.datasets or pipeline.load_for(self.config, self.dataset_name)
        if self.state:
            checkpoint.check_step(self.state, self.backup_dir,
                                  self.config.last_step(self.datasets.steps_per_epoch))
        with clock.phase("build"), self.strategy.scope():
            self._build()
        self._say_what_runs()
        self._make_callbacks()
        with clock.phase("training"):
            self._fit()
        with clock.phase("final_evaluation"):
            final = self.evaluator.evaluate()  # Runs only when the last step was not evaluated.
        if self.tensorboard:
            self.tensorboard.finish()
        metrics = self._metrics(final)
        self._write_outputs(metrics, clock)
        for export in self.exports:
            for line in export.describe(metrics[export.name]):
                print(line, file=self.out)
        if not self.chief:
            shutil.rmtree(self.out_dir, ignore_errors=True)  # Only the chief's are the run's.
            return self.model, metrics
        # Only now is the run done: a kill before this line resumes and writes it all again.
        files.write_or_fail(checkpoint.mark_finished, self.backup_dir, self.backup.state())
        print(clock.describe(), file=self.out)
        print(f"Saved to {self.out_dir}: {', '.join(rundir.written(self.out_dir))}",
              file=self.out)
        return self.model, metrics

    def _build(self) -> None:
        """The compiled model, with the backup's variables when resuming. Keras 3 fails to run
        several steps per call over replicas: one step each there."""
        steps_per_epoch = self.datasets.steps_per_epoch
        self.model = build_for(self.config, self.datasets, steps_per_execution=(
            execution_steps(self.config, steps_per_epoch, self.start_step)
            if self.strategy.num_replicas_in_sync == 1 else 1))
        if self.state:
            checkpoint.restore(self.model, self.backup_dir, self.state)

    def _say_what_runs(self) -> None:
        config, datasets = self.config, self.datasets
        print(distribute.describe(self.strategy, config.batch_size), file=self.out)
        text = (f"Training the {config.rnn} LSTM ({config.units} units, "
                f"{self.model.count_params():,} parameters) on {datasets.name} "
                f"({datasets.train_size:,} train / {datasets.test_size:,} test images), "
                f"{datasets.timesteps} timesteps of {datasets.features} features")
        if config.batch_size > datasets.train_size:
            text += (f"\nThe batch size {config.batch_size:,} is larger than the training "
                     f"set: each epoch is one batch of {datasets.train_size:,}")
        print(text, file=self.out, flush=True)
        if self.state:
            print(f"Resuming from the backup at step {self.start_step} in {self.backup_dir}",
                  file=self.out)

    def _make_callbacks(self) -> None:
        """The run's timer, evaluator, TensorBoard log (None when off), backup and stopper,
        each starting from the backup's numbers when resuming."""
        config, datasets, state = self.config, self.datasets, self.state or {}
        start = self.start_step
        self.timer = StepTimer(start, elapsed_before=state.get("wall_time_s", 0.0),
                               first_step_s=state.get("time_to_first_step_s"),
                               samples_per_step=datasets.samples_per_step)
        self.evaluator = Evaluator(
            KerasPredictor(self.model, os.path.join(self.out_dir, MODEL_FILE)), datasets.test,
            steps_per_epoch=datasets.steps_per_epoch, clock=self.timer.elapsed,
            every_steps=config.eval_every_steps, target_accuracy=config.target_accuracy,
            out=self.out, start_step=start,
            history=[Evaluation(**e) for e in state.get("evaluations", [])],
            eval_time_s=state.get("eval_time_s", 0.0))
        self.tensorboard = TensorBoardLog(
            os.path.join(self.out_dir, LOGS_DIR), self.evaluator, self.timer,
            schedule_for(config, datasets.steps_per_epoch), start,
            graph=compat.HAS_TF_GRAPHS and distribute.is_default(self.strategy),
        ) if config.tensorboard and self.chief else None
        # Starting over keeps the earlier run whole until this one's first backup (rundir).
        self.backup = Backup(
            config.backup_every_steps or config.eval_every_steps, self.out_dir,
            {"flags": run_defining(config), "dataset": self.dataset_name,
             "runtime": compat.RUNTIME},
            self.timer, self.evaluator, self.tensorboard,
            handed_over=bool(self.state) or not self.chief, start_step=start)
        self.stopper = StopOnSignal(start)

    def _fit(self) -> None:
        """Trains from the start step to the run's end (unless it is there already); on a
        signal, backs up and raises Interrupted."""
        config = self.config
        if (self.evaluator.reached_target()
                or self.start_step >= config.last_step(self.datasets.steps_per_epoch)):
            return
        callbacks = [compat.progress_bar() if config.verbose else None, self.timer,
                     Guard(max_steps=config.max_steps, start_step=self.start_step),
                     self.evaluator, self.tensorboard, self.backup, self.stopper]
        try:
            with self.stopper.caught():
                self._fit_epochs([c for c in callbacks if c])
        except NumericalError as e:
            raise self._stopped_by(e) from None
        if self.stopper.signal_number is not None:  # Even after the last step.
            self.backup.save()  # Nothing to redo on resume: the backup is at the step stopped.
            if self.tensorboard:
                self.tensorboard.finish()
            raise Interrupted(f"stopped at step {self.evaluator.step} on "
                              f"{signal.Signals(self.stopper.signal_number).name}; run the "
                              "same command to resume", self.stopper.signal_number)

    def _fit_epochs(self, callbacks: list) -> None:
        """model.fit from the start step on. Every epoch has `steps_per_epoch` steps, so the
        step alone says where a resumed run is in the data; a part-done epoch is finished
        first."""
        datasets, model = self.datasets, self.model
        steps = datasets.steps_per_epoch
        epoch, done_in_epoch = divmod(self.start_step, steps)
        fit = dict(callbacks=callbacks, verbose=self.config.verbose,
                   shuffle=False)  # The pipeline shuffles, seeded per epoch.
        if done_in_epoch:
            model.fit(datasets.train_epochs(epoch, epoch + 1, done_in_epoch),
                      initial_epoch=epoch, epochs=epoch + 1,
                      steps_per_epoch=steps - done_in_epoch, **fit)
            epoch += 1
        if epoch < self.config.epochs and not model.stop_training:
            model.fit(datasets.train_epochs(epoch, self.config.epochs), initial_epoch=epoch,
                      epochs=self.config.epochs, steps_per_epoch=steps, **fit)

    def _stopped_by(self, error: NumericalError) -> NumericalError:
        """The error that ends a run whose numbers stopped being finite, saying what is kept."""
        if self.config.verbose == 1:
            print(file=self.out)  # Ends the progress bar's line.
        last = checkpoint.load_state(self.backup_dir) if self.backup.handed_over else None
        kept = (f"the last good backup (step {last['step']}) is kept in {self.backup_dir}"
                if last else "no backup was written yet")
        return NumericalError(f"{error.marked}: training stopped and nothing was saved; {kept}; "
                              f"lower {setting('learning_rate')}")

    def _metrics(self, final: Evaluation) -> dict:
        """metrics.json: the settings, the data, every evaluation and the timings."""
        config, datasets, evaluator = self.config, self.datasets, self.evaluator
        wall_time_s = self.timer.elapsed()
        train_time_s = wall_time_s - evaluator.eval_time_s
        samples = samples_seen(evaluator.step, config.batch_size, datasets.train_size,
                               datasets.steps_per_epoch)
        return {
            "flags": dataclasses.asdict(config),
            "batch_size": min(config.batch_size, datasets.train_size),  # The largest batch.
            "dataset": {"name": datasets.name, "train_size": datasets.train_size,
                        "test_size": datasets.test_size, "timesteps": datasets.timesteps,
                        "features": datasets.features},
            "parameters": self.model.count_params(),
            "evaluations": [dataclasses.asdict(e) for e in evaluator.history],
            "steps": evaluator.step,
            "epochs_started": math.ceil(evaluator.step / datasets.steps_per_epoch),
            "final_test_accuracy": final.accuracy,
            "final_test_loss": final.loss,
            "reached_target": evaluator.reached_target(),
            "resumed_from_step": self.start_step,
            "wall_time_s": wall_time_s,
            "train_time_s": train_time_s,
            "time_to_first_step_s": self.timer.first_step_s,
            "train_samples": samples,
            "train_samples_per_s": samples / train_time_s if train_time_s > 0 else None,
            # After the warm-up: the speed a long run settles at.
            "steady_train_samples_per_s": self.timer.steady_samples_per_s(),
            "backend": compat.BACKEND,
            "versions": compat.versions(),
        }

    def _write_outputs(self, metrics: dict, clock: Clock) -> None:
        """model.keras, the exports, the evaluation report and metrics.json (with what each
        export is and the time of each phase), each crash-safe."""
        model_path = os.path.join(self.out_dir, MODEL_FILE)
        with clock.phase("save"):
            files.write_or_fail(files.save_model, self.model, model_path)
        with clock.phase("export"):
            for export in self.exports:
                metrics[export.name] = export.write(self.model, self.out_dir, self.datasets)
        with clock.phase("report"):
            evaluation, error_images = report.build_report(
                self.evaluator.last_pass, model_path, self.datasets.name, self.datasets.test)
            files.write_or_fail(report.write_report, evaluation, error_images, self.out_dir,
                                "model_dir")
        metrics["phase_s"] = dict(clock.seconds)  # This session's; metrics.json itself is last.
        files.write_or_fail(files.write_json, os.path.join(self.out_dir, METRICS_FILE), metrics)


def execution_steps(config: TrainConfig, steps_per_epoch: int, start_step: int) -> int:
    """The largest divisor of config.steps_per_execution that every step where something
    must happen (evaluation, backup, max_steps, epoch end, the resumed start) is a multiple
    of, since Keras runs callbacks only between executions."""
    events = [steps_per_epoch, start_step % steps_per_epoch, config.eval_every_steps,
              config.backup_every_steps, config.max_steps]
    return math.gcd(config.steps_per_execution, *[e for e in events if e])


def samples_seen(steps: int, batch_size: int, train_size: int,
                 steps_per_epoch: int | None = None) -> int:
    """Training samples in `steps` batches, counting each epoch's smaller last batch(es).
    Exact for whole epochs; a part-done epoch counts full batches."""
    steps_per_epoch = steps_per_epoch or math.ceil(train_size / batch_size)
    full_epochs, rest = divmod(steps, steps_per_epoch)
    return full_epochs * train_size + min(rest * batch_size, train_size)


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
