"""Static vs dynamic, measured: runs each configuration in its own process (measure.py),
gives up on one that has not finished its first step within the compile timeout, and writes
compare.json, compare.md, compare.png and TensorBoard graphs."""

import importlib.metadata
import json
import os
import platform
import select
import subprocess
import sys
import time

from mnist_rnn import files
from mnist_rnn.config import RNNS
from mnist_rnn.study.measure import DEFAULTS, STEPS, WARMUP

TENSORBOARD_DIR = "tensorboard"
# How long a configuration may take to its first step before it is reported as too slow.
COMPILE_TIMEOUT_S = 120.0
ROW_FIELDS = ("backend", "rnn", "timesteps", "features", "variable_length", "status",
              "time_to_first_step_s", "ms_per_step", "samples_per_s", "peak_rss_mb",
              "train_step_ops", "cell_copies", "while_ops", "saved_model_mb",
              "accepts_other_length", "mean_timesteps_per_batch", "test_accuracy")


def run_measurement(params, compile_timeout, timeout=900, backend="tensorflow"):
    """Runs measure.py on `params` in a subprocess on Keras 3's `backend`. Returns its result
    row; when the first step is not done `compile_timeout` seconds after the model is ready,
    the row says so."""
    command = [sys.executable, "-m", "mnist_rnn.study.measure", json.dumps(params)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, bufsize=1,
                               env={**os.environ, "KERAS_BACKEND": backend})
    row = {**params, "backend": backend, "status": "error"}
    started = ready_at = time.monotonic()
    deadline, phase = started + timeout, "start"
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                row["status"] = "compile_timeout" if phase == "ready" else "timeout"
                since = ready_at if phase == "ready" else started
                row["timed_out_after_s"] = round(time.monotonic() - since, 1)
                break
            readable, _, _ = select.select([process.stdout], [], [], remaining)
            if not readable:
                continue
            line = process.stdout.readline()
            if not line:  # The process ended.
                process.wait()
                if row["status"] == "error":
                    row["error"] = process.stderr.read().strip().splitlines()[-1:]
                break
            if not line.startswith("{"):
                continue
            event = json.loads(line)
            if event["event"] == "ready":
                phase, ready_at = "ready", time.monotonic()
                deadline = min(deadline, ready_at + compile_timeout)
            elif event["event"] == "first_step":
                phase, deadline = "training", started + timeout
                row["time_to_first_step_s"] = event["time_to_first_step_s"]
            elif event["event"] == "result":
                row.update(event, status="ok")
                row.pop("event")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()
    return row


def compare(timesteps_list, output_dir, units=DEFAULTS.units, batch_size=DEFAULTS.batch_size,
            steps=STEPS, compile_timeout=COMPILE_TIMEOUT_S, dataset="mnist_sample", data_dir=None,
            variable_length=True, backends=("tensorflow",), log=print):
    """Measures static and dynamic at each timesteps value on each of Keras 3's `backends`
    (and, on TensorFlow, dynamic with variable-length batches when `variable_length`: on
    JAX they run at full length, masked); writes the report files; returns the report."""
    files.ensure_writable_dir(output_dir, "output_dir")
    graph_timesteps = 28 if 28 in timesteps_list else min(timesteps_list)
    rows = []
    for backend in backends:
        tensorflow = backend == "tensorflow"
        for timesteps in timesteps_list:
            runs = [(rnn, False) for rnn in RNNS] + (
                [("dynamic", True)] if variable_length and tensorflow else [])
            for rnn, variable in runs:
                tensorboard = (os.path.join(output_dir, TENSORBOARD_DIR, rnn)
                               if timesteps == graph_timesteps and not variable and tensorflow
                               else None)
                params = dict(rnn=rnn, timesteps=timesteps, units=units,
                              batch_size=batch_size, steps=steps, dataset=dataset,
                              data_dir=data_dir, variable_length=variable,
                              tensorboard_dir=tensorboard)
                row = {"backend": backend, **params}
                log(f"measuring {variant(row)}, {timesteps} timesteps ...")
                row = run_measurement(params, compile_timeout, backend=backend)
                row.pop("tensorboard_dir", None)
                rows.append(row)
                log("  " + format_row(row))
    report = {
        "config": dict(units=units, batch_size=batch_size, steps=steps,
                       compile_timeout_s=compile_timeout, dataset=dataset,
                       timesteps=list(timesteps_list), tensorboard_timesteps=graph_timesteps,
                       backends=list(backends)),
        "machine": machine(),
        "rows": rows,
    }
    files.write_or_fail(write_report, report, output_dir)
    return report


