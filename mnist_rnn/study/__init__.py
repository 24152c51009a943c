"""Static vs dynamic, measured: what each graph holds, and the compare report."""
