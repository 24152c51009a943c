"""Static vs dynamic, measured: `python -m mnist_rnn.compare`.

For each --timesteps value and each Keras 3 backend of --backends (TensorFlow; JAX where
installed), trains the static and the dynamic LSTM (on TensorFlow also the dynamic one on
variable-length batches) in a process of its own, and reports graph size, time to the first
step, step time, memory, SavedModel size and whether another length is accepted. Writes
compare.json, compare.md, compare.png and tensorboard/ into --output_dir.
"""

import importlib.util

from absl import flags

from mnist_rnn import cli
from mnist_rnn.config import CHECKS, TrainConfig, valid_timesteps
from mnist_rnn.errors import UserError
from mnist_rnn.study import comparison, measure

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    d = TrainConfig()
    fv = dict(flag_values=flag_values)
    flags.DEFINE_list("timesteps", ["28", "112", "784"],
                      "Sequence lengths to measure; each must divide 784.", **fv)
    flags.DEFINE_integer("units", d.units, "LSTM units.", **fv)
    flags.DEFINE_integer("batch_size", d.batch_size, "Training batch size.", **fv)
    flags.DEFINE_integer("steps", measure.STEPS,
                         f"Timed training steps, after the first and {measure.WARMUP} "
                         "warm-up steps.",
                         lower_bound=1, **fv)
    flags.DEFINE_string("output_dir", "runs/compare", "Where the report files go.", **fv)
    flags.DEFINE_float("compile_timeout", comparison.COMPILE_TIMEOUT_S,
                       "Seconds a configuration may take to finish its first step (trace and "
                       "compile); slower ones are reported as over the timeout.",
                       lower_bound=0.0, **fv)
    flags.DEFINE_bool("variable_length", True,
                      "Also measure the dynamic model on variable-length batches.", **fv)
    flags.DEFINE_list("backends", ["tensorflow", "jax"],
                      "Keras 3 backends to measure each on: tensorflow, jax (needs the jax "
                      "extra; left out, with a note, where it is not installed).", **fv)
    cli.define_dataset_flags(flag_values)
    cli.register_checks(["units", "batch_size"], flag_values)
    flags.register_validator(
        "backends", lambda values: bool(values) and set(values) <= {"tensorflow", "jax"},
        "--backends must be a comma-separated list of tensorflow and jax", **fv)
    flags.register_validator(
        "timesteps",
        lambda values: all(v.isdigit() and CHECKS["timesteps"][0](int(v)) for v in values),
        f"--timesteps must be a comma-separated list of divisors of 784: {valid_timesteps()}",
        **fv)


def main(argv):
    del argv
    from mnist_rnn.data import sources  # TensorFlow loads once the flags are valid.

    # Probe once, not per run; each run's process finds full MNIST prepared from --mnist_dir.
    dataset = sources.resolve_dataset(FLAGS.dataset, FLAGS.data_dir, mnist_dir=FLAGS.mnist_dir)
    if FLAGS.mnist_dir:
        sources.prepare_mnist(FLAGS.mnist_dir, FLAGS.data_dir)
    backends = FLAGS.backends
    if "jax" in backends and importlib.util.find_spec("jax") is None:
        if FLAGS["backends"].present:
            raise UserError("--backends=jax needs JAX: pip install 'mnist_rnn[jax]', or pass "
                            "--backends=tensorflow")
        print("JAX is not installed (pip install 'mnist_rnn[jax]'): measuring on TensorFlow "
              "only")
        backends = [b for b in backends if b != "jax"]
    report = comparison.compare(
        [int(t) for t in FLAGS.timesteps], FLAGS.output_dir, units=FLAGS.units,
        batch_size=FLAGS.batch_size, steps=FLAGS.steps, compile_timeout=FLAGS.compile_timeout,
        dataset=dataset, data_dir=FLAGS.data_dir, variable_length=FLAGS.variable_length,
        backends=backends)
    print()
    print(comparison.markdown(report))
    if "tensorflow" in backends:  # TensorBoard draws TensorFlow's graphs only.
        print(f"Wrote compare.json, compare.md, compare.png and {comparison.TENSORBOARD_DIR}/ to "
              f"{FLAGS.output_dir}; see the graphs with: tensorboard --logdir {FLAGS.output_dir}")
    else:
        print(f"Wrote compare.json, compare.md and compare.png to {FLAGS.output_dir}")


if __name__ == "__main__":
    cli.run(main, define_flags)
