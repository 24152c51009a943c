"""tf.distribute strategies (keras.distribution over JAX processes on JAX): which one to use,
and where each worker writes.

In a multi-worker run every worker runs the same program and saves (saving may take part in
collective ops), but only the chief writes to --model_dir; the others write to a directory of
their own that is removed at the end, as TensorFlow's multi-worker guide prescribes.
"""

import json
import os

import tensorflow as tf

from mnist_rnn import compat
from mnist_rnn.config import STRATEGIES
from mnist_rnn.errors import UserError, setting


def make_strategy(name: str) -> tf.distribute.Strategy:
    """A tf.distribute.Strategy for --distribution_strategy=`name`."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}: use one of {', '.join(STRATEGIES)}")
    if not compat.HAS_TF_DISTRIBUTE:
        if name == "mirrored":
            raise UserError(f"{setting('distribution_strategy', name)} is a tf.distribute "
                            "strategy, which needs the TensorFlow backend: run on "
                            f"{compat.switch_to(compat.KERAS3_TENSORFLOW)}")
        if name == "multi_worker":
            compat.start_jax_processes(setting("distribution_strategy", name))
        return tf.distribute.get_strategy()  # No tf.distribute: JAX places the work.
    if name == "multi_worker":  # Before anything else touches the TensorFlow runtime.
        if not compat.MULTI_WORKER_FIT:
            raise UserError(
                f"{setting('distribution_strategy', name)} needs Keras 2 or JAX: Keras 3's "
                "fit does not support MultiWorkerMirroredStrategy yet; run on "
                f"{compat.switch_to(compat.KERAS2)}, or on "
                f"{compat.switch_to(compat.KERAS3_JAX)} (see docs/runtimes.md)")
        if not os.environ.get("TF_CONFIG"):
            raise UserError(f"{setting('distribution_strategy', name)} needs TF_CONFIG: see "
                            "docs/runtimes.md")
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) >= 2 else tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    # mirrored: over all GPUs; without GPUs, over all (logical) CPUs.
    devices = None if gpus else [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)


def jax_processes() -> int:
    """How many processes a JAX run is made of (1 on TensorFlow)."""
    return compat.process()[1]


def task() -> tuple[str, int]:
    """(type, index) of this process in TF_CONFIG; ("chief", 0) without one. In a run over
    several JAX processes, ("chief", 0) or ("process", its index)."""
    index, count = compat.process()
    if count > 1:
        return ("chief", 0) if index == 0 else ("process", index)
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task_info = config.get("task") or {}
    return task_info.get("type", "chief"), int(task_info.get("index", 0))


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    if jax_processes() > 1:
        return task()[0] == "chief"
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, index = task()
    cluster = json.loads(os.environ["TF_CONFIG"]).get("cluster", {})
    # Without a "chief" entry, worker 0 is the chief.
    return task_type == "chief" or (task_type == "worker" and index == 0
                                    and "chief" not in cluster)


def write_dir(model_dir: str, strategy: tf.distribute.Strategy) -> str:
    """Where this worker writes: --model_dir for the chief, a private directory otherwise."""
    if is_chief(strategy):
        return model_dir
    task_type, index = task()
    return os.path.join(model_dir, f"{task_type}_{index}_temp")


def is_default(strategy: tf.distribute.Strategy) -> bool:
    """True for TensorFlow's default strategy: no tf.distribute at work."""
    return not tf.distribute.has_strategy() and strategy is tf.distribute.get_strategy()


def describe(strategy: tf.distribute.Strategy, global_batch: int) -> str:
    processes = jax_processes()
    if processes > 1:
        return (f"keras.distribution DataParallel over {processes} JAX processes: global batch "
                f"{global_batch}, {global_batch // processes} per process")
    replicas = strategy.num_replicas_in_sync
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        name = "MultiWorkerMirroredStrategy"  # Its class is an alias with another name.
    elif is_default(strategy):
        name = "the default strategy"
    else:
        name = type(strategy).__name__
    return (f"{name} with {replicas} replica(s): global batch {global_batch}, "
            f"{global_batch // replicas} per replica")
