"""mnist_rnn: static (unrolled) vs dynamic (looped) LSTMs reading MNIST row by row."""

__version__ = "0.1.0"
