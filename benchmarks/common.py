"""What the benchmarks share: the batch, the PyTorch contender and its data, and rounding up
to whole groups of steps."""

import math
import time

import numpy as np

from mnist_rnn.config import TrainConfig

DEFAULTS = TrainConfig()  # Every contender trains with mnist_rnn's own defaults.
BATCH = DEFAULTS.batch_size


def whole(steps: int, group: int) -> int:
    """`steps` rounded up to a multiple of `group`."""
    return group * math.ceil(steps / group)


def torch_model(units: int, features: int):
    """nn.LSTM + Linear of the same shape as mnist_rnn's model, reading the final h."""
    import torch

    class LSTMClassifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(features, units, batch_first=True)
            self.logits = torch.nn.Linear(units, 10)

        def forward(self, x):
            _, (h, _) = self.lstm(x)
            return self.logits(h[-1])

    return LSTMClassifier()


def torch_train_arrays():
    """The sample's training images as float pixels in [0, 1], and their labels."""
    from mnist_rnn.data import sample

    images, labels = sample.load_arrays()
    rows = sample.split_indices(labels, "train")
    return images[rows].reshape(-1, 784).astype(np.float32) / 255, labels[rows]


def torch_train(units, timesteps, steps, images, labels):
    """Samples/s of the usual PyTorch loop: Adam, cross-entropy, one batch at a time."""
    import torch

    torch.manual_seed(0)
    x = torch.from_numpy(images.reshape(len(images), timesteps, -1))
    y = torch.from_numpy(labels.astype(np.int64))
    model = torch_model(units, x.shape[-1])
    optimizer = torch.optim.Adam(model.parameters(), lr=DEFAULTS.learning_rate)
    loss_fn = torch.nn.CrossEntropyLoss()
    batches = len(x) // BATCH
    order = torch.randperm(len(x))

    def step(i):
        index = order[(i % batches) * BATCH:(i % batches + 1) * BATCH]
        optimizer.zero_grad()
        loss = loss_fn(model(x[index]), y[index])
        loss.backward()
        optimizer.step()
        return loss

    for i in range(5):
        step(i)
    began = time.perf_counter()
    for i in range(steps):
        step(i)
    return steps * BATCH / (time.perf_counter() - began)
