import dataclasses
import io
import json
import os
import shutil

import numpy as np
import pytest

from helpers import tiny_config
from mnist_rnn import compat, errors, train
from mnist_rnn.compat import keras
from mnist_rnn.config import TrainConfig
from mnist_rnn.training import trainer

# Core tests (marked keras2) also run under Keras 2. Two run under Keras 3 only: test_model
# checks the two graphs' math under both, and the same-seed test both seeds' effect.
keras2 = pytest.mark.keras2
# Those marked jax also run on Keras 3's JAX backend: a run's results and its files.
jax = pytest.mark.jax


@keras2
@jax
def test_short_training_clearly_beats_chance(trained):
    config, _, metrics = trained
    # One epoch (40 steps) gives 0.58-0.68 over seeds 0-3; chance is 0.10.
    assert metrics["final_test_accuracy"] > 0.4
    assert metrics["steps"] == 40 and metrics["dataset"]["name"] == "mnist_sample"
    assert metrics["flags"]["rnn"] == config.rnn


@keras2
@jax
def test_metrics_json_has_every_field(trained):
    config, _, metrics = trained
    on_disk = trainer.load_metrics(config.model_dir)
    assert on_disk == json.loads(json.dumps(metrics))
    for key in ("flags", "dataset", "evaluations", "final_test_accuracy", "final_test_loss",
                "wall_time_s", "train_samples_per_s", "steps", "parameters"):
        assert key in on_disk, key
    assert on_disk["dataset"] | {"train_size": 4000, "test_size": 1000} == on_disk["dataset"]
    assert on_disk["train_samples"] == 4000 and on_disk["train_samples_per_s"] > 0
    last = on_disk["evaluations"][-1]
    assert (last["step"], last["accuracy"]) == (40, on_disk["final_test_accuracy"])
    compiled = config.rnn == "dynamic" or compat.JAX  # As the fixture asks.
    assert on_disk["saved_model"] == {"backend": compat.BACKEND, **(
        {"xla": True, "batch_buckets": [2 ** k for k in range(11)]} if compiled
        else {"xla": False})}
    assert on_disk["backend"] == compat.BACKEND
    # Every phase of the run is timed; training is most of it, and holds the evaluations.
    phases = on_disk["phase_s"]
    assert set(phases) == {"prepare", "data", "build", "training", "final_evaluation", "save",
                           "export", "report"}
    assert all(s >= 0 for s in phases.values())
    assert phases["training"] + phases["final_evaluation"] == pytest.approx(
        on_disk["wall_time_s"], abs=0.5)


@keras2
def test_evaluation_agrees_with_keras_evaluate(trained, sample):
    _, model, metrics = trained
    loss, accuracy = model.evaluate(sample.test, verbose=0)
    assert accuracy == pytest.approx(metrics["final_test_accuracy"], abs=1e-6)
    assert loss == pytest.approx(metrics["final_test_loss"], rel=1e-4)


@keras2
def test_save_load_gives_identical_predictions(trained, sample):
    config, model, _ = trained
    x, _ = next(iter(sample.test))
    reloaded = keras.models.load_model(os.path.join(config.model_dir, "model.keras"))
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert reloaded.get_layer("lstm").unroll == (config.rnn == "static")


def test_static_and_dynamic_learn_the_same(tmp_path, tfds_dir):
    """Same seed, same math: the two graphs train to (nearly) the same accuracy."""
    results = [
        train.train_and_evaluate(
            tiny_config(tmp_path / rnn, tfds_dir, rnn=rnn, max_steps=15, export=False),
            out=io.StringIO()
        )[1]["final_test_accuracy"]
        for rnn in ("static", "dynamic")
    ]
    assert results[0] == pytest.approx(results[1], abs=0.02)


@keras2
@jax
def test_same_seed_same_metrics_and_weights(tmp_path, tfds_dir):
    runs = []
    for name in ("a", "b"):
        config = tiny_config(tmp_path / name, tfds_dir, max_steps=12, eval_every_steps=4,
                             export=False)
        model, metrics = train.train_and_evaluate(config, out=io.StringIO())
        runs.append((model.get_weights(), metrics["evaluations"]))
    (weights_a, evals_a), (weights_b, evals_b) = runs
    assert [(e["step"], e["accuracy"], e["loss"]) for e in evals_a] == [
        (e["step"], e["accuracy"], e["loss"]) for e in evals_b]
    for a, b in zip(weights_a, weights_b):
        assert a.tobytes() == b.tobytes()


def test_a_different_seed_gives_a_different_run(tmp_path, tfds_dir):
    losses = {
        train.train_and_evaluate(
            tiny_config(tmp_path / str(seed), tfds_dir, max_steps=10, seed=seed, export=False),
            out=io.StringIO(),
        )[1]["final_test_loss"]
        for seed in (0, 1)
    }
    assert len(losses) == 2


