"""Time to a test accuracy on full MNIST, from process start: our flagfile against PyTorch,
each run in a process of its own, the contenders interleaved seed by seed, on the same four
published files and the same machine.

    python benchmarks/time_to_accuracy.py --mnist_dir=../shared/data/mnist \
        --flagfile=flags/mnist99.flags --seeds=0,1,2,3,4,5,6,7,8,9 --torch_seeds=5 \
        --out=benchmarks/time_to_accuracy.json

The contenders:
- `ours`: `python -m mnist_rnn.train --flagfile=...` (full MNIST prepared in --data_dir once,
  before any timing).
- `pytorch_ours`: the flagfile's own recipe, read from the flagfile, as a PyTorch user writes it:
  nn.LSTM(features, units) and Linear(units, 10) on the last hidden state, pixels / 255 in
  `timesteps` rows, Adam at the flagfile's rate and schedule (Keras's CosineDecay, per step),
  its batch and epochs, the test set after each epoch, stopping at its target.
- `pytorch_fast`: the fastest PyTorch recipe found for the same model (FAST_RECIPE below), with
  Keras's initialisers (FAST_INIT).
- `pytorch_examples` (only when asked): the recipe of pytorch/examples `mnist_rnn/main.py` as it
  reads: LSTM(28 -> 64), BatchNorm1d, Dropout2d(0.25), Linear(64, 32), ReLU, Dropout2d(0.5),
  Linear(32, 10), log-softmax and NLL; Adadelta 0.1 times 0.7 per epoch; batch 64, 14 epochs.
Each PyTorch contender reads the .gz files into in-memory tensors. Each test evaluation's time is
taken by this process when the line saying it arrives.
"""

import argparse
import dataclasses
import gzip
import json
import math
import os
import statistics
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from mnist_rnn.config import TrainConfig  # noqa: E402

TARGETS = (0.97, 0.98, 0.99)
CONTENDERS = ("ours", "pytorch_ours", "pytorch_fast", "pytorch_examples")
# The fastest PyTorch recipe found for the model (128 units, 28 rows of 28 pixels): batch 128,
# Adam from 0.006 down a cosine to 0 over 7 epochs, stopping at 0.99.
FAST_RECIPE = TrainConfig(rnn="static", units=128, timesteps=28, batch_size=128,
                          learning_rate=0.006, lr_schedule="cosine", epochs=7,
                          target_accuracy=0.99)
# Keras's initialisers: with them PyTorch reaches 0.99 on this recipe more often than with its
# own (benchmarks/README.md).
FAST_INIT = "keras"
# Our evaluation line: "time 19.6s  step 160  epoch 4  test accuracy 0.9200  test loss 0.2704".
OUR_LINE = re.compile(r"step +(\d+) +epoch +(\d+) +test accuracy ([\d.]+)")


def read_idx(path: str) -> np.ndarray:
    """The array of one of MNIST's gzipped IDX files."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def recipe_of(flagfile: str) -> TrainConfig:
    """The TrainConfig that `python -m mnist_rnn.train --flagfile=flagfile` trains with."""
    from absl import flags

    from mnist_rnn import train

    values = flags.FlagValues()
    train.define_flags(values)
    values(["time_to_accuracy", f"--flagfile={flagfile}"])
    return train.config_from_flags(values)


def torch_schedule(recipe: TrainConfig, steps_per_epoch: int):
    """The factor on Adam's rate after `step` steps, as a PyTorch user writes the recipe's
    schedule: Keras's CosineDecay (to 0 at the last step) or constant."""
    total = max(1, recipe.last_step(steps_per_epoch))
    if recipe.lr_schedule == "constant":
        return lambda step: 1.0
    return lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))


