import numpy as np
import pytest

from mnist_rnn import errors
from mnist_rnn.compat import keras
from mnist_rnn.model.lstm import Description, build_model, describe, step_logits_fn

pytestmark = pytest.mark.keras2  # Core tests: also run under Keras 2.


def test_same_units_same_parameter_count():
    static = build_model("static", 64, 28, 28)
    dynamic = build_model("dynamic", 64, 28, 28)
    # LSTM: 4 gates x (inputs + units + bias) x units; Dense: (units + 1) x 10.
    expected = 4 * (28 + 64 + 1) * 64 + (64 + 1) * 10
    assert static.count_params() == dynamic.count_params() == expected


def test_static_has_a_fixed_length_and_rejects_another():
    static = build_model("static", 16, 28, 28)
    assert static.input_shape == (None, 28, 28)
    with pytest.raises(ValueError,
                       match=r"expected shape=\(None, 28, 28\), found shape=\(2, 14, 28\)"):
        static(np.zeros((2, 14, 28), np.float32))


@pytest.mark.parametrize("length", [14, 28, 56])
def test_dynamic_accepts_any_length(length):
    dynamic = build_model("dynamic", 16, 28, 28)
    assert dynamic.input_shape == (None, None, 28)
    assert dynamic(np.zeros((3, length, 28), np.float32)).shape == (3, 10)


def test_static_and_dynamic_compute_the_same_function():
    """Unrolling changes the graph, not the math: same weights give the same logits."""
    static = build_model("static", 16, 28, 28, seed=1)
    dynamic = build_model("dynamic", 16, 28, 28, seed=1)
    x = np.random.default_rng(0).random((4, 28, 28), dtype=np.float32)
    np.testing.assert_allclose(static(x), dynamic(x), atol=1e-5)


def test_head_reads_the_final_hidden_state():
    model = build_model("dynamic", 8, 28, 28, seed=0)
    lstm = model.get_layer("lstm")
    assert not lstm.return_sequences and model.get_layer("logits").units == 10


def test_unknown_rnn_is_rejected():
    with pytest.raises(errors.UserError, match="rnn=cudnn: rnn must be one of static, dynamic"):
        build_model("cudnn", 8, 28, 28)


@pytest.mark.parametrize("rnn, variable_length, timesteps", [
    ("static", False, 28), ("dynamic", False, 28), ("dynamic", True, 28), ("static", False, 7),
])
def test_answers_after_each_step_end_at_the_model_output(rnn, variable_length, timesteps,
                                                         tmp_path):
    """Same weights, no retraining; also for the model reloaded from its .keras file. Digits
    with blank rows around them, and one blank image, test the variable-length masking."""
    model = build_model(rnn, 16, timesteps, 784 // timesteps, seed=3,
                        variable_length=variable_length)
    model.get_layer("logits").bias.assign(np.arange(10, dtype=np.float32) / 10)
    rng = np.random.default_rng(0)
    x = (rng.random((6, 28, 28)) > 0.6) * rng.random((6, 28, 28))
    x[:, :6], x[:, 21:], x[0] = 0, 0, 0
    x = x.reshape(6, timesteps, -1).astype(np.float32)
    model.save(tmp_path / "model.keras")
    for m in (model, keras.models.load_model(tmp_path / "model.keras")):
        steps = np.asarray(step_logits_fn(m)(x))
        assert steps.shape == (6, timesteps, 10)
        np.testing.assert_allclose(steps[:, -1], m(x), atol=1e-5)
    if variable_length:  # Before the ink: the initial state's answer, the head's bias alone.
        np.testing.assert_allclose(steps[1:, :6 * timesteps // 28],
                                   np.broadcast_to(np.arange(10) / 10, (5, 6, 10)), atol=1e-6)
    else:  # Blank rows change the state, so the first answers differ from the last.
        assert np.abs(steps[:, 0] - steps[:, -1]).max() > 1e-3


@pytest.mark.parametrize("rnn, variable_length, length", [("static", False, 7),
                                                          ("dynamic", False, None),
                                                          ("dynamic", True, None)])
def test_a_model_describes_itself_the_same_once_saved_and_loaded(tmp_path, rnn,
                                                                 variable_length, length):
    model = build_model(rnn, 8, 7, 112, seed=0, variable_length=variable_length)
    expected = Description(static=rnn == "static", timesteps=7, features=112, units=8,
                           variable_length=variable_length)
    model.save(tmp_path / "model.keras")
    for described in (model, keras.models.load_model(tmp_path / "model.keras")):
        assert describe(described) == expected and describe(described).length == length
