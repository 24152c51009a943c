"""Where the digits come from, whether they are right, and the tf.data pipeline of sequences."""
