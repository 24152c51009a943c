"""Train, evaluate, save and export one LSTM classifier. Plain arguments only: the CLI in
`train.py` maps flags onto `TrainConfig`, tests build a `TrainConfig` directly."""

import dataclasses
import json
import math
import os
import shutil
import sys
import time

from mnist_rnn.compat import keras
import numpy as np
import tensorflow as tf

from mnist_rnn import (backup, data, distribute, evaluation, export, files, inference,
                       model as model_lib)
from mnist_rnn.errors import NumericalError, OutputError, UserError

WARMUP_STEPS = 5  # Steps left out of the steady-state speed: tracing, caches, allocation.
MODEL_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
METRICS_FILE = "metrics.json"


@dataclasses.dataclass
class TrainConfig:
    rnn: str = "dynamic"
    units: int = 128
    timesteps: int = 28
    batch_size: int = 100
    learning_rate: float = 0.003
    epochs: int = 10
    max_steps: int = 0  # 0: no limit besides `epochs`.
    eval_every_steps: int = 0  # 0: once per epoch.
    target_accuracy: float = 0.0  # 0: off.
    dataset: str = "auto"
    data_dir: str | None = None
    model_dir: str = "runs/dynamic"
    seed: int = 0
    export: bool = True
    jit_compile: bool = False
    # Steps per call into TensorFlow; lowered to fit every evaluation, backup and stop exactly.
    steps_per_execution: int = 40
    distribution_strategy: str = "auto"  # See distribute.STRATEGIES.
    variable_length: bool = False  # Dynamic only: each image's own length, bucketed batches.
    backup_every_steps: int = 0  # 0: at each evaluation; always at each epoch end.
    overwrite: bool = False  # Start over instead of resuming.
    verbose: int = 1  # Keras fit verbosity: 1 progress bar, 2 a line per epoch, 0 silent.


@dataclasses.dataclass
class Evaluation:
    step: int
    epoch: int
    accuracy: float
    loss: float
    time_s: float


