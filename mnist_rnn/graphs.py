"""What the static and the dynamic graphs hold: ops, LSTM cell copies, While loops; and the
training-step graph written for TensorBoard."""

import collections

import tensorflow as tf

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
    return (tf.TensorSpec(model.input_shape, tf.float32, name="sequences"),
            tf.TensorSpec([None], tf.int32, name="labels"))


def graph_facts(model):
    """Ops in the traced training step, LSTM cell copies in the forward graph, While loops.

    The dynamic graph holds two cell copies whatever the length: the loop body, and the one
    step Keras traces outside the loop to learn the shapes of the outputs."""
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


def write_tensorboard_graph(model, logdir):
    """Writes the training-step graph to `logdir` for `tensorboard --logdir`."""
    graph = train_step(model).get_concrete_function(*input_specs(model)).graph
    writer = tf.summary.create_file_writer(logdir)
    with writer.as_default():
        tf.summary.graph(graph)
    writer.flush()
    writer.close()
