"""The training loop's callbacks, one job each: time the steps, end training at a bad loss or
at its step limit, evaluate, stop on a signal, back up (TensorBoard's: tensorboard.py). Each
is given the objects it works with; none calls back into the trainer.

Keras calls `on_train_batch_end` once per call into TensorFlow, with the epoch's last step run
so far (`steps_per_execution` may run several); each callback here counts the run's steps
from the step it started at, so a resumed run goes on counting where it stopped.
"""

import contextlib
import dataclasses
import math
import os
import signal
import sys
import threading
import time
from typing import Callable, TextIO

from mnist_rnn import compat, files
from mnist_rnn.compat import keras
from mnist_rnn.errors import NumericalError
from mnist_rnn.evaluation import report
from mnist_rnn.model.predictor import Predictor
from mnist_rnn.outputs import BACKUP_DIR
from mnist_rnn.training import checkpoint, rundir

WARMUP_STEPS = 5  # Steps left out of the steady-state speed: tracing, caches, allocation.


class StepCallback(keras.callbacks.Callback):
    """Keeps `self.step`, the run's steps done, and calls `on_steps_end` after each call.
    `self.ends_epoch` says whether the call ran the epoch's last step: work due then is left
    to `on_epoch_end`, which runs after Keras has finished the epoch's progress bar."""

    def __init__(self, start_step: int = 0):
        super().__init__()
        self.step = start_step
        self.ends_epoch = False
        self._epoch_base = start_step

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_base = self.step

    def on_train_batch_end(self, batch, logs=None):
        self.step = self._epoch_base + batch + 1
        self.ends_epoch = batch + 1 == (self.params or {}).get("steps")
        self.on_steps_end(logs or {})

    def on_steps_end(self, logs: dict) -> None:
        pass

    def sync_model(self) -> None:
        """Brings the model's variables up to date before reading them: mid-epoch on JAX,
        Keras keeps the training state apart from the model until asked."""
        if self.model is not None:
            compat.sync_variables(self.model)


class StepTimer(StepCallback):
    """Wall time over all of a run's sessions, the time to its first step, and its steady
    speed: steps per second inside the calls into TensorFlow once `warmup_steps` steps of this
    session are done, which leaves out tracing, evaluations, backups and every callback.
    `samples_per_step`: training examples per step, for the speed in examples."""

    def __init__(self, start_step: int = 0, warmup_steps: int = WARMUP_STEPS,
                 elapsed_before: float = 0.0, first_step_s: float | None = None,
                 on_first_step: Callable[[float], None] | None = None,
                 samples_per_step: float = 1.0):
        super().__init__(start_step)
        self.first_step_s = first_step_s
        self.samples_per_step = samples_per_step
        self._steady_from = start_step + warmup_steps
        self._elapsed_before = elapsed_before
        self._on_first_step = on_first_step
        self._start = time.perf_counter()
        self._call = (start_step, self._start)  # Step and time at the start of the last call.
        self._steady_steps, self._steady_s = 0, 0.0

    def elapsed(self) -> float:
        """Seconds of the run so far, over all its sessions."""
        return self._elapsed_before + time.perf_counter() - self._start

    def on_train_batch_begin(self, batch, logs=None):
        self._call = (self.step, time.perf_counter())

    def on_steps_end(self, logs):
        ended = time.perf_counter()
        if self.first_step_s is None:
            self.first_step_s = self.elapsed()
            if self._on_first_step:
                self._on_first_step(self.first_step_s)
        began_step, began = self._call
        if began_step >= self._steady_from:
            self._steady_steps += self.step - began_step
            self._steady_s += ended - began

    def steady_steps_per_s(self) -> float | None:
        """Steps per second after the warm-up; None before any such step."""
        return self._steady_steps / self._steady_s if self._steady_steps else None

    def steady_samples_per_s(self) -> float | None:
        """Training examples per second after the warm-up; None before any such step."""
        steady = self.steady_steps_per_s()
        return steady * self.samples_per_step if steady else None


@dataclasses.dataclass
class Evaluation:
    step: int
    epoch: int  # 1-based, of the step.
    accuracy: float
    loss: float
    time_s: float  # Of the run, when the evaluation ended.


class Guard(StepCallback):
    """Ends training: with a NumericalError at a non-finite training loss, and at `max_steps`
    (0: no limit)."""

    def __init__(self, *, max_steps: int = 0, start_step: int = 0):
        super().__init__(start_step)
        self.max_steps = max_steps

    def on_steps_end(self, logs):
        loss = float(logs.get("loss", 0.0))
        if not math.isfinite(loss):
            raise NumericalError(f"the training loss is {loss} at step {self.step}")
        if self.max_steps and self.step >= self.max_steps:
            self.model.stop_training = True