def mnist_tensors(mnist_dir: str, prefix: str, timesteps: int = 28):
    """A split's images as float rows [n, timesteps, 784 / timesteps] in [0, 1], and labels."""
    import torch

    images = read_idx(os.path.join(mnist_dir, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(mnist_dir, f"{prefix}-labels-idx1-ubyte.gz"))
    x = torch.from_numpy(images.astype(np.float32) / 255).reshape(len(images), timesteps, -1)
    return x, torch.from_numpy(labels.astype(np.int64))


def keras_init(model) -> None:
    """Keras's LSTM and Dense initialisers on the PyTorch model, as a PyTorch user who knows
    them writes: Glorot-uniform input and output weights, orthogonal recurrent weights (per
    gate), zero biases but 1 on the forget gate."""
    import torch

    lstm, units = model.lstm, model.lstm.hidden_size
    with torch.no_grad():
        torch.nn.init.xavier_uniform_(lstm.weight_ih_l0)
        for gate in range(4):
            torch.nn.init.orthogonal_(lstm.weight_hh_l0[gate * units:(gate + 1) * units])
        lstm.bias_ih_l0.zero_()
        lstm.bias_hh_l0.zero_()
        lstm.bias_ih_l0[units:2 * units] = 1.0  # PyTorch's gate order: input, forget, ...
        torch.nn.init.xavier_uniform_(model.logits.weight)
        model.logits.bias.zero_()


def torch_lstm(mnist_dir: str, recipe: TrainConfig, seed: int, init: str = "pytorch") -> None:
    """`recipe` trained in PyTorch, printing one JSON line per test evaluation (each epoch).
    init: PyTorch's own initialisers, or "keras" (keras_init)."""
    import torch

    from common import torch_model

    torch.manual_seed(seed)
    (train_x, train_y), (test_x, test_y) = (mnist_tensors(mnist_dir, p, recipe.timesteps)
                                            for p in ("train", "t10k"))
    model = torch_model(recipe.units, train_x.shape[-1])
    if init == "keras":
        keras_init(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.learning_rate)
    steps_per_epoch = math.ceil(len(train_x) / recipe.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                  torch_schedule(recipe, steps_per_epoch))
    loss_fn = torch.nn.CrossEntropyLoss()
    for epoch in range(1, recipe.epochs + 1):
        model.train()
        for index in torch.randperm(len(train_x)).split(recipe.batch_size):
            optimizer.zero_grad()
            loss_fn(model(train_x[index]), train_y[index]).backward()
            optimizer.step()
            scheduler.step()
        model.eval()
        with torch.no_grad():
            correct = sum((model(x).argmax(1) == y).sum().item()
                          for x, y in zip(test_x.split(1000), test_y.split(1000)))
        accuracy = correct / len(test_x)
        print(json.dumps({"epoch": epoch, "accuracy": accuracy}), flush=True)
        if recipe.target_accuracy and accuracy >= recipe.target_accuracy:
            return


def torch_examples(mnist_dir: str, seed: int = 1, epochs: int = 14) -> None:
    """pytorch/examples mnist_rnn, printing one JSON line per test evaluation."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(input_size=28, hidden_size=64, batch_first=True)
            self.batchnorm = nn.BatchNorm1d(64)
            self.dropout1 = nn.Dropout2d(0.25)
            self.dropout2 = nn.Dropout2d(0.5)
            self.fc1 = nn.Linear(64, 32)
            self.fc2 = nn.Linear(32, 10)

        def forward(self, x):
            output, _ = self.rnn(x.reshape(-1, 28, 28))
            output = self.batchnorm(output[:, -1, :])
            output = self.fc2(self.dropout2(F.relu(self.fc1(self.dropout1(output)))))
            return F.log_softmax(output, dim=1)

    torch.manual_seed(seed)

    def tensors(prefix):
        images = read_idx(os.path.join(mnist_dir, f"{prefix}-images-idx3-ubyte.gz"))
        labels = read_idx(os.path.join(mnist_dir, f"{prefix}-labels-idx1-ubyte.gz"))
        x = (torch.from_numpy(images.astype(np.float32) / 255) - 0.1307) / 0.3081
        return x, torch.from_numpy(labels.astype(np.int64))

    (train_x, train_y), (test_x, test_y) = tensors("train"), tensors("t10k")
    model = Net()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    for epoch in range(1, epochs + 1):
        model.train()
        for index in torch.randperm(len(train_x)).split(64):
            optimizer.zero_grad()
            F.nll_loss(model(train_x[index]), train_y[index]).backward()
            optimizer.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for index in torch.randperm(len(test_x)).split(1000):
                correct += (model(test_x[index]).argmax(1) == test_y[index]).sum().item()
        print(json.dumps({"epoch": epoch, "accuracy": correct / len(test_x)}), flush=True)
        scheduler.step()


def timed(command: list[str], parse) -> list[dict]:
    """Runs `command`; each stdout line that `parse` turns into a dict is kept, with the
    seconds from the process's start to the line."""
    began = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    evaluations = []
    for line in process.stdout:
        evaluation = parse(line)
        if evaluation:
            evaluations.append({**evaluation, "time_s": round(time.monotonic() - began, 1)})
    if process.wait():
        raise SystemExit(f"{command} failed with exit status {process.returncode}")
    return evaluations


def _ours(line: str) -> dict | None:
    match = OUR_LINE.search(line)
    return match and {"step": int(match[1]), "epoch": int(match[2]),
                      "accuracy": float(match[3])}


def _theirs(line: str) -> dict | None:
    return json.loads(line) if line.startswith("{") else None


def summary(evaluations: list[dict]) -> dict:
    """The time (and epoch) of the first evaluation at or above each target, and the best."""
    reached = {}
    for target in TARGETS:
        first = next((e for e in evaluations if e["accuracy"] >= target), None)
        reached[str(target)] = first and {"time_s": first["time_s"], "epoch": first["epoch"]}
    return {"reached": reached, "best_accuracy": max(e["accuracy"] for e in evaluations),
            "evaluations": evaluations}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist_dir", required=True, help="the four published MNIST files")
    parser.add_argument("--flagfile", default="flags/mnist99.flags")
    parser.add_argument("--data_dir", default=None, help="TFDS data dir (default: a new one)")
    parser.add_argument("--seeds", default="0,1,2,3,4,5,6,7,8,9", help="our runs' seeds")
    parser.add_argument("--torch_seeds", type=int, default=5,
                        help="each PyTorch contender runs the first this many of --seeds")
    parser.add_argument("--contenders", default="ours,pytorch_ours,pytorch_fast",
                        help=f"comma-separated, of {', '.join(CONTENDERS)}")
    parser.add_argument("--out", default=None, help="JSON results file")
    parser.add_argument("--child", choices=CONTENDERS[1:], help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    mnist_dir = os.path.abspath(args.mnist_dir)
    if args.child:
        return run_child(args.child, mnist_dir, args.flagfile, args.seed)

    from mnist_rnn.data import sources

    data_dir = args.data_dir or tempfile.mkdtemp(prefix="tfds-")
    sources.resolve_dataset("auto", data_dir, mnist_dir=mnist_dir)
    sources.prepare_mnist(mnist_dir, data_dir)  # Before any timing, as for a user's second run.
    contenders = args.contenders.split(",")
    seeds = args.seeds.split(",")
    results = {"machine": _cpu(), "flagfile": args.flagfile,
               "recipe": dataclasses.asdict(recipe_of(args.flagfile)),
               "fast_recipe": dataclasses.asdict(FAST_RECIPE),
               "runs": {c: {} for c in contenders}}
    for index, seed in enumerate(seeds):  # Interleaved: a drift of the machine hits all.
        for contender in contenders:
            if contender != "ours" and index >= args.torch_seeds:
                continue
            with tempfile.TemporaryDirectory() as model_dir:  # Ours writes a run; it goes.
                evaluations = timed(
                    _command(contender, args, mnist_dir, data_dir, seed, model_dir),
                    _ours if contender == "ours" else _theirs)
            results["runs"][contender][seed] = summary(evaluations)
            print(contender, "seed", seed, json.dumps(results["runs"][contender][seed]["reached"]),
                  flush=True)
    results["medians"] = {c: medians(runs) for c, runs in results["runs"].items()}
    print(table(results["medians"], results["runs"]))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")


def run_child(contender: str, mnist_dir: str, flagfile: str, seed: int) -> None:
    if contender == "pytorch_examples":
        return torch_examples(mnist_dir, seed)
    if contender == "pytorch_ours":
        return torch_lstm(mnist_dir, recipe_of(flagfile), seed)
    return torch_lstm(mnist_dir, FAST_RECIPE, seed, init=FAST_INIT)


def _command(contender: str, args, mnist_dir: str, data_dir: str, seed: str,
             model_dir: str) -> list[str]:
    if contender != "ours":
        return [sys.executable, __file__, f"--mnist_dir={mnist_dir}", f"--child={contender}",
                f"--flagfile={args.flagfile}", f"--seed={seed}"]
    return [sys.executable, "-m", "mnist_rnn.train", f"--flagfile={args.flagfile}",
            f"--mnist_dir={mnist_dir}", f"--data_dir={data_dir}", f"--seed={seed}",
            f"--model_dir={model_dir}/run"]


def medians(runs: dict) -> dict:
    """Per target, the median time over the seeds (a seed that never got there counts as
    never: infinity) and how many seeds got there."""
    out = {}
    for target in map(str, TARGETS):
        times = [r["reached"][target]["time_s"] if r["reached"][target] else math.inf
                 for r in runs.values()]
        out[target] = {"median_s": statistics.median(times) if times else None,
                       "reached": sum(t < math.inf for t in times), "seeds": len(times)}
    return out


def table(medians_: dict, runs: dict) -> str:
    """The race as a markdown table: median time to each target, and ours over each."""
    lines = ["| contender | seeds | " + " | ".join(f"to {t}" for t in TARGETS) + " |",
             "|---|---|" + "---|" * len(TARGETS)]
    ours = medians_.get("ours")
    for contender, by_target in medians_.items():
        cells = []
        for target in map(str, TARGETS):
            m = by_target[target]
            text = "never" if m["median_s"] in (None, math.inf) else f"{m['median_s']:.1f} s"
            text += f" ({m['reached']}/{m['seeds']})"
            if ours and contender != "ours" and ours[target]["median_s"]:
                ratio = m["median_s"] / ours[target]["median_s"]
                text += f", {ratio:.2f}x ours" if math.isfinite(ratio) else ""
            cells.append(text)
        lines.append(f"| {contender} | {len(runs[contender])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cpu() -> str:
    with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f
                      if line.startswith("model name")), "unknown")
    import torch

    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__}"


if __name__ == "__main__":
    main()