def write_report(report: dict, output_dir: str) -> None:
    """compare.json, compare.md and compare.png into `output_dir`, all or none of them."""
    with files.all_or_nothing():
        files.write_json(os.path.join(output_dir, "compare.json"), report)
        files.write_text(os.path.join(output_dir, "compare.md"), markdown(report))
        chart(report, os.path.join(output_dir, "compare.png"))


def machine():
    import tensorflow as tf

    found = {"platform": platform.platform(), "processor": platform.processor(),
             "cpus": os.cpu_count(), "tensorflow": tf.__version__,
             "gpus": [d.name for d in tf.config.list_physical_devices("GPU")]}
    try:
        found["jax"] = importlib.metadata.version("jax")
    except importlib.metadata.PackageNotFoundError:
        pass
    return found


def _value(row, field, digits=1):
    value = row.get(field)
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def format_row(row):
    if row["status"] != "ok":
        after = row.get("timed_out_after_s")
        return f"{row['status']}" + (f" after {after} s" if after is not None else "") + (
            f": {row['error']}" if row.get("error") else "")
    return (f"first step {row['time_to_first_step_s']:.1f} s, {row['ms_per_step']:.1f} ms/step, "
            f"{row['samples_per_s']:,.0f} samples/s, {row['peak_rss_mb']:,.0f} MB, "
            f"{row['train_step_ops']:,} ops, {row['cell_copies']} cell copies, "
            f"{row['while_ops']} While, accuracy {row['test_accuracy']:.3f}")


COLUMNS = [
    ("variant", None), ("timesteps", "timesteps"), ("first step (s)", "time_to_first_step_s"),
    ("ms/step", "ms_per_step"), ("samples/s", "samples_per_s"), ("peak RSS (MB)", "peak_rss_mb"),
    ("train-step ops", "train_step_ops"), ("cell copies", "cell_copies"),
    ("While ops", "while_ops"), ("SavedModel (MB)", "saved_model_mb"),
    ("other length", "accepts_other_length"), ("mean steps/batch", "mean_timesteps_per_batch"),
    ("test accuracy", "test_accuracy"), ("status", "status"),
]


TFLITE_COLUMNS = [
    ("variant", None), ("timesteps", "timesteps"), ("built-in ops only", "tflite_builtin_only"),
    ("WHILE", "tflite_while"), ("fused LSTM op", "tflite_fused_lstm"),
    ("batch", "tflite_batch"), ("convert (s)", "tflite_convert_s"),
    ("peak RSS after (MB)", "tflite_peak_rss_mb"),
    ("float32 KB", "tflite_kb"), ("int8 KB", "tflite_int8_kb"),
    ("float32 ms/image", "tflite_ms"), ("int8 ms/image", "tflite_int8_ms"),
    ("Keras accuracy", "test_accuracy"), ("float32 accuracy", "tflite_test_accuracy"),
    ("int8 accuracy", "tflite_int8_test_accuracy"),
]


def variant(row):
    """static, dynamic or dynamic variable-length; "JAX ..." on the JAX backend."""
    return ("JAX " if row.get("backend") == "jax" else "") + row["rnn"] + (
        " variable-length" if row.get("variable_length") else "")


