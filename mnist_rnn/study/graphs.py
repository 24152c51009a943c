"""What the static and the dynamic graphs hold: ops, LSTM cell copies, While loops (on JAX,
the same of its programs); and the training-step graph written for TensorBoard."""

import collections

import tensorflow as tf

from mnist_rnn import compat
from mnist_rnn.model.lstm import describe

TANH_PER_CELL = 2  # An LSTM cell applies tanh to its candidate and to its new cell state.


def train_step(model):
    """The training step of a compiled model as one tf.function: forward, loss, gradients,
    optimizer update (what Keras' fit runs each step)."""

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = model.loss(y, model(x, training=True))
        gradients = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    return step


def _graph_def(function, *specs):
    return function.get_concrete_function(*specs).graph.as_graph_def()


def op_counts(graph_def):
    """Ops by type in a graph and in every function it calls (loop bodies included)."""
    counts = collections.Counter(node.op for node in graph_def.node)
    for function in graph_def.library.function:
        counts.update(node.op for node in function.node_def)
    return counts


def input_specs(model):
    shape = describe(model)
    return (tf.TensorSpec([None, shape.length, shape.features], tf.float32, name="sequences"),
            tf.TensorSpec([None], tf.int32, name="labels"))


def graph_facts(model):
    """Ops in the traced training step, LSTM cell copies in the forward graph, While loops.

    The dynamic graph holds two cell copies whatever the length: the loop body, and the one
    step Keras traces outside the loop to learn the shapes of the outputs. On JAX, the same
    facts of its programs (see jax_graph_facts)."""
    if not compat.HAS_TF_GRAPHS:
        return jax_graph_facts(model)
    sequences, labels = input_specs(model)
    train_ops = op_counts(_graph_def(train_step(model), sequences, labels))
    @tf.function
    def forward(x):
        return model(x, training=False)

    forward_ops = op_counts(_graph_def(forward, sequences))
    return {
        "train_step_ops": sum(train_ops.values()),
        "cell_copies": forward_ops["Tanh"] // TANH_PER_CELL,
        "while_ops": forward_ops["While"] + forward_ops["StatelessWhile"],
    }


def jax_graph_facts(model):
    """graph_facts of a built and compiled model on JAX, from the programs XLA compiles:
    primitives in the training step's jaxpr (Keras' train_step: forward, gradients, update),
    cell copies (tanh pairs) and loops (scan, while) in the forward pass's."""
    import jax
    import numpy as np

    shape = describe(model)
    x = np.zeros((2, shape.timesteps, shape.features), np.float32)
    y = np.zeros((2,), np.int32)
    state = tuple([v.value for v in variables] for variables in (
        model.trainable_variables, model.non_trainable_variables, model.optimizer.variables,
        model.metrics_variables))
    train = _primitives(jax.make_jaxpr(model.train_step)(state, (x, y)).jaxpr)
    forward = _primitives(jax.make_jaxpr(
        lambda trainable, other, x: model.stateless_call(trainable, other, x)[0])(
            state[0], state[1], x).jaxpr)
    return {
        "train_step_ops": sum(train.values()),
        "cell_copies": forward["tanh"] // TANH_PER_CELL,
        "while_ops": forward["scan"] + forward["while"],
    }


def _primitives(jaxpr) -> collections.Counter:
    """Primitives by name in a jaxpr and in every jaxpr it calls (loop bodies included)."""
    counts = collections.Counter()
    for eqn in jaxpr.eqns:
        counts[eqn.primitive.name] += 1
        for param in eqn.params.values():
            for inner in param if isinstance(param, (list, tuple)) else [param]:
                inner = getattr(inner, "jaxpr", inner)  # A closed jaxpr holds its jaxpr.
                if hasattr(inner, "eqns"):
                    counts.update(_primitives(inner))
    return counts


def write_tensorboard_graph(model, logdir):
    """Writes the training-step graph to `logdir` for `tensorboard --logdir`."""
    graph = train_step(model).get_concrete_function(*input_specs(model)).graph
    writer = tf.summary.create_file_writer(logdir)
    with writer.as_default():
        tf.summary.graph(graph)
    writer.flush()
    writer.close()