class Evaluator(StepCallback):
    """Evaluates on the test set every `every_steps` steps (0: at each epoch end), with one
    printed line, and stops training once test accuracy reaches `target_accuracy` (0: never).

    Each evaluation is one report.test_pass of `predictor` (the model being trained) over
    `test`, with its answers after each step; the latest is kept in `last_pass` for the final
    report. `clock()` gives the run's time. A resumed run passes its earlier evaluations as
    `history`, and their time as `eval_time_s`."""

    def __init__(self, predictor: Predictor, test, *, steps_per_epoch: int,
                 clock: Callable[[], float], every_steps: int = 0,
                 target_accuracy: float = 0.0, out: TextIO = sys.stdout, start_step: int = 0,
                 history: list[Evaluation] | None = None, eval_time_s: float = 0.0):
        super().__init__(start_step)
        self.predictor = predictor
        self.test = test
        self.steps_per_epoch = steps_per_epoch
        self.clock = clock
        self.every_steps = every_steps
        self.target_accuracy = target_accuracy
        self.out = out
        self.history = list(history or [])
        self.eval_time_s = eval_time_s
        self.last_pass = None

    def on_steps_end(self, logs):
        if self._due() and not self.ends_epoch:
            # Mid-epoch, the progress bar is mid-line: start on a fresh one.
            self.evaluate(newline=self.params.get("verbose") == 1)

    def on_epoch_end(self, epoch, logs=None):
        # Keras also ends the epoch early on a stop (a signal, a target): no evaluation is due
        # then unless its step was one, or the resumed run's list would differ.
        epoch_done = self.step % self.steps_per_epoch == 0
        if (not self.every_steps and epoch_done) or self._due():
            self.evaluate()

    def _due(self) -> bool:
        return bool(self.every_steps) and self.step % self.every_steps == 0

    def reached_target(self) -> bool:
        return bool(self.target_accuracy and self.history
                    and self.history[-1].accuracy >= self.target_accuracy)

    def evaluate(self, newline: bool = False) -> Evaluation:
        """The evaluation at the current step: run and printed once per step (after a
        newline when `newline`)."""
        evaluated = self.history and self.history[-1].step == self.step
        if evaluated and self.last_pass is not None:
            return self.history[-1]
        began = time.perf_counter()
        self.sync_model()
        self.last_pass = report.test_pass(self.predictor, self.test, steps=True)
        self.eval_time_s += time.perf_counter() - began
        if evaluated:  # Resumed at an evaluated step: the report needs the pass, not a line.
            return self.history[-1]
        result = Evaluation(self.step, max(1, math.ceil(self.step / self.steps_per_epoch)),
                            self.last_pass.accuracy, self.last_pass.loss, self.clock())
        self.history.append(result)
        print(
            "\n" * newline + f"time {result.time_s:8.1f}s  step {result.step:6d}  "
            f"epoch {result.epoch:3d}  test accuracy {result.accuracy:.4f}  "
            f"test loss {result.loss:.4f}",
            file=self.out,
            flush=True,
        )
        if self.reached_target():
            print(f"reached target accuracy {self.target_accuracy}: stopping", file=self.out)
            if self.model is not None:  # None when the run resumed with nothing to train.
                self.model.stop_training = True
        return result


class StopOnSignal(StepCallback):
    """Turns SIGINT (Ctrl-C) and SIGTERM (what schedulers and preemptible machines send) into a
    clean stop: while `caught()` is active, a signal only marks `signal_number`, and training
    stops after the call into TensorFlow in flight, once the callbacks before this one
    (evaluation, backup) have run for its step."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, start_step: int = 0):
        super().__init__(start_step)
        self.signal_number = None

    @contextlib.contextmanager
    def caught(self):
        """Catches the signals for the block (in the main thread; elsewhere Python cannot)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self._mark) for s in self.SIGNALS}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _mark(self, number, frame):
        self.signal_number = number

    def on_steps_end(self, logs):
        if self.signal_number is not None:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self.on_steps_end({})


class Backup(StepCallback):
    """Backs up every `every_steps` steps (0: never mid-epoch), at each epoch end and when
    asked (`save`): first the TensorBoard curves noted so far (`tensorboard`, when on), then
    the model's and optimizer's variables with the run's `state()` into BACKUP_DIR.

    The first backup of a run started afresh (`handed_over` false) first moves the run that
    `out_dir` held before out of the way, and deletes it once the backup is complete (see
    rundir.py). `about`: what the state says of the run besides its progress (its settings,
    its dataset, its runtime)."""

    def __init__(self, every_steps: int, out_dir: str, about: dict, timer: StepTimer,
                 evaluator: Evaluator, tensorboard=None, *, handed_over: bool,
                 start_step: int = 0):
        super().__init__(start_step)
        self.every_steps = every_steps
        self.out_dir = out_dir
        self.about = about
        self.timer = timer
        self.evaluator = evaluator
        self.tensorboard = tensorboard
        self.handed_over = handed_over
        self._saved_step = None

    def on_steps_end(self, logs):
        if self.every_steps and self.step % self.every_steps == 0 and not self.ends_epoch:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        self.save()

    def state(self) -> dict:
        """What a backup records besides the weights."""
        evaluator = self.evaluator
        return {
            "step": evaluator.step,
            "evaluations": [dataclasses.asdict(e) for e in evaluator.history],
            "eval_time_s": evaluator.eval_time_s,
            "wall_time_s": self.timer.elapsed(),
            "time_to_first_step_s": self.timer.first_step_s,
            **self.about,
        }

    def save(self) -> None:
        if self.step == self._saved_step:
            return
        self.sync_model()
        if not self.handed_over:
            files.write_or_fail(rundir.hand_over, self.out_dir)
        if self.tensorboard:
            files.write_or_fail(self.tensorboard.write)
        files.write_or_fail(checkpoint.save, self.model,
                            os.path.join(self.out_dir, BACKUP_DIR), self.state())
        if not self.handed_over:
            rundir.finish_hand_over(self.out_dir)
            self.handed_over = True
        self._saved_step = self.step
