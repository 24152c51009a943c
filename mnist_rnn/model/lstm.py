"""The two LSTM classifiers: static (unrolled, like tf.nn.static_rnn) and dynamic (looped,
like tf.nn.dynamic_rnn). Both feed the final hidden state h to a Dense(10) of logits."""

import dataclasses
from typing import Callable

from mnist_rnn import compat
from mnist_rnn.compat import keras
from mnist_rnn.config import NUM_CLASSES, PIXELS, TrainConfig, check, check_variable_length
from mnist_rnn.data import sequences


@keras.saving.register_keras_serializable(package="mnist_rnn")
class StripBlankSteps(keras.layers.Layer):
    """Drops each sequence's blank leading and trailing steps and pads the batch with
    sequences.PAD, which the Masking layer after it hides from the LSTM. On JAX, whose XLA
    programs have fixed shapes, it puts PAD in their place instead: the same result."""

    def call(self, inputs):
        if compat.FIXED_SHAPES:
            return sequences.mask_blank_steps(inputs)
        return sequences.strip_blank_steps(inputs)


def build_model(rnn: str, units: int, timesteps: int, features: int, seed: int | None = None,
                variable_length: bool = False) -> keras.Model:
    """An uncompiled LSTM classifier of [batch, time, features] sequences -> [batch, 10] logits.

    static: the graph holds one cell per step, so the input length is fixed to `timesteps`.
    dynamic: one cell inside a symbolic loop, so any length is accepted (`timesteps` unused).
    variable_length (dynamic only): each sequence runs for its own length, without its blank
    leading and trailing steps, like `sequence_length` in tf.nn.dynamic_rnn.
    """
    check("rnn", rnn)
    check_variable_length(rnn, variable_length)
    static = rnn == "static"
    inputs = keras.Input(shape=(timesteps if static else None, features), name="sequences")
    x = inputs
    if variable_length:
        x = StripBlankSteps(name="strip_blank_steps")(x)
        x = keras.layers.Masking(mask_value=sequences.PAD, name="mask_padding")(x)
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


def seed(value: int, deterministic: bool = True) -> None:
    """Seeds weights and data order; `deterministic`: also the ops (TensorFlow's op
    determinism), so that the same seed on the same machine gives the same numbers."""
    import tensorflow as tf

    keras.utils.set_random_seed(value)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def build_for(config: TrainConfig, datasets, steps_per_execution: int,
              accuracy: bool = True) -> keras.Model:
    """The compiled model `config` describes, for the sequences of `datasets` (a
    data.pipeline.Datasets). accuracy: also track training accuracy (the progress bar's)."""
    model = build_model(config.rnn, config.units, datasets.timesteps, datasets.features,
                        seed=config.seed, variable_length=config.variable_length)
    return compile_model(model, schedule_for(config, datasets.steps_per_epoch),
                         config.jit_compile, steps_per_execution, accuracy)


def schedule_for(config: TrainConfig, steps_per_epoch: int):
    """The learning rate `config` asks for, over the run's steps (see learning_rate)."""
    return learning_rate(config.learning_rate, config.lr_schedule,
                         config.last_step(steps_per_epoch))


def learning_rate(initial: float, schedule: str = "constant", total_steps: int = 1):
    """Adam's learning rate: `initial` throughout ("constant"), or Keras's CosineDecay from
    `initial` to 0 at `total_steps` ("cosine"). Either is a function of the optimizer's step
    count alone, so a resumed run follows it exactly."""
    if schedule == "constant":
        return initial
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(initial, decay_steps=max(1, total_steps))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}")


def learning_rate_at(rate, step: int) -> float:
    """The value at training step `step` of what `learning_rate` returned."""
    return float(rate(step)) if callable(rate) else float(rate)


def compile_model(model: keras.Model, learning_rate, jit_compile: bool = False,
                  steps_per_execution: int = 1, accuracy: bool = True) -> keras.Model:
    """Adam at `learning_rate` (a float or a schedule) on sparse cross-entropy from logits;
    softmax is never applied before the loss.
    jit_compile: training steps compiled by XLA (always on JAX, where the alternative is
    running op by op). accuracy: also track training accuracy (shown in the progress bar)."""
    model.compile(
        steps_per_execution=steps_per_execution,
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")] if accuracy else [],
        jit_compile=jit_compile or compat.ALWAYS_COMPILED,
    )
    return model


@dataclasses.dataclass(frozen=True)
class Description:
    """What a built or loaded model is. static: unrolled, for one fixed length; timesteps:
    the steps per image it reads, of `features` pixels each; units: its LSTM's;
    variable_length: it reads only each digit's inked span."""

    static: bool
    timesteps: int
    features: int
    units: int
    variable_length: bool

    @property
    def length(self) -> int | None:
        """The sequence length its input takes: `timesteps` when static, else any (None)."""
        return self.timesteps if self.static else None


def describe(model: keras.Model) -> Description:
    """The Description of `model`, from its input shape and layers."""
    features = model.input_shape[-1]
    return Description(static=model.input_shape[1] is not None, timesteps=PIXELS // features,
                       features=features, units=model.get_layer("lstm").units,
                       variable_length=_is_variable_length(model))


def _is_variable_length(model: keras.Model) -> bool:
    """Whether `model` reads each sequence without its blank leading and trailing steps."""
    return any(isinstance(layer, StripBlankSteps) for layer in model.layers)


def step_logits_fn(model: keras.Model) -> Callable:
    """sequences [batch, T, F] -> logits [batch, T, 10]: the answer of `model` after each step
    read, from its own weights (its LSTM cell returning every step's h, then its Dense head).
    The last step's logits are the model's output. A variable-length model reads only each
    digit's inked span: before it, the answer is that of the initial state; after it, it holds.
    """
    lstm, head = model.get_layer("lstm"), model.get_layer("logits")
    every_step = keras.layers.RNN(lstm.cell, return_sequences=True, unroll=lstm.unroll,
                                  name="lstm_every_step")
    variable_length = describe(model).variable_length

    def step_logits(inputs):
        mask = sequences.ink_mask(inputs) if variable_length else None
        return head(every_step(inputs, mask=mask))

    return step_logits
