"""Train the static or the dynamic LSTM on MNIST: `python -m mnist_rnn.train --help`.

The flags map onto a TrainConfig; `train_and_evaluate` composes the run: training
(training.trainer), then the exports the config asks for (serving), as its last stage.
"""

import dataclasses
import sys
from typing import TYPE_CHECKING, TextIO

from absl import flags

from mnist_rnn import cli
from mnist_rnn.config import (CHECKS, LR_SCHEDULES, RNNS, STRATEGIES, TrainConfig,
                              check_variable_length)
from mnist_rnn.errors import UserError

if TYPE_CHECKING:  # TensorFlow loads only once the flags are known to be valid.
    from mnist_rnn.data.pipeline import Datasets

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """The training flags, one per TrainConfig field (defaults from it), and --dry_run."""
    for define in (_define_model_flags, _define_run_flags, _define_output_flags):
        define(TrainConfig(), dict(flag_values=flag_values))
    cli.define_saved_model_xla_flag(flag_values)
    cli.define_dataset_flags(flag_values)
    cli.register_checks([name for name in CHECKS if name in flag_values], flag_values)
    flags.register_multi_flags_validator(["rnn", "variable_length"], _length_fits_rnn,
                                         flag_values=flag_values)


def _define_model_flags(d: TrainConfig, fv: dict) -> None:
    """The model: which LSTM, its size, how it reads an image."""
    flags.DEFINE_enum("rnn", d.rnn, RNNS,
                      "static: LSTM(unroll=True), one cell copy per timestep, fixed length "
                      "(tf.nn.static_rnn). dynamic: LSTM(unroll=False), one cell in a loop, "
                      "any length (tf.nn.dynamic_rnn).", **fv)
    flags.DEFINE_integer("units", d.units, "LSTM units (hidden state size).",
                         **fv)
    flags.DEFINE_integer("timesteps", d.timesteps,
                         "Steps per image; each step reads 784/timesteps pixels. 28: one row "
                         "per step; 784: pixel by pixel. Must divide 784.", **fv)
    flags.DEFINE_bool("variable_length", d.variable_length,
                      "Dynamic only: each image is a sequence without its blank leading and "
                      "trailing steps (its own length, like dynamic_rnn's sequence_length); "
                      "batches are bucketed by length, padded per batch and masked.", **fv)


def _define_run_flags(d: TrainConfig, fv: dict) -> None:
    """How the run trains: batches, rate, length, evaluation, compilation."""
    flags.DEFINE_integer("batch_size", d.batch_size, "Training and test batch size.", **fv)
    flags.DEFINE_float("learning_rate", d.learning_rate, "Adam learning rate (> 0).", **fv)
    flags.DEFINE_enum("lr_schedule", d.lr_schedule, LR_SCHEDULES,
                      "constant: --learning_rate throughout. cosine: Keras's CosineDecay from "
                      "--learning_rate to 0 over the run (--epochs, or --max_steps if fewer); "
                      "large early steps, fine late ones.", **fv)
    flags.DEFINE_integer("epochs", d.epochs, "Passes over the training set.",
                         **fv)
    flags.DEFINE_integer("max_steps", d.max_steps,
                         "Stop after this many training steps (0: no limit).",
                         **fv)
    flags.DEFINE_integer("eval_every_steps", d.eval_every_steps,
                         "Evaluate on the test set every N steps (0: once per epoch).", **fv)
    flags.DEFINE_float("target_accuracy", d.target_accuracy,
                       "Stop, save and export as soon as test accuracy reaches this (0: off).",
                       **fv)
    flags.DEFINE_integer("seed", d.seed, "Seed for weights and data order.", **fv)
    flags.DEFINE_bool("jit_compile", d.jit_compile, "Compile the training step with XLA (always "
                      "on with KERAS_BACKEND=jax).", **fv)
    flags.DEFINE_integer("steps_per_execution", d.steps_per_execution,
                         "Training steps per call into TensorFlow (fewer Python round trips); "
                         "lowered to its largest divisor that keeps every evaluation, backup "
                         "and --max_steps exact; 1 with several replicas.", **fv)
    flags.DEFINE_enum("distribution_strategy", d.distribution_strategy, STRATEGIES,
                      "auto: MirroredStrategy over all GPUs when there are two or more, else "
                      "the default strategy. one_device: the first GPU, else the CPU. mirrored: "
                      "MirroredStrategy over all GPUs (or all CPUs). multi_worker: "
                      "MultiWorkerMirroredStrategy from TF_CONFIG (Keras 2), or with "
                      "KERAS_BACKEND=jax keras.distribution over the processes of the "
                      "KERAS_DISTRIBUTION_* variables. --batch_size is the global batch.", **fv)


