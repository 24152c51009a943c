"""Training and inference throughput: mnist_rnn (static and dynamic, trained exactly as
`python -m mnist_rnn.train` trains) against a PyTorch nn.LSTM of the same shape.

    python benchmarks/bench.py [--quick] [--json=PATH] [--rounds=3] [--steps=40]

Contenders are interleaved (A B C A B C ...) and each number is the median of the rounds, so
that a slow moment of the machine hits every contender alike. Without torch installed (the
`bench` extra), it says so and measures mnist_rnn alone.
"""

import argparse
import io
import json
import math
import os
import statistics
import sys
import tempfile
import time

import numpy as np

from common import BATCH, torch_model, torch_train, torch_train_arrays, whole

CONFIGS = [(100, 28), (256, 28), (128, 196), (128, 784)]  # (units, timesteps)
QUICK_CONFIGS = [(32, 28)]


def keras_train(rnn, units, timesteps, steps, data_dir):
    """Steady-state training samples/s of `python -m mnist_rnn.train` with its defaults."""
    from mnist_rnn import trainer
    from mnist_rnn.callbacks import WARMUP_STEPS
    from mnist_rnn.config import TrainConfig

    group = TrainConfig().steps_per_execution  # Stop on a group boundary, or groups shrink.
    with tempfile.TemporaryDirectory() as model_dir:
        config = TrainConfig(
            rnn=rnn, units=units, timesteps=timesteps, batch_size=BATCH,
            max_steps=whole(WARMUP_STEPS, group) + whole(steps, group), epochs=100,
            dataset="mnist_sample", data_dir=data_dir, model_dir=model_dir, export=False,
            tensorboard=False, verbose=0)  # Logs would not change the steady rate it reads.
        _, metrics = trainer.train_and_evaluate(config, out=io.StringIO())
    return metrics["steady_train_samples_per_s"]