class Evaluator(keras.callbacks.Callback):
    """Counts steps, stops at a non-finite loss, evaluates on the test set every `every_steps`
    steps (0: each epoch end) with one printed line, stops at `max_steps` and once accuracy
    reaches `target_accuracy`. Its counters start from a resumed run's `state`."""

    def __init__(self, test, steps_per_epoch, every_steps=0, target_accuracy=0.0, max_steps=0,
                 out=sys.stdout, state=None):
        super().__init__()
        state = state or {}
        self.test = test
        self.steps_per_epoch = steps_per_epoch
        self.every_steps = every_steps
        self.target_accuracy = target_accuracy
        self.max_steps = max_steps
        self.out = out
        self.history = [Evaluation(**e) for e in state.get("evaluations", [])]
        self.step = state.get("step", 0)
        self.eval_time_s = state.get("eval_time_s", 0.0)
        self.first_step_s = state.get("time_to_first_step_s")
        self._warm = None  # (step, time, eval time) after WARMUP_STEPS steps of this session.
        self.stopped = False
        self._elapsed_before = state.get("wall_time_s", 0.0)
        self._session_start = self.step
        self._start = time.perf_counter()
        self._eval_step = None

    def elapsed(self):
        """Wall time of the run so far, over all its sessions."""
        return self._elapsed_before + time.perf_counter() - self._start

    def steady_steps_per_s(self):
        """Training steps per second after the warm-up steps (no tracing, no evaluation)."""
        if self._warm is None or self._last[0] <= self._warm[0]:
            return None
        (first, began, eval_before), (last, ended, eval_after) = self._warm, self._last
        return (last - first) / (ended - began - (eval_after - eval_before))

    def state(self):
        return {
            "step": self.step,
            "evaluations": [dataclasses.asdict(e) for e in self.history],
            "eval_time_s": self.eval_time_s,
            "wall_time_s": self.elapsed(),
            "time_to_first_step_s": self.first_step_s,
        }

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_base = self.step

    def on_train_batch_end(self, batch, logs=None):
        # `batch` is the epoch's last step run so far: steps_per_execution may run several.
        self.step = self._epoch_base + batch + 1
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            raise NumericalError(f"the training loss is {loss} at step {self.step}")
        if self.first_step_s is None:
            self.first_step_s = self.elapsed()
        self._last = (self.step, time.perf_counter(), self.eval_time_s)
        if self._warm is None and self.step >= self._session_start + WARMUP_STEPS:
            self._warm = self._last
        if self.every_steps and self.step % self.every_steps == 0:
            self.evaluate()
        if self.max_steps and self.step >= self.max_steps:
            self.stop()

    def on_epoch_end(self, epoch, logs=None):
        if not self.every_steps:
            self.evaluate()

    def stop(self):
        self.stopped = True
        self.model.stop_training = True

    def reached_target(self):
        return bool(self.target_accuracy and self.history
                    and self.history[-1].accuracy >= self.target_accuracy)

    def evaluate(self):
        """Test accuracy and mean loss over the whole test set; logs and records them."""
        if self.history and self.history[-1].step == self.step:
            return self.history[-1]
        began = time.perf_counter()
        if self._eval_step is None:
            self._eval_step = tf.function(self._batch_sums, reduce_retracing=True)
        totals = np.zeros(3)
        for x, y in self.test:
            totals += [float(v) for v in self._eval_step(x, y)]
        loss_sum, correct, count = totals
        self.eval_time_s += time.perf_counter() - began
        epoch = max(1, -(-self.step // self.steps_per_epoch))  # 1-based, of the last step.
        result = Evaluation(self.step, epoch, float(correct / count), float(loss_sum / count),
                            self.elapsed())
        self.history.append(result)
        # Start on a fresh line when the progress bar is mid-line.
        newline = "\n" if self.params and self.params.get("verbose") == 1 else ""
        print(
            f"{newline}time {result.time_s:8.1f}s  step {result.step:6d}  epoch {result.epoch:3d}  "
            f"test accuracy {result.accuracy:.4f}  test loss {result.loss:.4f}",
            file=self.out,
            flush=True,
        )
        if self.reached_target():
            print(f"reached target accuracy {self.target_accuracy}: stopping", file=self.out)
            self.stop()
        return result

    def _batch_sums(self, x, y):
        logits = self.model(x, training=False)
        losses = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        correct = tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), y)
        return (
            tf.reduce_sum(losses),
            tf.reduce_sum(tf.cast(correct, tf.float32)),
            tf.cast(tf.size(y), tf.float32),
        )


