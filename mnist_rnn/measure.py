"""One static-vs-dynamic measurement, run in its own process so that its memory is its own.

`python -m mnist_rnn.measure '{"rnn": "static", "timesteps": 28, ...}'` prints JSON lines as
it goes: {"event": "ready"}, {"event": "first_step", ...}, {"event": "result", ...}, so that
the parent (`comparison.py`) can give up on a configuration that takes too long to compile
and still keep what was measured.
"""

import json
import os
import resource
import sys
import tempfile
import time


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


def directory_bytes(path):
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(path) for name in names)


def measure(rnn, timesteps, units=128, batch_size=100, steps=50, warmup=3, seed=0,
            dataset="mnist_sample", data_dir=None, variable_length=False, tensorboard_dir=None,
            learning_rate=0.003):
    """Trains `warmup + steps` steps after a first one, exactly as mnist_rnn.train does, and
    reports the timings, the graph facts, memory and the exported SavedModel's size."""
    from mnist_rnn.compat import keras
    import numpy as np

    from mnist_rnn import data, export, graphs, model as model_lib

    keras.utils.set_random_seed(seed)
    name = data.resolve_dataset(dataset, data_dir)
    datasets = data.load_datasets(name, timesteps, batch_size, seed, data_dir, variable_length)
    model = model_lib.build_model(rnn, units, timesteps, datasets.features, seed=seed,
                                  variable_length=variable_length)
    model_lib.compile_model(model, learning_rate)
    total = 1 + warmup + steps
    epochs = -(-total // datasets.steps_per_epoch)
    ends, lengths = [], []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            ends.append(time.perf_counter())
            if len(ends) == 1:
                emit("first_step", time_to_first_step_s=ends[0] - began)

    train = datasets.train_epochs(0, epochs).take(total)
    if variable_length:  # Steps the LSTM really runs: each batch's longest stripped sequence.
        lengths = [int(data.strip_blank_steps(x).shape[1]) for x, _ in train]
    emit("ready")
    began = time.perf_counter()
    model.fit(train, epochs=1, steps_per_epoch=total, verbose=0, shuffle=False,
              callbacks=[Clock()])
    step_s = (ends[-1] - ends[warmup]) / steps
    _, accuracy = model.evaluate(datasets.test, verbose=0)

    other = max(1, timesteps // 2)
    try:
        model.predict(np.zeros((1, other, datasets.features), np.float32), verbose=0)
        accepts_other_length = True
    except ValueError:
        accepts_other_length = False

    facts = graphs.graph_facts(model)
    with tempfile.TemporaryDirectory() as tmp:
        export.export_saved_model(model, os.path.join(tmp, "saved_model"))
        saved_model_bytes = directory_bytes(os.path.join(tmp, "saved_model"))
    if tensorboard_dir:
        graphs.write_tensorboard_graph(model, tensorboard_dir)
    emit(
        "result",
        rnn=rnn, timesteps=timesteps, features=datasets.features, units=units,
        batch_size=batch_size, variable_length=variable_length, dataset=name, steps=steps,
        time_to_first_step_s=ends[0] - began,
        ms_per_step=1000 * step_s,
        samples_per_s=batch_size / step_s,
        mean_timesteps_per_batch=float(np.mean(lengths)) if lengths else float(timesteps),
        test_accuracy=float(accuracy),
        trained_steps=total,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        saved_model_mb=saved_model_bytes / 2**20,
        accepts_other_length=accepts_other_length,
        **facts,
    )


if __name__ == "__main__":
    measure(**json.loads(sys.argv[1]))
