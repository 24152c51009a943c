"""One pass over the test set -> accuracy, loss, the answer after each step, the report."""
