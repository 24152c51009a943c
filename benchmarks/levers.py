"""What each speed lever does to training samples/s, one lever at a time, against the model
and settings `python -m mnist_rnn.train` uses by default (dynamic, steps_per_execution=40, op
determinism on), and what PyTorch does with and without its fused oneDNN LSTM kernel.

    python benchmarks/levers.py [--units=100] [--timesteps=28] [--rounds=3] [--steps=200]

Each lever runs in a process of its own (thread settings and oneDNN options are per process),
interleaved over the rounds; each number is the median. This times a bare `fit` on the training
pipeline, without the evaluations and backups of the real loop: bench.py times that loop.
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys

from common import BATCH, torch_train, torch_train_arrays, whole

# name: (settings for measure(), environment)
LEVERS = {
    "defaults (dynamic)": ({}, {}),
    "static": ({"rnn": "static"}, {}),
    "steps_per_execution=1": ({"steps_per_execution": 1}, {}),
    "op determinism off": ({"determinism": False}, {}),
    "XLA (jit_compile)": ({"jit_compile": True}, {}),
    "XLA and static": ({"jit_compile": True, "rnn": "static"}, {}),
    "inter_op threads=1": ({"inter_op": 1}, {}),
    "intra_op threads=1": ({"intra_op": 1}, {}),
    "mixed_bfloat16 policy": ({"mixed_bfloat16": True}, {}),
    "oneDNN fp32 math in bf16": ({}, {"ONEDNN_DEFAULT_FPMATH_MODE": "BF16"}),
    "oneDNN off (Eigen)": ({}, {"TF_ENABLE_ONEDNN_OPTS": "0"}),
    "no training accuracy metric": ({"accuracy": False}, {}),
    "tf.data: one private thread": ({"data_threads": 1}, {}),
    "tf.data: autotune off": ({"autotune": False}, {}),
    "pytorch": ({"pytorch": True}, {}),
    "pytorch without oneDNN": ({"pytorch": True, "onednn": False}, {}),
}


def measure(units, timesteps, steps, data_dir=None, rnn="dynamic", steps_per_execution=40,
            determinism=True, jit_compile=False, inter_op=0, intra_op=0, mixed_bfloat16=False,
            accuracy=True, data_threads=0, autotune=None, pytorch=False, onednn=True):
    """Steady training samples/s of one lever, in this process."""
    if pytorch:
        return _pytorch(units, timesteps, steps, onednn)
    import tensorflow as tf

    if inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    if intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    from mnist_rnn.data import pipeline
    from mnist_rnn.model import lstm as models
    from mnist_rnn.training.callbacks import StepTimer
    from mnist_rnn.compat import keras
    from mnist_rnn.config import TrainConfig

    config = TrainConfig(rnn=rnn, units=units, timesteps=timesteps, batch_size=BATCH,
                         jit_compile=jit_compile, data_dir=data_dir)
    models.seed(config.seed, deterministic=determinism)
    if mixed_bfloat16:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    datasets = pipeline.load_for(config, "mnist_sample")
    model = models.build_for(config, datasets, steps_per_execution, accuracy)
    group = steps_per_execution
    steps = whole(steps, group)
    timer = StepTimer(warmup_steps=group)  # The first call into TensorFlow is the warm-up.
    epochs = math.ceil((steps + group) / datasets.steps_per_epoch)
    options = tf.data.Options()
    if autotune is not None:  # None: as the training pipeline sets it.
        options.autotune.enabled = autotune
    if data_threads:
        options.threading.private_threadpool_size = data_threads
    model.fit(datasets.train_epochs(0, epochs).with_options(options), epochs=1,
              steps_per_epoch=steps + group, callbacks=[timer], verbose=0, shuffle=False)
    return timer.steady_steps_per_s() * BATCH


def _pytorch(units, timesteps, steps, onednn):
    import torch

    torch.set_num_threads(os.cpu_count())
    with torch.backends.mkldnn.flags(enabled=onednn):
        return torch_train(units, timesteps, steps, *torch_train_arrays())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=100)
    parser.add_argument("--timesteps", type=int, default=28)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=200, help="timed steps per run")
    parser.add_argument("--levers", default=None,
                        help="only these levers, comma-separated names (default: all)")
    parser.add_argument("--data_dir", default=None, help="TFDS data dir for mnist_sample")
    parser.add_argument("--json", help="write {lever: [samples/s per round]} here")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # A lever's own process.
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.units, args.timesteps, args.steps, args.data_dir,
                                 **LEVERS[args.one][0])))
        return
    names = args.levers.split(",") if args.levers else list(LEVERS)
    unknown = [n for n in names if n not in LEVERS]
    if unknown:
        parser.error(f"unknown lever(s) {unknown}: choose from {list(LEVERS)}")
    try:
        import torch  # noqa: F401
    except ImportError:
        print("torch is not installed (pip install 'mnist_rnn[bench]'): PyTorch rows left out",
              file=sys.stderr)
        names = [n for n in names if not LEVERS[n][0].get("pytorch")]
    rates = {name: [] for name in names}
    for round_ in range(args.rounds):  # Interleaved, so a slow moment hits every lever alike;
        start = round_ * len(names) // args.rounds  # each round starts elsewhere in the list.
        for name in names[start:] + names[:start]:
            command = [sys.executable, os.path.abspath(__file__), f"--one={name}",
                       f"--units={args.units}", f"--timesteps={args.timesteps}",
                       f"--steps={args.steps}"] + (
                           [f"--data_dir={args.data_dir}"] if args.data_dir else [])
            run = subprocess.run(command, capture_output=True, text=True,
                                 env={**os.environ, **LEVERS[name][1]})
            if run.returncode:
                sys.exit(f"lever {name!r} failed:\n{run.stderr[-3000:]}")
            rates[name].append(json.loads(run.stdout.strip().splitlines()[-1]))
    base = statistics.median(rates[names[0]])
    print(f"{args.units} units, {args.timesteps}x{784 // args.timesteps}, batch {BATCH}, "
          f"median of {args.rounds} rounds of {args.steps} steps; relative to {names[0]!r}")
    print("| lever | samples/s | relative |\n|---|---|---|")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"| {name} | {median:,.0f} | {median / base:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"units": args.units, "timesteps": args.timesteps, "steps": args.steps,
                       "rates": rates}, f, indent=2)


if __name__ == "__main__":
    main()
