"""One SavedModel's serving_default as a server sees it, in a fresh process:

    python benchmarks/serve.py SAVED_MODEL_DIR [--quick]

prints one JSON object: the first call of each new batch size over a sweep of sizes 1..1000
(the compile time, where XLA compiles), how many XLA programs that sweep compiled (counted
from XLA's dump of each compilation), then batch-1000 throughput and batch-1 latency (p50,
p99). bench.py runs it once per SavedModel, so that no compiled program is shared.
"""

import argparse
import glob
import json
import os
import statistics
import sys
import tempfile
import time


def sweep_sizes(buckets: tuple[int, ...], quick: bool = False) -> list[int]:
    """Batch sizes from 1 to 1000 that reach every bucket, on and just above each boundary:
    as many programs as every size from 1 to 1000 would compile."""
    if quick:
        return [1, 2, 3, 5, 100, 1000]
    edges = {b + d for b in buckets for d in (0, 1)} | set(range(1, 17)) | {999, 1000}
    return sorted(n for n in edges if n <= 1000)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("saved_model")
    parser.add_argument("--quick", action="store_true", help="fewer sizes and calls")
    args = parser.parse_args()
    dump = tempfile.mkdtemp(prefix="xla_dump_")
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_dump_to={dump}"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from mnist_rnn.data import sample


    from mnist_rnn.serving import saved_model
    images, _ = sample.load_arrays()
    digits = tf.constant(images[:1000])
    serve = tf.saved_model.load(args.saved_model).signatures["serving_default"]

    def call(n):
        began = time.perf_counter()
        serve(images=digits[:n])["probabilities"].numpy()
        return time.perf_counter() - began

    first_calls = {n: call(n) for n in sweep_sizes(saved_model.BATCH_BUCKETS, args.quick)}
    programs = len(glob.glob(os.path.join(dump, "*.before_optimizations.txt")))
    repeats, calls = (2, 50) if args.quick else (10, 500)
    throughput = repeats * 1000 / sum(call(1000) for _ in range(repeats))
    latencies = [call(1) * 1000 for _ in range(calls)]
    print(json.dumps({
        "samples_per_s": throughput,
        "p50_ms": statistics.median(latencies), "p99_ms": percentile(latencies, 0.99),
        "first_call_median_s": statistics.median(first_calls.values()),
        "first_call_max_s": max(first_calls.values()),
        "sweep_sizes": len(first_calls), "programs": programs,
    }))


if __name__ == "__main__":
    sys.exit(main())
