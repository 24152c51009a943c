"""TensorBoard logs of every training run: the curves, the graph, and no step twice after a
resume. Read back with TensorBoard's own reader."""

import io
import os

import pytest
import tensorflow as tf

from helpers import tensorboard_has_graph, tensorboard_scalars, tiny_config
from mnist_rnn.train import train_and_evaluate
from mnist_rnn.training import tensorboard

pytestmark = pytest.mark.keras2  # Core tests: also run under Keras 2.


def test_curves_follow_metrics_json_and_the_graph_is_there(trained):
    config, _, metrics = trained
    logs = os.path.join(config.model_dir, "logs")
    test, train = tensorboard_scalars(f"{logs}/test"), tensorboard_scalars(f"{logs}/train")
    for tag in ("accuracy", "loss"):
        assert [step for step, _ in test[tag]] == [e["step"] for e in metrics["evaluations"]]
        assert [value for _, value in test[tag]] == pytest.approx(
            [e[tag] for e in metrics["evaluations"]])
    steps = [step for step, _ in train["loss"]]
    assert steps == sorted(set(steps)) and steps[-1] == metrics["steps"]
    assert [step for step, _ in train["accuracy"]] == steps
    assert [value for _, value in train["learning_rate"]] == pytest.approx(
        [config.learning_rate] * len(steps))
    assert tensorboard_has_graph(f"{logs}/train")  # static: a cell per step; dynamic: a loop.


def test_evaluations_mid_epoch_and_after_the_last_step_are_logged(tmp_path, tfds_dir):
    config = tiny_config(tmp_path, tfds_dir, max_steps=50, epochs=2, eval_every_steps=20,
                         export=False, tensorboard=True)
    _, metrics = train_and_evaluate(config, out=io.StringIO())
    test = tensorboard_scalars(os.path.join(config.model_dir, "logs", "test"))
    assert [step for step, _ in test["accuracy"]] == [20, 40, 50]
    assert [value for _, value in test["accuracy"]] == pytest.approx(
        [e["accuracy"] for e in metrics["evaluations"]])
    speed = tensorboard_scalars(os.path.join(config.model_dir, "logs", "train"))[
        "steady_samples_per_s"]
    assert speed[-1][0] == 50
    assert speed[-1][1] == pytest.approx(metrics["steady_train_samples_per_s"], rel=1e-6)


def test_no_tensorboard_writes_no_logs(tmp_path, tfds_dir):
    config = tiny_config(tmp_path, tfds_dir, max_steps=2, export=False)
    train_and_evaluate(config, out=io.StringIO())
    assert not os.path.exists(os.path.join(config.model_dir, "logs"))


def test_a_resumed_run_drops_the_steps_it_trains_again(tmp_path):
    """What a killed session wrote after its backup goes, and nothing else."""
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        for step in range(1, 8):
            tf.summary.scalar("loss", 1.0 / step, step=step)
    writer.close()
    tensorboard.drop_steps_after(str(tmp_path), 4)
    assert [step for step, _ in tensorboard_scalars(tmp_path)["loss"]] == [1, 2, 3, 4]
    assert [n for n in os.listdir(tmp_path) if ".tmp-" in n] == []


def test_the_cosine_schedule_decays_to_zero_over_the_run_as_logged(tmp_path, tfds_dir):
    config = tiny_config(tmp_path, tfds_dir, max_steps=30, epochs=2, export=False,
                         tensorboard=True, lr_schedule="cosine", steps_per_execution=10)
    train_and_evaluate(config, out=io.StringIO())
    rates = tensorboard_scalars(os.path.join(config.model_dir, "logs", "train"))[
        "learning_rate"]
    assert [step for step, _ in rates] == [10, 20, 30]  # Over max_steps, not the 2 epochs.
    assert [rate for _, rate in rates] == pytest.approx([0.0075, 0.0025, 0.0], abs=1e-6)
