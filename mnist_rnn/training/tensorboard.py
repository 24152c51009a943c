"""A training run's curves and its training-step graph for `tensorboard --logdir`, written by
a training callback, and the trimming of event files that a resumed run needs."""

import glob
import os

import tensorflow as tf

from mnist_rnn import files
from mnist_rnn.model.lstm import describe, learning_rate_at
from mnist_rnn.training.callbacks import Evaluator, StepCallback, StepTimer


class TensorBoardLog(StepCallback):
    """A run's curves for `tensorboard --logdir`, at the run's step numbers: after every call
    into TensorFlow, the training loss and accuracy, the learning rate and the steady
    samples/s (logdir/train, with the training-step graph); at each evaluation, test accuracy
    and loss (logdir/test).

    The training loop only notes the values; `write()` writes them, and is called before each
    backup and by `finish()` at the end. So the loop never waits for a file, and a killed run
    loses nothing written before its last backup. A resumed run first drops what its killed
    predecessor wrote after the backup it resumes from, so that no step is drawn twice.

    The evaluations are `evaluator`'s; the speed is `timer`'s; the learning rate is `schedule`'s (a float or a Keras schedule, see
    model.lstm.learning_rate). `graph`: also draw the training step."""

    def __init__(self, logdir: str, evaluator: Evaluator, timer: StepTimer, schedule,
                 start_step: int = 0, graph: bool = True):
        super().__init__(start_step)
        self.logdir = logdir
        self.evaluator = evaluator
        self.timer = timer
        self.schedule = schedule
        self._start_step = start_step
        self._writers = {}
        self._pending: list[tuple[int, dict[str, float]]] = []
        self._evaluations_written = None
        self._graph_pending = graph

    def _open(self) -> None:
        if self._writers:
            return
        for name in ("train", "test"):
            directory = os.path.join(self.logdir, name)
            drop_steps_after(directory, self._start_step)
            self._writers[name] = tf.summary.create_file_writer(directory)
        # Those of earlier sessions are written.
        self._evaluations_written = sum(e.step <= self._start_step
                                        for e in self.evaluator.history)

    def on_steps_end(self, logs):
        values = {name: float(logs[name]) for name in ("loss", "accuracy") if name in logs}
        values["learning_rate"] = learning_rate_at(self.schedule, self.step)
        speed = self.timer.steady_samples_per_s()
        if speed:
            values["steady_samples_per_s"] = speed
        self._pending.append((self.step, values))

    def write(self) -> None:
        """Writes what was noted since the last write, and flushes both files; a file that
        cannot be written is an OSError naming the log directory."""
        try:
            self._write()
        except tf.errors.OpError as e:  # TensorFlow's file errors are not OSErrors.
            raise files.as_os_error(e, self.logdir) from None

    def _write(self) -> None:
        self._open()
        if self._graph_pending and self.model is not None and self._pending:
            # Once the optimizer is built (after a step), tracing creates nothing.
            write_graph(self.model, os.path.join(self.logdir, "train"))
            self._graph_pending = False
        for step, values in self._pending:
            with self._writers["train"].as_default(step=step):
                for tag, value in values.items():
                    tf.summary.scalar(tag, value)
        self._pending = []
        evaluations = self.evaluator.history
        for evaluation in evaluations[self._evaluations_written:]:
            with self._writers["test"].as_default(step=evaluation.step):
                tf.summary.scalar("accuracy", evaluation.accuracy)
                tf.summary.scalar("loss", evaluation.loss)
        self._evaluations_written = len(evaluations)
        for writer in self._writers.values():
            writer.flush()

    def finish(self) -> None:
        """Writes what is not written yet and closes the files."""
        self.write()
        for writer in self._writers.values():
            writer.close()


def drop_steps_after(directory: str, step: int) -> None:
    """Rewrites the event files in `directory` without their events after `step`: those of
    steps that a resumed run trains again."""
    for path in sorted(glob.glob(os.path.join(directory, "events.out.tfevents.*"))):
        events = _read_events(path)
        if all(event.step <= step for event in events):
            continue

        def write(tmp, kept=[e for e in events if e.step <= step]):
            with tf.io.TFRecordWriter(tmp) as records:
                for event in kept:
                    records.write(event.SerializeToString())

        files.write_via_tmp(path, write)


def _read_events(path: str) -> list:
    """The whole events of an event file; a record cut short by a kill is left out."""
    events = []
    try:
        for record in tf.data.TFRecordDataset(path):  # What summary_iterator, deprecated, did.
            events.append(tf.compat.v1.Event.FromString(record.numpy()))
    except tf.errors.DataLossError:
        pass
    return events


def train_step(model):
    """The training step of a compiled model as one tf.function: forward, loss, gradients,
    optimizer update (what Keras' fit runs each step)."""

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = model.loss(y, model(x, training=True))
        gradients = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    return step


def input_specs(model) -> tuple[tf.TensorSpec, tf.TensorSpec]:
    """The specs of a training step's sequences and labels for `model`."""
    shape = describe(model)
    return (tf.TensorSpec([None, shape.length, shape.features], tf.float32, name="sequences"),
            tf.TensorSpec([None], tf.int32, name="labels"))


def write_graph(model, logdir: str) -> None:
    """Writes the training-step graph to `logdir` for `tensorboard --logdir`."""
    graph = train_step(model).get_concrete_function(*input_specs(model)).graph
    writer = tf.summary.create_file_writer(logdir)
    with writer.as_default():
        tf.summary.graph(graph)
    writer.flush()
    writer.close()