def _define_output_flags(d: TrainConfig, fv: dict) -> None:
    """What the run writes, and where."""
    flags.DEFINE_string("model_dir", None,
                        "Where model.keras, saved_model/ and metrics.json go (default: "
                        "runs/RNN).", **fv)
    flags.DEFINE_bool("export", d.export, "Also export a TF SavedModel for serving.", **fv)
    flags.DEFINE_bool("export_tflite", d.export_tflite,
                      "Also write model.tflite (float32) and model_int8.tflite (int8 weights) "
                      "for TFLite / LiteRT, with built-in ops only; the dynamic LSTM's take one "
                      "image per call.", **fv)
    flags.DEFINE_integer("backup_every_steps", d.backup_every_steps,
                         "Back up for resumption every N steps (0: at each evaluation); always "
                         "at each epoch end.", **fv)
    flags.DEFINE_bool("overwrite", d.overwrite,
                      "Start over instead of resuming the run in --model_dir.", **fv)
    flags.DEFINE_bool("tensorboard", d.tensorboard,
                      "Write TensorBoard logs to MODEL_DIR/logs/: training loss and accuracy, "
                      "test accuracy and loss, learning rate, samples/s and the training-step "
                      "graph (tensorboard --logdir runs).", **fv)
    flags.DEFINE_bool("dry_run", d.dry_run,
                      "Smoke test: train 2 steps, evaluate, save (sets --max_steps=2 "
                      "--epochs=1).", **fv)


def _length_fits_rnn(values: dict) -> bool:
    """config.check_variable_length on the flags, its message written as flags."""
    try:
        check_variable_length(values["rnn"], values["variable_length"])
    except UserError as e:
        raise flags.ValidationError(e.as_flags()) from None
    return True


def config_from_flags(flag_values: flags.FlagValues = FLAGS) -> TrainConfig:
    """The TrainConfig the parsed flags describe."""
    return TrainConfig(**{field.name: flag_values[field.name].value
                          for field in dataclasses.fields(TrainConfig)
                          if field.name in flag_values})


def train_and_evaluate(config: TrainConfig, datasets: "Datasets | None" = None,
                       out: TextIO = sys.stdout) -> tuple:
    """Trains per `config` (training.trainer.train_and_evaluate), writing the SavedModel
    (config.export) and the .tflite files (config.export_tflite) as the run's last stage.
    datasets: the data to use instead of config.dataset. Returns the trained model and the
    metrics written to metrics.json."""
    from mnist_rnn.serving.saved_model import SavedModelExport
    from mnist_rnn.serving.tflite import TFLiteExport
    from mnist_rnn.training import trainer

    exports = ([SavedModelExport(config.saved_model_xla)] if config.export else []) + (
        [TFLiteExport()] if config.export_tflite else [])
    return trainer.train_and_evaluate(config, datasets, out, exports)


def main(argv):
    del argv  # cli.run refuses stray arguments.
    train_and_evaluate(config_from_flags())


def check_model_dir() -> None:
    """Refuses a --model_dir that another run holds, before TensorFlow loads."""
    from mnist_rnn import files

    files.check_not_busy(config_from_flags().model_dir)


if __name__ == "__main__":
    cli.run(main, define_flags, before_tensorflow=check_model_dir)
