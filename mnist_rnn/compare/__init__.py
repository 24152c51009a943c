"""Static vs dynamic, measured: the experiment beside the training core.

`python -m mnist_rnn.compare` (`__main__.py`: flags) runs `runner.compare`, which measures each
configuration in a process of its own (`measure.py`) and writes the report.
"""
