"""The time around the training: `python -m mnist_rnn.train --flagfile=flags/best.flags` and
`python -m mnist_rnn.predict` on one image, this version against an earlier commit, in one run.

    python benchmarks/overhead.py [--before=COMMIT] [--rounds=3] [--json=PATH]

Each command runs as a user runs it, in a process of its own; the versions alternate (before,
this, before, this, ...) and each number is the median of the rounds. "Outside training" is
the command's wall time less the training loop's (metrics.json's wall_time_s: the steps and
the evaluations during training); this version's metrics.json also splits it into phases.
The earlier commit is checked out into a temporary git worktree.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = ["-m", "mnist_rnn.train", "--flagfile=flags/best.flags", "--dataset=mnist_sample"]


def timed(args: list[str], cwd: str, env: dict) -> float:
    """Wall seconds of `python args` run in `cwd` (whose mnist_rnn it imports)."""
    began = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=cwd, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - began


def measure(version: str, cwd: str, scratch: str, env: dict) -> dict:
    """One round of both commands with the code in `cwd`."""
    model_dir = os.path.join(scratch, f"{version}-run")
    wall = timed([*TRAIN, f"--model_dir={model_dir}", "--overwrite"], cwd, env)
    with open(os.path.join(model_dir, "metrics.json")) as f:
        metrics = json.load(f)
    digit = os.path.join(scratch, "digit.npy")
    row = {"version": version, "train_wall_s": wall, "training_s": metrics["wall_time_s"],
           "outside_training_s": wall - metrics["wall_time_s"],
           "phase_s": metrics.get("phase_s")}
    for artifact in ("model.keras", "saved_model"):
        row[f"predict_{artifact}_s"] = timed(
            ["-m", "mnist_rnn.predict", f"--model={os.path.join(model_dir, artifact)}", digit],
            cwd, env)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="825ab8f",
                        help="the earlier commit (default: the last one before these cuts)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="write every round to this JSON file")
    args = parser.parse_args()

    from mnist_rnn.data import sample

    with tempfile.TemporaryDirectory() as scratch:
        before = os.path.join(scratch, "before")
        subprocess.run(["git", "worktree", "add", "--detach", before, args.before], cwd=ROOT,
                       check=True, capture_output=True)
        try:
            images, labels = sample.load_arrays()
            np.save(os.path.join(scratch, "digit.npy"),
                    images[sample.split_indices(labels, "test")[0]])
            env = {**os.environ, "TFDS_DATA_DIR": os.path.join(scratch, "tfds")}
            # Prepares the sample once, untimed.
            timed([*TRAIN, "--dry_run", f"--model_dir={scratch}/prepare"], ROOT, env)
            rows = []
            for _ in range(args.rounds):
                for version, cwd in (("before", before), ("this", ROOT)):
                    rows.append(measure(version, cwd, scratch, env))
                    print(f"measured {version}", file=sys.stderr)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", before], cwd=ROOT)
    print(table(rows, args.before))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


def table(rows: list[dict], before: str) -> str:
    def median(version, key):
        return statistics.median(r[key] for r in rows if r["version"] == version)

    keys = [("train_wall_s", "training command, wall"), ("training_s", "of which training"),
            ("outside_training_s", "outside training"),
            ("predict_model.keras_s", "predict one image, model.keras"),
            ("predict_saved_model_s", "predict one image, saved_model/")]
    lines = [f"| seconds (median of {len(rows) // 2}) | before ({before}) | this | this / before |",
             "|---|---|---|---|"]
    for key, label in keys:
        b, t = median("before", key), median("this", key)
        lines.append(f"| {label} | {b:.1f} | {t:.1f} | {t / b:.2f} |")
    phases = [r["phase_s"] for r in rows if r["version"] == "this" and r["phase_s"]]
    if phases:
        lines.append("")
        lines.append("This version's phases (median s): " + ", ".join(
            f"{name} {statistics.median(p[name] for p in phases):.1f}" for name in phases[0]))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
