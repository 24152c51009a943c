"""One training run: its loop, callbacks, backup, curves and directory; nothing of serving."""
