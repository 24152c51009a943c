"""What the static and the dynamic graphs hold: ops, LSTM cell copies, While loops (on JAX,
the same of its programs)."""

import collections

import tensorflow as tf

from mnist_rnn import compat
from mnist_rnn.model.lstm import describe
from mnist_rnn.training.tensorboard import input_specs, train_step

TANH_PER_CELL = 2  # An LSTM cell applies tanh to its candidate and to its new cell state.


def _graph_def(function, *specs):
    return function.get_concrete_function(*specs).graph.as_graph_def()


def op_counts(graph_def):
    """Ops by type in a graph and in every function it calls (loop bodies included)."""
    counts = collections.Counter(node.op for node in graph_def.node)
    for function in graph_def.library.function:
        counts.update(node.op for node in function.node_def)
    return counts


def graph_facts(model):
    """Ops in the traced training step, LSTM cell copies in the forward graph, While loops.

    The dynamic graph holds two cell copies whatever the length: the loop body, and the one
    step Keras traces outside the loop to learn the shapes of the outputs. On JAX, the same
    facts of its programs (compat.jax_op_counts: primitives, tanh, scan and while loops)."""
    if not compat.HAS_TF_GRAPHS:
        shape = describe(model)
        train, forward = compat.jax_op_counts(model, shape.timesteps, shape.features)
        return _facts(train, forward["tanh"], forward["scan"] + forward["while"])
    sequences, labels = input_specs(model)
    train_ops = op_counts(_graph_def(train_step(model), sequences, labels))

    @tf.function
    def forward(x):
        return model(x, training=False)

    forward_ops = op_counts(_graph_def(forward, sequences))
    return _facts(train_ops, forward_ops["Tanh"],
                  forward_ops["While"] + forward_ops["StatelessWhile"])


def _facts(train_ops: collections.Counter, tanh: int, loops: int) -> dict:
    return {"train_step_ops": sum(train_ops.values()), "cell_copies": tanh // TANH_PER_CELL,
            "while_ops": loops}
