import numpy as np
import pytest

from mnist_rnn.model import build_model

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
    with pytest.raises(ValueError, match="unknown rnn 'cudnn': use one of static, dynamic"):
        build_model("cudnn", 8, 28, 28)
