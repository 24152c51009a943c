"""Time to a test accuracy on full MNIST, from process start: our flagfile against the recipe of
pytorch/examples `mnist_rnn/main.py`, each in a process of its own, one after the other, on
the same four published files and the same machine.

    python benchmarks/time_to_accuracy.py --mnist_dir=../shared/data/mnist \
        --flagfile=flags/mnist99.flags --out=benchmarks/time_to_accuracy.json

Ours is `python -m mnist_rnn.train --flagfile=...` (full MNIST prepared in --data_dir once,
before any timing). The recipe is rewritten below as it reads: LSTM(28 -> 64), BatchNorm1d,
Dropout2d(0.25), Linear(64, 32), ReLU, Dropout2d(0.5), Linear(32, 10), log-softmax and NLL;
Adadelta lr 0.1, multiplied by 0.7 after each epoch; batch 64 shuffled, test batch 1000,
14 epochs, inputs normalized by (0.1307, 0.3081), seed 1. It reads the .gz files into
in-memory tensors (torchvision's MNIST class would download them). Each test evaluation's time
is taken by this process when the line saying it arrives.
"""

import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = (0.97, 0.98, 0.99)
# Our evaluation line: "time 19.6s  step 160  epoch 4  test accuracy 0.9200  test loss 0.2704".
OUR_LINE = re.compile(r"step +(\d+) +epoch +(\d+) +test accuracy ([\d.]+)")


def read_idx(path: str) -> np.ndarray:
    """The array of one of MNIST's gzipped IDX files."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def torch_recipe(mnist_dir: str, epochs: int = 14) -> None:
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

    torch.manual_seed(1)

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
    parser.add_argument("--seeds", default="0", help="our runs' seeds, comma-separated")
    parser.add_argument("--out", default=None, help="JSON results file")
    parser.add_argument("--torch_child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    mnist_dir = os.path.abspath(args.mnist_dir)
    if args.torch_child:
        return torch_recipe(mnist_dir)

    sys.path.insert(0, ROOT)
    from mnist_rnn import data

    data_dir = args.data_dir or tempfile.mkdtemp(prefix="tfds-")
    data.resolve_dataset("auto", data_dir, mnist_dir=mnist_dir)
    data.prepare_mnist(mnist_dir, data_dir)  # Before any timing, as for a user's second run.
    results = {"machine": _cpu(), "flagfile": args.flagfile, "ours": {}}
    for seed in args.seeds.split(","):
        with tempfile.TemporaryDirectory() as model_dir:
            results["ours"][seed] = summary(timed(
                [sys.executable, "-m", "mnist_rnn.train", f"--flagfile={args.flagfile}",
                 f"--mnist_dir={mnist_dir}", f"--data_dir={data_dir}", f"--seed={seed}",
                 f"--model_dir={model_dir}/run"], _ours))
        print("ours, seed", seed, json.dumps(results["ours"][seed]["reached"]), flush=True)
    results["pytorch_examples_mnist_rnn"] = summary(timed(
        [sys.executable, __file__, f"--mnist_dir={mnist_dir}", "--torch_child"], _theirs))
    print("pytorch/examples mnist_rnn",
          json.dumps(results["pytorch_examples_mnist_rnn"]["reached"]), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")


def _cpu() -> str:
    with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f
                      if line.startswith("model name")), "unknown")
    import torch

    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__}"


if __name__ == "__main__":
    main()
