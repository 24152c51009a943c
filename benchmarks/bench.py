"""Training and serving: mnist_rnn (static and dynamic, trained exactly as
`python -m mnist_rnn.train` trains, on Keras 3's TensorFlow backend and on its JAX backend,
served by its SavedModel) against a PyTorch nn.LSTM of the same shape.

    python benchmarks/bench.py [--quick] [--json=PATH] [--rounds=3] [--steps=40] [--train_only]

Contenders are interleaved (A B C A B C ...) and each number is the median of the rounds, so
that a slow moment of the machine hits every contender alike. Without torch installed (the
`bench` extra), or without JAX (the `jax` extra), it says so and measures the others.
"""

import argparse
import importlib.util
import io
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from common import BATCH, torch_model, torch_train, torch_train_arrays, whole

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = [(100, 28), (256, 28), (128, 196), (128, 784)]  # (units, timesteps)
QUICK_CONFIGS = [(32, 28)]
JAX_MAX_UNROLLED_STEPS = 28


def keras_train(rnn, units, timesteps, steps, data_dir):
    """Steady-state training samples/s of `python -m mnist_rnn.train` with its defaults."""
    
    from mnist_rnn.train import train_and_evaluate
    from mnist_rnn.training.callbacks import WARMUP_STEPS
    from mnist_rnn.config import TrainConfig

    group = TrainConfig().steps_per_execution  # Stop on a group boundary, or groups shrink.
    with tempfile.TemporaryDirectory() as model_dir:
        config = TrainConfig(
            rnn=rnn, units=units, timesteps=timesteps, batch_size=BATCH,
            max_steps=whole(WARMUP_STEPS, group) + whole(steps, group), epochs=100,
            dataset="mnist_sample", data_dir=data_dir, model_dir=model_dir, export=False,
            tensorboard=False, verbose=0)  # Logs would not change the steady rate it reads.
        _, metrics = train_and_evaluate(config, out=io.StringIO())
    return metrics["steady_train_samples_per_s"]


