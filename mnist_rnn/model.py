"""The two LSTM classifiers: static (unrolled, like tf.nn.static_rnn) and dynamic (looped,
like tf.nn.dynamic_rnn). Both feed the final hidden state h to a Dense(10) of logits."""

import keras

RNNS = ("static", "dynamic")
NUM_CLASSES = 10


def build_model(rnn, units, timesteps, features, seed=None):
    """An uncompiled LSTM classifier of [batch, time, features] sequences -> [batch, 10] logits.

    static: the graph holds one cell per step, so the input length is fixed to `timesteps`.
    dynamic: one cell inside a symbolic loop, so any length is accepted (`timesteps` unused).
    """
    if rnn not in RNNS:
        raise ValueError(f"unknown rnn {rnn!r}: use one of {', '.join(RNNS)}")
    static = rnn == "static"
    inputs = keras.Input(shape=(timesteps if static else None, features), name="sequences")
    # LSTM(return_sequences=False) returns the final h, the original's `final_state.h`.
    hidden = keras.layers.LSTM(
        units,
        unroll=static,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        recurrent_initializer=keras.initializers.Orthogonal(seed=seed),
        name="lstm",
    )(inputs)
    logits = keras.layers.Dense(
        NUM_CLASSES, kernel_initializer=keras.initializers.GlorotUniform(seed=seed), name="logits"
    )(hidden)
    return keras.Model(inputs, logits, name=f"{rnn}_lstm")


def compile_model(model, learning_rate, jit_compile=False):
    """Adam on sparse cross-entropy from logits; softmax is never applied before the loss."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile,
    )
    return model
