"""The two LSTM classifiers: static (unrolled, like tf.nn.static_rnn) and dynamic (looped,
like tf.nn.dynamic_rnn). Both feed the final hidden state h to a Dense(10) of logits."""

from mnist_rnn.compat import keras

from mnist_rnn import data

RNNS = ("static", "dynamic")
NUM_CLASSES = 10
VARIABLE_LENGTH_NEEDS_DYNAMIC = (
    "--variable_length needs --rnn=dynamic: the static model is unrolled into one fixed "
    "sequence length, so it cannot run sequences of their own lengths"
)


@keras.saving.register_keras_serializable(package="mnist_rnn")
class StripBlankSteps(keras.layers.Layer):
    """Drops each sequence's blank leading and trailing steps and pads the batch with
    data.PAD, which the Masking layer after it hides from the LSTM."""

    def call(self, sequences):
        return data.strip_blank_steps(sequences)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None, input_shape[2])


def build_model(rnn, units, timesteps, features, seed=None, variable_length=False):
    """An uncompiled LSTM classifier of [batch, time, features] sequences -> [batch, 10] logits.

    static: the graph holds one cell per step, so the input length is fixed to `timesteps`.
    dynamic: one cell inside a symbolic loop, so any length is accepted (`timesteps` unused).
    variable_length (dynamic only): each sequence runs for its own length, without its blank
    leading and trailing steps, like `sequence_length` in tf.nn.dynamic_rnn.
    """
    if rnn not in RNNS:
        raise ValueError(f"unknown rnn {rnn!r}: use one of {', '.join(RNNS)}")
    static = rnn == "static"
    if variable_length and static:
        raise ValueError(VARIABLE_LENGTH_NEEDS_DYNAMIC)
    inputs = keras.Input(shape=(timesteps if static else None, features), name="sequences")
    x = inputs
    if variable_length:
        x = StripBlankSteps(name="strip_blank_steps")(x)
        x = keras.layers.Masking(mask_value=data.PAD, name="mask_padding")(x)
    # LSTM(return_sequences=False) returns the final h, the original's `final_state.h`.
    hidden = keras.layers.LSTM(
        units,
        unroll=static,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        recurrent_initializer=keras.initializers.Orthogonal(seed=seed),
        name="lstm",
    )(x)
    logits = keras.layers.Dense(
        NUM_CLASSES, kernel_initializer=keras.initializers.GlorotUniform(seed=seed), name="logits"
    )(hidden)
    return keras.Model(inputs, logits, name=f"{rnn}_lstm")


def compile_model(model, learning_rate, jit_compile=False, steps_per_execution=1,
                  accuracy=True):
    """Adam on sparse cross-entropy from logits; softmax is never applied before the loss.
    accuracy: also track training accuracy (shown in the progress bar)."""
    model.compile(
        steps_per_execution=steps_per_execution,
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")] if accuracy else [],
        jit_compile=jit_compile,
    )
    return model
