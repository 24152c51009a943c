"""Train the static or the dynamic LSTM on MNIST: `python -m mnist_rnn.train --help`.

Only flag parsing lives here; the work is `training.train_and_evaluate`.
"""

import dataclasses

from absl import flags

from mnist_rnn import cli, data, distribute, model, training

DEFAULTS = training.TrainConfig()

flags.DEFINE_enum("rnn", DEFAULTS.rnn, model.RNNS,
                  "static: LSTM(unroll=True), one cell copy per timestep, fixed length "
                  "(tf.nn.static_rnn). dynamic: LSTM(unroll=False), one cell in a loop, "
                  "any length (tf.nn.dynamic_rnn).")
flags.DEFINE_integer("units", DEFAULTS.units, "LSTM units (hidden state size).", lower_bound=1)
flags.DEFINE_integer("timesteps", DEFAULTS.timesteps,
                     "Steps per image; each step reads 784/timesteps pixels. 28: one row per "
                     "step; 784: pixel by pixel. Must divide 784.")
flags.DEFINE_integer("batch_size", DEFAULTS.batch_size, "Training and test batch size.",
                     lower_bound=1)
flags.DEFINE_float("learning_rate", DEFAULTS.learning_rate, "Adam learning rate (> 0).")
flags.DEFINE_integer("epochs", DEFAULTS.epochs, "Passes over the training set.", lower_bound=1)
flags.DEFINE_integer("max_steps", DEFAULTS.max_steps,
                     "Stop after this many training steps (0: no limit).", lower_bound=0)
flags.DEFINE_integer("eval_every_steps", DEFAULTS.eval_every_steps,
                     "Evaluate on the test set every N steps (0: once per epoch).", lower_bound=0)
flags.DEFINE_float("target_accuracy", DEFAULTS.target_accuracy,
                   "Stop, save and export as soon as test accuracy reaches this (0: off).",
                   lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_string("model_dir", None,
                    "Where model.keras, saved_model/ and metrics.json go (default: runs/RNN).")
flags.DEFINE_integer("seed", DEFAULTS.seed, "Seed for weights and data order.")
flags.DEFINE_bool("export", DEFAULTS.export, "Also export a TF SavedModel for serving.")
flags.DEFINE_bool("jit_compile", DEFAULTS.jit_compile, "Compile the training step with XLA.")
flags.DEFINE_integer("steps_per_execution", DEFAULTS.steps_per_execution,
                     "Training steps per call into TensorFlow (fewer Python round trips); "
                     "lowered to its largest divisor that keeps every evaluation, backup and "
                     "--max_steps exact; 1 with several replicas.", lower_bound=1)
flags.DEFINE_enum("distribution_strategy", DEFAULTS.distribution_strategy, distribute.STRATEGIES,
                  "auto: MirroredStrategy over all GPUs when there are two or more, else the "
                  "default strategy. one_device: the first GPU, else the CPU. mirrored: "
                  "MirroredStrategy over all GPUs (or all CPUs). multi_worker: "
                  "MultiWorkerMirroredStrategy from TF_CONFIG. --batch_size is the global batch.")
flags.DEFINE_bool("variable_length", DEFAULTS.variable_length,
                  "Dynamic only: each image is a sequence without its blank leading and "
                  "trailing steps (its own length, like dynamic_rnn's sequence_length); "
                  "batches are bucketed by length, padded per batch and masked.")
flags.DEFINE_integer("backup_every_steps", DEFAULTS.backup_every_steps,
                     "Back up for resumption every N steps (0: at each evaluation); always at "
                     "each epoch end.", lower_bound=0)
flags.DEFINE_bool("overwrite", DEFAULTS.overwrite,
                  "Start over instead of resuming the run in --model_dir.")
flags.DEFINE_bool("dry_run", False, "Smoke test: train 2 steps, evaluate, save.")

flags.register_validator(
    "timesteps", lambda t: t in data.valid_timesteps(),
    f"--timesteps must divide 784: one of {data.valid_timesteps()}")
flags.register_validator(
    "learning_rate", lambda lr: lr > 0, "--learning_rate must be > 0")
flags.register_multi_flags_validator(
    ["rnn", "variable_length"], lambda f: not (f["variable_length"] and f["rnn"] == "static"),
    model.VARIABLE_LENGTH_NEEDS_DYNAMIC)

FLAGS = flags.FLAGS


def config_from_flags(flag_values):
    fields = {f.name for f in dataclasses.fields(training.TrainConfig)}
    config = training.TrainConfig(
        **{name: flag_values[name].value for name in fields if name in flag_values}
    )
    config.model_dir = flag_values.model_dir or f"runs/{config.rnn}"
    if flag_values.dry_run:
        config.max_steps, config.epochs = 2, 1
    return config


def main(argv):
    del argv  # cli.run rejects stray arguments.
    training.train_and_evaluate(config_from_flags(FLAGS))


if __name__ == "__main__":
    cli.run(main)
