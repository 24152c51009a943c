"""One static-vs-dynamic measurement, run in its own process so that its memory is its own.

`python -m mnist_rnn.study.measure '{"rnn": "static", "timesteps": 28, ...}'` prints JSON
lines as it goes: {"event": "ready"}, {"event": "first_step", ...}, {"event": "result", ...},
so that the parent (`comparison.py`) can give up on a configuration that takes too long to compile
and still keep what was measured.
"""

import json
import math
import os
import resource
import sys
import tempfile

from mnist_rnn.config import TrainConfig


def emit(event: str, **fields) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


DEFAULTS = TrainConfig()  # Training's own defaults, for what a measurement leaves unsaid.
STEPS = 50  # Timed training steps, after the first step and the WARMUP steps.
WARMUP = 3  # Steps after the first left untimed: caches, allocation.


def directory_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(path) for name in names)


def measure(rnn: str, timesteps: int, units: int = DEFAULTS.units,
            batch_size: int = DEFAULTS.batch_size, steps: int = STEPS, warmup: int = WARMUP,
            seed: int = DEFAULTS.seed, dataset: str = "mnist_sample",
            data_dir: str | None = None, variable_length: bool = False,
            tensorboard_dir: str | None = None,
            learning_rate: float = DEFAULTS.learning_rate) -> None:
    """Trains `warmup + steps` steps after a first one with the set-up of mnist_rnn.train
    (seeds, op determinism, pipeline, model, optimizer), but one step per call so that each
    is timed; emits the timings, the graph facts, memory, the SavedModel's size and the
    TFLite files' facts."""
    import numpy as np

    from mnist_rnn import compat
    from mnist_rnn.evaluation import report
    from mnist_rnn.model.predictor import KerasPredictor
    from mnist_rnn.study import graphs

    config = TrainConfig(rnn=rnn, units=units, timesteps=timesteps, batch_size=batch_size,
                         learning_rate=learning_rate, seed=seed, dataset=dataset,
                         data_dir=data_dir, variable_length=variable_length)
    model, datasets, timer, lengths = _train_timed(config, 1 + warmup + steps, warmup)
    step_s = 1 / timer.steady_steps_per_s()
    accuracy = report.test_pass(KerasPredictor(model), datasets.test).accuracy

    accepts_other_length = _accepts_other_length(model, timesteps, datasets.features)
    facts = graphs.graph_facts(model)
    saved_model_bytes = _saved_model_bytes(model)
    # Training and the SavedModel's export; the TFLite conversion below needs more.
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lite = tf_graph_facts(model, datasets.test, tensorboard_dir)
    emit(
        "result",
        backend=compat.BACKEND, rnn=rnn, timesteps=timesteps, features=datasets.features,
        units=units, batch_size=batch_size, variable_length=variable_length, dataset=datasets.name,
        steps=steps, time_to_first_step_s=timer.first_step_s,
        ms_per_step=1000 * step_s,
        samples_per_s=batch_size / step_s,
        mean_timesteps_per_batch=float(np.mean(lengths)),
        test_accuracy=accuracy,
        trained_steps=1 + warmup + steps,
        peak_rss_mb=peak_rss_mb,
        saved_model_mb=saved_model_bytes / 2**20,
        accepts_other_length=accepts_other_length,
        **facts,
        **lite,
    )


def _train_timed(config: TrainConfig, total: int, warmup: int):
    """Trains `total` steps as mnist_rnn.train would (seeds, op determinism, pipeline, model,
    optimizer), one step per call; returns the model, the datasets, the StepTimer (which
    leaves out the first step and `warmup` more) and the steps each batch's LSTM runs."""
    from mnist_rnn.data import pipeline, sequences, sources
    from mnist_rnn.model.lstm import build_for, seed as seed_all
    from mnist_rnn.training.callbacks import StepTimer

    seed_all(config.seed)
    datasets = pipeline.load_for(config, sources.resolve_dataset(config.dataset,
                                                                 config.data_dir))
    model = build_for(config, datasets, steps_per_execution=1)
    train = datasets.train_epochs(0, math.ceil(total / datasets.steps_per_epoch)).take(total)
    # Steps the LSTM really runs: each batch's longest stripped sequence.
    lengths = ([int(sequences.strip_blank_steps(x).shape[1]) for x, _ in train]
               if config.variable_length else [config.timesteps])
    emit("ready")
    timer = StepTimer(warmup_steps=1 + warmup,
                      on_first_step=lambda s: emit("first_step", time_to_first_step_s=s))
    model.fit(train, epochs=1, steps_per_epoch=total, verbose=0, shuffle=False,
              callbacks=[timer])
    return model, datasets, timer, lengths


def _accepts_other_length(model, timesteps: int, features: int) -> bool:
    """Whether `model` runs a sequence of half its length."""
    import numpy as np

    try:
        model.predict(np.zeros((1, max(1, timesteps // 2), features), np.float32), verbose=0)
        return True
    except ValueError:
        return False


def _saved_model_bytes(model) -> int:
    """The size of `model`'s SavedModel, as training exports it."""
    from mnist_rnn.serving import saved_model

    with tempfile.TemporaryDirectory() as tmp:
        saved_model.export_saved_model(model, os.path.join(tmp, "saved_model"))
        return directory_bytes(os.path.join(tmp, "saved_model"))


def tf_graph_facts(model, test, tensorboard_dir: str | None) -> dict:
    """What needs TensorFlow graphs, which a model on JAX has none of: the TFLite facts
    (see tflite_facts), and the graph drawn in `tensorboard_dir` when given."""
    from mnist_rnn import compat
    from mnist_rnn.training import tensorboard
    if not compat.HAS_TF_GRAPHS:
        return {}
    if tensorboard_dir:
        tensorboard.write_graph(model, tensorboard_dir)
    return tflite_facts(model, test)


def tflite_facts(model, test) -> dict:
    """The model as TFLite files (float32 and int8) in the LiteRT interpreter: built-in ops
    only or not, its ops, sizes, single-image latency and test accuracy."""
    import time

    import numpy as np

    from mnist_rnn.errors import UserError
    from mnist_rnn.evaluation import report
    from mnist_rnn.serving import tflite

    labels = np.concatenate([np.asarray(y) for _, y in test])
    digits = report.test_images(test, range(len(labels)))
    start = time.perf_counter()
    try:
        float32, int8 = tflite.conversions(model, digits[:50])
    except UserError as e:
        return {"tflite_builtin_only": False, "tflite_error": str(e)}
    info = float32.describe()
    facts = {"tflite_convert_s": time.perf_counter() - start,
             "tflite_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
             "tflite_builtin_only": info["builtin_ops_only"], "tflite_ops": info["ops"],
             "tflite_runtime": info["runtime"], "tflite_batch": info["batch"],
             "tflite_while": info["while_loop"], "tflite_fused_lstm": info["fused_lstm"]}
    for name, conversion in (("tflite", float32), ("tflite_int8", int8)):
        runner = tflite.Runner(conversion.content, threads=1)  # Timed on one core, as on a phone.
        facts[f"{name}_kb"] = len(conversion.content) / 1024
        facts[f"{name}_ms"] = runner.latency_ms(digits[0])
        facts[f"{name}_test_accuracy"] = float(
            (runner.probabilities(digits).argmax(axis=1) == labels).mean())
    return facts


if __name__ == "__main__":
    measure(**json.loads(sys.argv[1]))