def keras_infer(units, timesteps, images, repeats):
    """Inference samples/s: the Keras model in memory, and its SavedModel reloaded."""
    import tensorflow as tf

    from mnist_rnn import serving
    from mnist_rnn.model import build_model
    from mnist_rnn.sequences import to_sequences

    model = build_model("dynamic", units, timesteps, 784 // timesteps, seed=0)
    sequences = to_sequences(images, timesteps)
    @tf.function
    def forward(x):
        return model(x, training=False)

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        serving.export_saved_model(model, os.path.join(tmp, "saved_model"))
        serve = tf.saved_model.load(os.path.join(tmp, "saved_model")).signatures[
            "serving_default"]
        raw = tf.constant(images)
        for name, call in (("keras", lambda: forward(sequences)),
                           ("savedmodel", lambda: serve(images=raw))):
            call()
            began = time.perf_counter()
            for _ in range(repeats):
                call()
            results[name] = repeats * len(images) / (time.perf_counter() - began)
    return results


def torch_infer(units, timesteps, images, repeats):
    import torch

    model = torch_model(units, 784 // timesteps).eval()
    x = torch.from_numpy(images.reshape(len(images), timesteps, -1).astype(np.float32) / 255)
    with torch.no_grad():
        model(x)
        began = time.perf_counter()
        for _ in range(repeats):
            model(x)
    return repeats * len(images) / (time.perf_counter() - began)


def pipeline(timesteps, data_dir, batches=400):
    """Samples/s the training input pipeline delivers on its own (after its cache is warm)."""
    from mnist_rnn import data

    datasets = data.load_datasets("mnist_sample", timesteps, BATCH, data_dir=data_dir)
    epochs = math.ceil(batches / datasets.steps_per_epoch) + 1
    for _ in datasets.train:  # Fill the cache, as the first epoch of training does.
        pass
    began = time.perf_counter()
    count = sum(len(y) for _, y in datasets.train_epochs(1, epochs).take(batches))
    return count / (time.perf_counter() - began)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small configuration, 1 round")
    parser.add_argument("--json", help="write the rows to this JSON file")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40,
                        help="timed training steps (rounded up to whole steps_per_execution)")
    parser.add_argument("--data_dir", default=None, help="TFDS data dir for mnist_sample")
    parser.add_argument("--configs", default=None,
                        help="only these UNITSxTIMESTEPS, comma-separated (e.g. 100x28)")
    args = parser.parse_args()
    configs, rounds, steps = (QUICK_CONFIGS, 1, 5) if args.quick else (
        CONFIGS, args.rounds, args.steps)
    repeats, batches = (2, 50) if args.quick else (max(1, 20 // rounds), 400)
    if args.configs:
        configs = [tuple(int(n) for n in c.split("x")) for c in args.configs.split(",")]

    try:
        import torch

        torch.set_num_threads(os.cpu_count())
        have_torch = True
    except ImportError:
        print("torch is not installed (pip install 'mnist_rnn[bench]'): measuring mnist_rnn "
              "alone", file=sys.stderr)
        have_torch = False

    from mnist_rnn import sample

    images, _ = sample.load_arrays()  # Inference runs on raw uint8 images.
    train_images, train_labels = torch_train_arrays()
    rows = []
    for units, timesteps in configs:
        contenders = {
            "static": lambda: keras_train("static", units, timesteps, steps, args.data_dir),
            "dynamic": lambda: keras_train("dynamic", units, timesteps, steps, args.data_dir),
        }
        if have_torch:
            contenders["pytorch"] = lambda: torch_train(units, timesteps, steps, train_images,
                                                        train_labels)
        samples = {name: [] for name in contenders}
        for _ in range(rounds):  # Interleaved: A B C, A B C, ...
            for name, measure in contenders.items():
                samples[name].append(measure())
        for name, values in samples.items():
            rows.append(dict(contender=name, units=units, timesteps=timesteps,
                             features=784 // timesteps, task="train",
                             samples_per_s=statistics.median(values), rounds=values))
        infer = keras_infer(units, timesteps, images[:1000], repeats)
        if have_torch:
            infer["pytorch"] = torch_infer(units, timesteps, images[:1000], repeats)
        for name, value in infer.items():
            rows.append(dict(contender=name, units=units, timesteps=timesteps,
                             features=784 // timesteps, task="infer", samples_per_s=value))
        rows.append(dict(contender="pipeline", units=units, timesteps=timesteps,
                         features=784 // timesteps, task="train",
                         samples_per_s=pipeline(timesteps, args.data_dir, batches)))
        print(f"measured {units} units, {timesteps}x{784 // timesteps}", file=sys.stderr)
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


def table(rows):
    def rate(contender, units, timesteps, task="train"):
        match = [r["samples_per_s"] for r in rows if (r["contender"], r["units"],
                 r["timesteps"], r["task"]) == (contender, units, timesteps, task)]
        return match[0] if match else None

    lines = ["| units, timesteps x features | task | static | dynamic | pipeline | "
             "keras | savedmodel | pytorch | best mnist_rnn / pytorch |",
             "|---|---|---|---|---|---|---|---|---|"]
    for units, timesteps in sorted({(r["units"], r["timesteps"]) for r in rows}):
        for task, ours in (("train", ("static", "dynamic")), ("infer", ("keras", "savedmodel"))):
            cells = [rate(c, units, timesteps, task) for c in
                     ("static", "dynamic", "pipeline", "keras", "savedmodel", "pytorch")]
            best = max((rate(c, units, timesteps, task) or 0) for c in ours)
            torch_rate = rate("pytorch", units, timesteps, task)
            ratio = f"{best / torch_rate:.2f}" if torch_rate else "-"
            lines.append(f"| {units}, {timesteps}x{784 // timesteps} | {task} | " + " | ".join(
                f"{c:,.0f}" if c else "-" for c in cells) + f" | {ratio} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
