"""Train, evaluate, save and export one LSTM classifier. Plain arguments only: the CLI in
`train.py` maps flags onto `TrainConfig`, tests build a `TrainConfig` directly."""

import dataclasses
import json
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from mnist_rnn import data, evaluation, export, files, inference, model as model_lib

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
    verbose: int = 1  # Keras fit verbosity: 1 progress bar, 2 a line per epoch, 0 silent.


@dataclasses.dataclass
class Evaluation:
    step: int
    epoch: int
    accuracy: float
    loss: float
    time_s: float


class Evaluator(keras.callbacks.Callback):
    """Evaluates on the test set every `every_steps` steps (0: each epoch end), prints one line
    per evaluation, stops at `max_steps` and once accuracy reaches `target_accuracy`."""

    def __init__(self, test, every_steps=0, target_accuracy=0.0, max_steps=0, out=sys.stdout):
        super().__init__()
        self.test = test
        self.every_steps = every_steps
        self.target_accuracy = target_accuracy
        self.max_steps = max_steps
        self.out = out
        self.history = []
        self.step = 0
        self.epoch = 0
        self.eval_time_s = 0.0
        self.first_step_s = None
        self._eval_step = None

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.first_step_s is None:
            self.first_step_s = time.perf_counter() - self.start
        if self.every_steps and self.step % self.every_steps == 0:
            self.evaluate()
        if self.max_steps and self.step >= self.max_steps:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if not self.every_steps:
            self.evaluate()

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
        ended = time.perf_counter()
        self.eval_time_s += ended - began
        result = Evaluation(
            self.step, self.epoch + 1, float(correct / count), float(loss_sum / count),
            ended - self.start,
        )
        self.history.append(result)
        # Start on a fresh line when the progress bar is mid-line.
        newline = "\n" if self.params.get("verbose") == 1 else ""
        print(
            f"{newline}time {result.time_s:8.1f}s  step {result.step:6d}  epoch {result.epoch:3d}  "
            f"test accuracy {result.accuracy:.4f}  test loss {result.loss:.4f}",
            file=self.out,
            flush=True,
        )
        if self.target_accuracy and result.accuracy >= self.target_accuracy:
            print(f"reached target accuracy {self.target_accuracy}: stopping", file=self.out)
            self.model.stop_training = True
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


def samples_seen(steps, batch_size, train_size):
    """Training samples in `steps` batches, counting each epoch's smaller last batch."""
    steps_per_epoch = -(-train_size // batch_size)
    full_epochs, rest = divmod(steps, steps_per_epoch)
    return full_epochs * train_size + min(rest * batch_size, train_size)


def train_and_evaluate(config, datasets=None, out=sys.stdout):
    """Trains per `config`; writes model.keras, saved_model/, metrics.json and the evaluation
    report into `config.model_dir`; returns (model, metrics dict). `datasets` overrides the data."""
    files.ensure_writable_dir(config.model_dir)
    files.remove_stale_tmp(config.model_dir)
    keras.utils.set_random_seed(config.seed)
    # Same seed, same machine, same numbers: worth the small cost on CPU.
    tf.config.experimental.enable_op_determinism()

    if datasets is None:
        name = data.resolve_dataset(config.dataset, config.data_dir)
        datasets = data.load_datasets(
            name, config.timesteps, config.batch_size, config.seed, config.data_dir
        )
    model = model_lib.build_model(
        config.rnn, config.units, datasets.timesteps, datasets.features, seed=config.seed
    )
    model_lib.compile_model(model, config.learning_rate, config.jit_compile)
    print(
        f"Training the {config.rnn} LSTM ({config.units} units, {model.count_params():,} "
        f"parameters) on {datasets.name} ({datasets.train_size:,} train / "
        f"{datasets.test_size:,} test images), {datasets.timesteps} timesteps of "
        f"{datasets.features} features",
        file=out,
        flush=True,
    )

    evaluator = Evaluator(
        datasets.test, config.eval_every_steps, config.target_accuracy, config.max_steps, out
    )
    began = time.perf_counter()
    model.fit(
        datasets.train, epochs=config.epochs, callbacks=[evaluator], verbose=config.verbose,
        shuffle=False,  # The pipeline shuffles, seeded.
    )
    final = evaluator.evaluate()  # No-op when the last step was just evaluated.
    wall_time_s = time.perf_counter() - began
    train_time_s = wall_time_s - evaluator.eval_time_s
    samples = samples_seen(evaluator.step, config.batch_size, datasets.train_size)

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
        "epochs_started": evaluator.epoch + 1,
        "final_test_accuracy": final.accuracy,
        "final_test_loss": final.loss,
        "reached_target": bool(config.target_accuracy)
        and final.accuracy >= config.target_accuracy,
        "wall_time_s": wall_time_s,
        "train_time_s": train_time_s,
        "time_to_first_step_s": evaluator.first_step_s,
        "train_samples": samples,
        "train_samples_per_s": samples / train_time_s if train_time_s > 0 else None,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    save(model, config.model_dir, config.export)
    files.write_json(os.path.join(config.model_dir, METRICS_FILE), metrics)
    report, error_images = evaluation.evaluate(
        inference.from_keras_model(model, os.path.join(config.model_dir, MODEL_FILE)),
        datasets.test,
    )
    report["dataset"] = datasets.name
    evaluation.write_report(report, error_images, config.model_dir)
    print(f"Saved to {config.model_dir}: {', '.join(sorted(os.listdir(config.model_dir)))}",
          file=out)
    return model, metrics


def save(model, model_dir, saved_model=True):
    """model.keras always; the SavedModel for serving when `saved_model`."""
    files.save_model(model, os.path.join(model_dir, MODEL_FILE))
    if saved_model:
        files.replace_dir(
            lambda path: export.export_saved_model(model, path),
            os.path.join(model_dir, SAVED_MODEL_DIR),
        )


def load_metrics(model_dir):
    with open(os.path.join(model_dir, METRICS_FILE)) as f:
        return json.load(f)