def markdown(report):
    config = report["config"]
    lines = [
        f"Units {config['units']}, batch {config['batch_size']}, {config['steps']} timed steps "
        f"after a first step and {WARMUP} warm-up steps, dataset {config['dataset']}; "
        f"{report['machine']['cpus']} CPUs, TensorFlow {report['machine']['tensorflow']}"
        + (f", JAX {report['machine']['jax']}" if "jax" in report["machine"] else "") + ".",
        "",
        *([] if "jax" not in config.get("backends", []) else [
            "JAX rows: Keras 3 on JAX, where the static model is a Python-unrolled program and "
            "the dynamic one a lax.scan, both compiled by XLA; their train-step ops are the "
            "primitives of the training step's jaxpr, their While ops its scan loops.", ""]),
        "| " + " | ".join(name for name, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in report["rows"]:
        cells = [variant(row)] + [
            _value(row, field, 3 if field == "test_accuracy" else 1) for _, field in COLUMNS[1:]]
        if row["status"] == "compile_timeout":
            cells[2] = f"> {config['compile_timeout_s']}"
        lines.append("| " + " | ".join(cells) + " |")
    tflite = tflite_markdown(report)
    return "\n".join(lines + (["", *tflite] if tflite else [])) + "\n"


def tflite_markdown(report):
    """The TFLite table: each model converted with built-in ops only, in the interpreter."""
    rows = [r for r in report["rows"] if r["status"] == "ok"
            and r.get("backend", "tensorflow") == "tensorflow"]  # TFLite reads TF graphs.
    if not rows:
        return []
    runtime = next((r["tflite_runtime"] for r in rows if r.get("tflite_runtime")), "-")
    lines = [
        f"TFLite (float32 and dynamic-range int8) in {runtime}, one image per call on one "
        "thread (median of 200); accuracy over the same test split.",
        "",
        "| " + " | ".join(name for name, _ in TFLITE_COLUMNS) + " |",
        "|" + "---|" * len(TFLITE_COLUMNS),
    ]
    for row in rows:
        lines.append("| " + " | ".join(
            [variant(row)] + [_value(row, field, 3 if field.endswith(("_ms", "accuracy")) else 1)
                              for _, field in TFLITE_COLUMNS[1:]]) + " |")
        if row.get("tflite_error"):
            lines.append(f"| | | {row['tflite_error']} |")
    return lines


def chart(report, path):
    """Time to first step, step time, memory and graph size against timesteps."""
    plt = files.pyplot()
    panels = [("time_to_first_step_s", "time to first step (s)", "log"),
              ("ms_per_step", "ms per training step", "linear"),
              ("peak_rss_mb", "peak resident memory (MB)", "linear"),
              ("train_step_ops", "ops in the training step", "log")]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
    timeout = report["config"]["compile_timeout_s"]
    for ax, (field, title, yscale) in zip(axes.flat, panels):
        values = []
        for name, style in (("static", "o-"), ("dynamic", "s-"),
                            ("dynamic variable-length", "^--"), ("JAX static", "o:"),
                            ("JAX dynamic", "s:")):
            rows = [r for r in report["rows"] if variant(r) == name]
            done = [r for r in rows if r.get(field) is not None]
            values += [r[field] for r in done]
            if done:
                ax.plot([r["timesteps"] for r in done], [r[field] for r in done], style,
                        label=name)
            late = [r for r in rows if r["status"] == "compile_timeout"]
            if late and field == "time_to_first_step_s":
                ax.plot([r["timesteps"] for r in late], [timeout] * len(late), "rx",
                        markersize=10, label=f"{name}: over {timeout} s")
                values.append(timeout)
        if not any(v > 0 for v in values):
            yscale = "linear"  # Nothing measured: log of nothing is undefined.
        ax.set(title=title, xlabel="timesteps", xscale="log", yscale=yscale)
        ax.set_xticks(report["config"]["timesteps"],
                      [str(t) for t in report["config"]["timesteps"]])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle("Static (unrolled) vs dynamic (while loop) LSTM, "
                 f"{report['config']['units']} units, batch {report['config']['batch_size']}")
    fig.tight_layout()
    files.save_figure(fig, path, dpi=100)
    plt.close(fig)