@keras2
def test_max_steps_and_eval_every_steps(tmp_path, tfds_dir):
    config = tiny_config(tmp_path, tfds_dir, epochs=3, max_steps=50, eval_every_steps=20,
                         export=False)
    _, metrics = train.train_and_evaluate(config, out=io.StringIO())
    assert metrics["steps"] == 50 and metrics["epochs_started"] == 2
    assert [e["step"] for e in metrics["evaluations"]] == [20, 40, 50]
    assert [e["epoch"] for e in metrics["evaluations"]] == [1, 1, 2]
    assert not os.path.exists(os.path.join(config.model_dir, "saved_model"))


@keras2
def test_target_accuracy_stops_training_early(tmp_path, tfds_dir):
    config = tiny_config(tmp_path, tfds_dir, epochs=5, eval_every_steps=5, target_accuracy=0.3)
    _, metrics = train.train_and_evaluate(config, out=io.StringIO())
    accuracies = [e["accuracy"] for e in metrics["evaluations"]]
    assert metrics["reached_target"] and accuracies[-1] >= 0.3
    assert all(a < 0.3 for a in accuracies[:-1])  # It stopped at the first evaluation past 0.3.
    assert metrics["steps"] == 5 * len(accuracies) < 200
    assert os.path.isdir(os.path.join(config.model_dir, "saved_model"))


@pytest.mark.parametrize("steps, expected", [(0, 0), (1, 100), (40, 4000), (41, 4100),
                                             (80, 8000)])
@keras2
def test_samples_seen_counts_partial_last_batches(steps, expected):
    assert trainer.samples_seen(steps, 100, 4000) == expected
    assert trainer.samples_seen(2, 3000, 4000) == 4000  # 3000 then the last 1000.
    assert trainer.samples_seen(3, 3000, 4000) == 7000


@keras2
def test_unwritable_model_dir_fails_before_training(tmp_path, tfds_dir):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    config = tiny_config(tmp_path, tfds_dir)
    config.model_dir = str(blocker / "model")
    with pytest.raises(errors.OutputError, match="cannot write to model_dir=") as err:
        train.train_and_evaluate(config)
    assert err.value.as_flags().startswith(f"cannot write to --model_dir={blocker}/model: ")


@keras2
def test_each_variant_gets_its_own_default_model_dir():
    assert TrainConfig().model_dir == "runs/dynamic"
    assert TrainConfig(rnn="static").model_dir == "runs/static"
    assert TrainConfig(rnn="static", model_dir="elsewhere").model_dir == "elsewhere"


@keras2
def test_a_finished_run_on_another_dataset_is_refused(trained, sample, tmp_path):
    """A finished run is reused only for the same settings and the same data."""
    # A copy: other xdist workers read the shared run at the same time, and a run locks.
    config = dataclasses.replace(trained[0], model_dir=str(tmp_path / "copy"))
    shutil.copytree(trained[0].model_dir, config.model_dir)
    elsewhere = dataclasses.replace(sample, name="mnist")
    with pytest.raises(errors.UserError, match="dataset mnist .the run in progress used "
                                               "mnist_sample."):
        train.train_and_evaluate(config, elsewhere, out=io.StringIO())
    _, metrics = train.train_and_evaluate(config, sample, out=io.StringIO())
    assert metrics["steps"] == 40  # The same data: the finished run, as it was.


@keras2
def test_a_batch_larger_than_the_training_set_is_recorded_as_used(tmp_path, tfds_dir):
    out = io.StringIO()
    config = tiny_config(tmp_path, tfds_dir, batch_size=100_000, epochs=3, export=False)
    _, metrics = train.train_and_evaluate(config, out=out)
    assert "larger than the training set: each epoch is one batch of 4,000" in out.getvalue()
    assert metrics["flags"]["batch_size"] == 100_000 and metrics["batch_size"] == 4000
    assert metrics["steps"] == 3 and metrics["train_samples"] == 12_000


@keras2
def test_the_exports_are_the_last_stage_the_train_command_composes(tmp_path, tfds_dir):
    """The training core writes no export of its own; each one it is given is checked before
    the run starts and written after model.keras, before metrics.json."""
    config = tiny_config(tmp_path, tfds_dir, max_steps=2, export=True)
    _, metrics = trainer.train_and_evaluate(config, out=io.StringIO())
    assert "saved_model" not in metrics and not os.path.exists(
        os.path.join(config.model_dir, "saved_model"))

    class Refused:
        name = "refused"

        def check(self):
            raise errors.UserError("cannot be made here")

    with pytest.raises(errors.UserError, match="cannot be made here"):
        trainer.train_and_evaluate(tiny_config(tmp_path / "other", tfds_dir), exports=[Refused()])
    assert not os.path.exists(tmp_path / "other")

    class Noted:
        name = "noted"

        def check(self):
            pass

        def write(self, model, out_dir, datasets):
            written = sorted(os.listdir(out_dir))
            assert "model.keras" in written and "metrics.json" not in written
            return {"test_size": datasets.test_size}

        def describe(self, info):
            return [f"noted {info['test_size']}"]

    out = io.StringIO()
    _, metrics = trainer.train_and_evaluate(tiny_config(tmp_path / "third", tfds_dir, max_steps=2),
                                            out=out, exports=[Noted()])
    assert metrics["noted"] == {"test_size": 1000} and "noted 1000" in out.getvalue()