def keras_train_on(backend, rnn, units, timesteps, steps, data_dir):
    """keras_train on Keras 3's `backend`, in a process of its own (Keras picks its backend
    once per process)."""
    job = json.dumps(dict(rnn=rnn, units=units, timesteps=timesteps, steps=steps,
                          data_dir=data_dir))
    done = subprocess.run([sys.executable, os.path.abspath(__file__), f"--train_one={job}"],
                          env={**os.environ, "KERAS_BACKEND": backend}, capture_output=True,
                          text=True)
    if done.returncode:
        raise RuntimeError(f"{backend} {rnn}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def keras_serve(units, timesteps, quick=False):
    """Serving rows of both variants' SavedModels (random weights; quick: dynamic only): the
    plain graph of the earlier versions, and the export's default (compiled by XLA where it
    pays), each measured by serve.py in a fresh process."""
    from mnist_rnn.serving import saved_model
    from mnist_rnn.model.lstm import build_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for rnn in ("dynamic",) if quick else ("static", "dynamic"):
            model = build_model(rnn, units, timesteps, 784 // timesteps, seed=0)
            for xla in ("off", "auto") if saved_model.uses_xla(model) else ("off",):
                path = os.path.join(tmp, f"{rnn}_{xla}")
                saved_model.export_saved_model(model, path, xla)
                probe = subprocess.run(
                    [sys.executable, os.path.join(HERE, "serve.py"), path]
                    + ["--quick"] * quick, capture_output=True, text=True, check=True)
                rows.append({"contender": f"{rnn} {'compiled' if xla == 'auto' else 'plain'}",
                             **json.loads(probe.stdout.strip().splitlines()[-1])})
    return rows


def torch_serve(units, timesteps, images, repeats, calls):
    """PyTorch's batch-1000 throughput and batch-1 latency (p50, p99), as serve.py measures."""
    import torch

    from serve import percentile

    model = torch_model(units, 784 // timesteps).eval()
    x = torch.from_numpy(images.reshape(len(images), timesteps, -1).astype(np.float32) / 255)
    with torch.inference_mode():
        model(x)
        began = time.perf_counter()
        for _ in range(repeats):
            model(x)
        rate = repeats * len(images) / (time.perf_counter() - began)
        latencies = []
        for _ in range(calls):
            began = time.perf_counter()
            model(x[:1])
            latencies.append((time.perf_counter() - began) * 1000)
    return {"contender": "pytorch", "samples_per_s": rate,
            "p50_ms": statistics.median(latencies), "p99_ms": percentile(latencies, 0.99)}


def pipeline(timesteps, data_dir, batches=400):
    """Samples/s the training input pipeline delivers on its own (after its cache is warm)."""
    from mnist_rnn.data import pipeline

    datasets = pipeline.load_datasets("mnist_sample", timesteps, BATCH, data_dir=data_dir)
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
    parser.add_argument("--train_only", action="store_true",
                        help="training rows only (serving takes minutes per configuration)")
    parser.add_argument("--train_one", help=argparse.SUPPRESS)  # keras_train_on's worker.
    args = parser.parse_args()
    if args.train_one:
        print(json.dumps(keras_train(**json.loads(args.train_one))))
        return
    configs, rounds, steps = (QUICK_CONFIGS, 1, 5) if args.quick else (
        CONFIGS, args.rounds, args.steps)
    repeats, batches = (2, 50) if args.quick else (max(1, 20 // rounds), 400)
    if args.configs:
        configs = [tuple(int(n) for n in c.split("x")) for c in args.configs.split(",")]

    have_torch, have_jax = installed()
    from mnist_rnn.data import sample

    images, _ = sample.load_arrays()  # Inference runs on raw uint8 images.
    rows = []
    for units, timesteps in configs:
        contenders = train_contenders(units, timesteps, steps, args.data_dir, args.quick,
                                      have_torch, have_jax)
        samples = {name: [] for name in contenders}
        for _ in range(rounds):  # Interleaved: A B C, A B C, ...
            for name, measure in contenders.items():
                samples[name].append(measure())
        for name, values in samples.items():
            rows.append(dict(contender=name, units=units, timesteps=timesteps,
                             features=784 // timesteps, task="train",
                             samples_per_s=statistics.median(values), rounds=values))
        served = [] if args.train_only else keras_serve(units, timesteps, args.quick)
        if have_torch and not args.train_only:
            served.append(torch_serve(units, timesteps, images[:1000], repeats,
                                      50 if args.quick else 500))
        for row in served:
            rows.append(dict(units=units, timesteps=timesteps, features=784 // timesteps,
                             task="serve", **row))
        rows.append(dict(contender="pipeline", units=units, timesteps=timesteps,
                         features=784 // timesteps, task="train",
                         samples_per_s=pipeline(timesteps, args.data_dir, batches)))
        print(f"measured {units} units, {timesteps}x{784 // timesteps}", file=sys.stderr)
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


def installed() -> tuple[bool, bool]:
    """Whether PyTorch and JAX are installed, each missing one said on stderr."""
    try:
        import torch

        torch.set_num_threads(os.cpu_count())
        have_torch = True
    except ImportError:
        print("torch is not installed (pip install 'mnist_rnn[bench]'): measuring mnist_rnn "
              "alone", file=sys.stderr)
        have_torch = False
    have_jax = importlib.util.find_spec("jax") is not None
    if not have_jax:
        print("JAX is not installed (pip install 'mnist_rnn[jax]'): no Keras-on-JAX rows",
              file=sys.stderr)
    return have_torch, have_jax


def train_contenders(units: int, timesteps: int, steps: int, data_dir: str | None, quick: bool,
                     have_torch: bool, have_jax: bool) -> dict:
    """{contender: a function that trains `steps` steps and returns samples/s}."""
    contenders = {
        "static": lambda: keras_train("static", units, timesteps, steps, data_dir),
        "dynamic": lambda: keras_train("dynamic", units, timesteps, steps, data_dir),
    }
    # Quick: the loop only. The unrolled program only up to JAX_MAX_UNROLLED_STEPS: longer,
    # its training step compiles for minutes (benchmarks/README.md).
    jax_rnns = ("dynamic",) if quick or timesteps > JAX_MAX_UNROLLED_STEPS else (
        "static", "dynamic")
    for rnn in jax_rnns if have_jax else ():
        contenders[f"jax {rnn}"] = lambda rnn=rnn: keras_train_on(
            "jax", rnn, units, timesteps, steps, data_dir)
    if have_torch:
        train_images, train_labels = torch_train_arrays()
        contenders["pytorch"] = lambda: torch_train(units, timesteps, steps, train_images,
                                                    train_labels)
    return contenders


def table(rows):
    """The training table, then the serving one."""
    def rate(contender, units, timesteps, task="train"):
        match = [r["samples_per_s"] for r in rows if (r["contender"], r["units"],
                 r["timesteps"], r["task"]) == (contender, units, timesteps, task)]
        return match[0] if match else None

    def ratio(best, torch_rate):
        return f"{best / torch_rate:.2f}" if best and torch_rate else "-"

    configs = sorted({(r["units"], r["timesteps"]) for r in rows})
    lines = ["Training, samples/s (Keras 3 on TensorFlow, then on JAX):", "",
             "| units, timesteps x features | static | dynamic | JAX static | JAX dynamic | "
             "pipeline | pytorch | best on TF / pytorch | best on JAX / pytorch |",
             "|---|---|---|---|---|---|---|---|---|"]
    for units, timesteps in configs:
        cells = [rate(c, units, timesteps) for c in (
            "static", "dynamic", "jax static", "jax dynamic", "pipeline", "pytorch")]
        best_tf, best_jax = max(cells[0] or 0, cells[1] or 0), max(cells[2] or 0, cells[3] or 0)
        lines.append(f"| {units}, {timesteps}x{784 // timesteps} | " + " | ".join(
            f"{c:,.0f}" if c else "-" for c in cells)
            + f" | {ratio(best_tf, cells[5])} | {ratio(best_jax, cells[5])} |")
    if not any(r["task"] == "serve" for r in rows):
        return "\n".join(lines)
    lines += ["", "Serving (SavedModel serving_default on raw images; PyTorch inference_mode):",
              "", "| units, timesteps x features | contender | batch 1000, samples/s | "
              "/ pytorch | batch 1 p50 ms | p99 ms | first call of a new batch size, s "
              "(median / max) | XLA programs in the sweep |", "|---|---|---|---|---|---|---|---|"]
    for units, timesteps in configs:
        torch_rate = rate("pytorch", units, timesteps, "serve")
        for r in rows:
            if (r["units"], r["timesteps"], r["task"]) != (units, timesteps, "serve"):
                continue
            first = (f"{r['first_call_median_s']:.3f} / {r['first_call_max_s']:.2f}"
                     if "programs" in r else "-")
            lines.append(
                f"| {units}, {timesteps}x{784 // timesteps} | {r['contender']} | "
                f"{r['samples_per_s']:,.0f} | {ratio(r['samples_per_s'], torch_rate)} | "
                f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                f"{first} | {r.get('programs', '-')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