def samples_seen(steps, batch_size, train_size, steps_per_epoch=None):
    """Training samples in `steps` batches, counting each epoch's smaller last batch(es).
    Exact for whole epochs; a part-done epoch counts full batches."""
    steps_per_epoch = steps_per_epoch or -(-train_size // batch_size)
    full_epochs, rest = divmod(steps, steps_per_epoch)
    return full_epochs * train_size + min(rest * batch_size, train_size)


def _fit(model, datasets, config, callbacks, evaluator):
    """Trains from `evaluator.step` on. Every epoch has `steps_per_epoch` steps, so the step
    alone says where a resumed run is in the data; a part-done epoch is finished first."""
    steps = datasets.steps_per_epoch
    epoch, done_in_epoch = divmod(evaluator.step, steps)
    fit = dict(callbacks=callbacks, verbose=config.verbose,
               shuffle=False)  # The pipeline shuffles, seeded per epoch.
    if done_in_epoch:
        model.fit(datasets.train_epochs(epoch, epoch + 1, done_in_epoch), initial_epoch=epoch,
                  epochs=epoch + 1, steps_per_epoch=steps - done_in_epoch, **fit)
        epoch += 1
    if epoch < config.epochs and not evaluator.stopped:
        model.fit(datasets.train_epochs(epoch, config.epochs), initial_epoch=epoch,
                  epochs=config.epochs, steps_per_epoch=steps, **fit)


def execution_steps(config, steps_per_epoch, start_step):
    """The largest divisor of config.steps_per_execution that every step where something
    must happen (evaluation, backup, --max_steps, epoch end, the resumed start) is a multiple
    of, since Keras runs callbacks only between executions."""
    events = [steps_per_epoch, start_step % steps_per_epoch, config.eval_every_steps,
              config.backup_every_steps, config.max_steps]
    return math.gcd(config.steps_per_execution, *[e for e in events if e])


def _finished(evaluator, config, steps_per_epoch):
    return (evaluator.reached_target()
            or (config.max_steps and evaluator.step >= config.max_steps)
            or evaluator.step >= config.epochs * steps_per_epoch)


def train_and_evaluate(config, datasets=None, out=sys.stdout):
    """Trains per `config`, resuming from the backup in `config.model_dir` if there is one;
    writes model.keras, saved_model/, metrics.json and the evaluation report there; returns
    (model, metrics dict). `datasets` overrides the data."""
    # Multi-worker strategies must exist before any other TensorFlow work.
    strategy = distribute.make_strategy(config.distribution_strategy)
    chief = distribute.is_chief(strategy)
    out_dir = distribute.write_dir(config.model_dir, strategy)  # model_dir for the chief.
    files.ensure_writable_dir(config.model_dir)
    files.ensure_writable_dir(out_dir)
    files.remove_stale_tmp(out_dir)
    backup_dir = os.path.join(config.model_dir, backup.BACKUP_DIR)  # The chief's: the run's.
    if chief:  # Other workers only read it.
        files.remove_stale_tmp(backup_dir)
        if config.overwrite:
            shutil.rmtree(backup_dir, ignore_errors=True)
    state = backup.load_state(backup_dir)
    flags = backup.run_flags(dataclasses.asdict(config))
    if state and state.get("finished"):
        backup.check_compatible(state, flags, state["dataset"])
        return _already_finished(config, state, out)

    keras.utils.set_random_seed(config.seed)
    # Same seed, same machine, same numbers: worth the small cost on CPU.
    tf.config.experimental.enable_op_determinism()
    if datasets is None:
        name = data.resolve_dataset(config.dataset, config.data_dir)
        datasets = data.load_datasets(
            name, config.timesteps, config.batch_size, config.seed, config.data_dir,
            config.variable_length,
        )
    if state:
        backup.check_compatible(state, flags, datasets.name)
    with strategy.scope():
        model = model_lib.build_model(
            config.rnn, config.units, datasets.timesteps, datasets.features, seed=config.seed,
            variable_length=config.variable_length,
        )
        # Keras 3 fails to run several steps per call over replicas: one step each there.
        steps_per_call = (execution_steps(config, datasets.steps_per_epoch,
                                          state["step"] if state else 0)
                          if strategy.num_replicas_in_sync == 1 else 1)
        model_lib.compile_model(model, config.learning_rate, config.jit_compile, steps_per_call)
    print(distribute.describe(strategy, config.batch_size), file=out)
    print(
        f"Training the {config.rnn} LSTM ({config.units} units, {model.count_params():,} "
        f"parameters) on {datasets.name} ({datasets.train_size:,} train / "
        f"{datasets.test_size:,} test images), {datasets.timesteps} timesteps of "
        f"{datasets.features} features",
        file=out,
        flush=True,
    )
    if state:
        with strategy.scope():
            backup.restore(model, backup_dir, state)
        print(f"Resuming from the backup at step {state['step']} in {backup_dir}", file=out)

    evaluator = Evaluator(datasets.test, datasets.steps_per_epoch, config.eval_every_steps,
                          config.target_accuracy, config.max_steps, out, state)
    resumed_from = evaluator.step
    run_state = lambda: {**evaluator.state(), "flags": flags, "dataset": datasets.name}  # noqa: E731
    saver = backup.Backup(os.path.join(out_dir, backup.BACKUP_DIR),
                          config.backup_every_steps or config.eval_every_steps,
                          lambda: evaluator.step, run_state)
    try:
        if not _finished(evaluator, config, datasets.steps_per_epoch):
            _fit(model, datasets, config, [evaluator, saver], evaluator)
    except NumericalError as e:
        last = backup.load_state(backup_dir)
        kept = (f"the last good backup (step {last['step']}) is kept in {backup_dir}"
                if last else "no backup was written yet")
        raise NumericalError(
            f"{e}: training stopped and nothing was saved; {kept}; lower --learning_rate"
        ) from None
    steady = evaluator.steady_steps_per_s()
    final = evaluator.evaluate()  # No-op when the last step was just evaluated.
    wall_time_s = evaluator.elapsed()
    train_time_s = wall_time_s - evaluator.eval_time_s
    samples = samples_seen(evaluator.step, config.batch_size, datasets.train_size,
                           datasets.steps_per_epoch)

    metrics = {
        "flags": dataclasses.asdict(config),
        "dataset": {
            "name": datasets.name,
            "train_size": datasets.train_size,
            "test_size": datasets.test_size,
            "timesteps": datasets.timesteps,
            "features": datasets.features,
        },
        "parameters": model.count_params(),
        "evaluations": [dataclasses.asdict(e) for e in evaluator.history],
        "steps": evaluator.step,
        "epochs_started": -(-evaluator.step // datasets.steps_per_epoch),
        "final_test_accuracy": final.accuracy,
        "final_test_loss": final.loss,
        "reached_target": evaluator.reached_target(),
        "resumed_from_step": resumed_from,
        "wall_time_s": wall_time_s,
        "train_time_s": train_time_s,
        "time_to_first_step_s": evaluator.first_step_s,
        "train_samples": samples,
        "train_samples_per_s": samples / train_time_s if train_time_s > 0 else None,
        # Full batches after the warm-up: the speed a long run settles at.
        "steady_train_samples_per_s": steady * config.batch_size if steady else None,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    save(model, out_dir, config.export)
    _write(files.write_json, os.path.join(out_dir, METRICS_FILE), metrics)
    report, error_images = evaluation.evaluate(
        inference.from_keras_model(model, os.path.join(out_dir, MODEL_FILE)), datasets.test)
    report["dataset"] = datasets.name
    _write(evaluation.write_report, report, error_images, out_dir)
    if not chief:
        shutil.rmtree(out_dir, ignore_errors=True)  # Only the chief's files are the run's.
        return model, metrics
    # Only now is the run done: a kill before this line resumes and writes it all again.
    os.makedirs(backup_dir, exist_ok=True)
    _write(files.write_json, os.path.join(backup_dir, backup.STATE_FILE),
           {**run_state(), "finished": True, "weights": None})
    for name in os.listdir(backup_dir):
        if name.endswith(".weights.h5"):
            os.remove(os.path.join(backup_dir, name))  # model.keras holds the final weights.
    written = sorted(n for n in os.listdir(out_dir) if not n.endswith("_temp"))  # Not workers'.
    print(f"Saved to {out_dir}: {', '.join(written)}", file=out)
    return model, metrics


def _already_finished(config, state, out):
    try:
        metrics = load_metrics(config.model_dir)
        model = keras.models.load_model(os.path.join(config.model_dir, MODEL_FILE))
    except (OSError, ValueError) as e:
        raise UserError(
            f"{config.model_dir} holds a finished run whose files are damaged ({e}); "
            "rerun with --overwrite to train again"
        ) from None
    print(
        f"{config.model_dir} already holds this run, finished at step {state['step']} with "
        f"test accuracy {metrics['final_test_accuracy']:.4f}: nothing to do (--overwrite "
        "trains again)",
        file=out,
    )
    return model, metrics


def _write(write, *args):
    """Runs a file write; a full disk or a read-only directory becomes one clear error."""
    try:
        write(*args)
    except OSError as e:
        raise OutputError(
            f"cannot write to {getattr(e, 'filename', None) or args[-1]}: "
            f"{e.strerror or e}; the previous files are kept"
        ) from None


def save(model, model_dir, saved_model=True):
    """model.keras always; the SavedModel for serving when `saved_model`."""
    _write(files.save_model, model, os.path.join(model_dir, MODEL_FILE))
    if saved_model:
        _write(
            files.replace_dir,
            lambda path: export.export_saved_model(model, path),
            os.path.join(model_dir, SAVED_MODEL_DIR),
        )


def load_metrics(model_dir):
    with open(os.path.join(model_dir, METRICS_FILE)) as f:
        return json.load(f)
