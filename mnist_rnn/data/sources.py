"""Where the digits come from and whether they are right: which dataset a run uses (full MNIST,
or the bundled sample when MNIST cannot be had), the four published MNIST files checked against
TFDS's own sums, and preparing either as a TFDS dataset once.

`resolve_dataset` decides, and fails fast when full MNIST cannot be had; `prepare_mnist` and
`prepare_sample` write the TFDS dataset that the pipeline (pipeline.py) reads.
"""

import contextlib
import hashlib
import io
import os
import random
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from typing import TextIO

import tensorflow_datasets as tfds
from absl import logging

from mnist_rnn import files
from mnist_rnn.config import DATASETS
from mnist_rnn.data import sample  # noqa: F401  Registers the `mnist_sample` builder.
from mnist_rnn.errors import DatasetUnavailableError, setting

# Where TFDS downloads MNIST from; probed before any download so that an offline machine
# fails in seconds instead of after TFDS's minutes of retries.
MNIST_PROBE_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/t10k-labels-idx1-ubyte.gz"
PROBE_TIMEOUT_S = 5.0
# Beside a data_dir's datasets: `.NAME.prepare.lock`, taken while NAME is prepared there.
PREPARE_LOCK_SUFFIX = ".prepare.lock"


def network_reachable(url: str = MNIST_PROBE_URL, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when `url` answers within `timeout` seconds (DNS included)."""
    result = []

    def probe():
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout)
            result.append(True)
        except urllib.error.HTTPError:
            result.append(True)  # The server answered: the network works.
        except Exception:  # Any failure to connect means "not reachable".
            result.append(False)

    # DNS lookups ignore socket timeouts, so bound the whole probe with a daemon thread.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def resolve_dataset(dataset: str, data_dir: str | None = None, probe=network_reachable,
                    mnist_dir: str | None = None) -> str:
    """Returns "mnist" or "mnist_sample" for `dataset` in DATASETS, probing at most once
    (never with `mnist_dir`, the four published MNIST files, which means full MNIST). Fails
    with one line when `data_dir` can neither hold nor receive that dataset, or `mnist_dir`
    does not hold the files as published."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}: use one of {', '.join(DATASETS)}")
    if data_dir is not None and os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise DatasetUnavailableError(
            f"{setting('data_dir', data_dir)} is not a directory: pass the directory where "
            "TFDS keeps (or may write) its datasets")
    if mnist_dir is not None:
        if dataset == "mnist_sample":
            raise DatasetUnavailableError(
                f"{setting('mnist_dir')} gives full MNIST, not {setting('dataset', dataset)}: "
                "leave one of the two out")
        check_mnist_files(mnist_dir, data_dir)
        name = "mnist"
    else:
        name = _choose(dataset, data_dir, probe)
    _check_preparable(name, data_dir)
    return name


def _choose(dataset: str, data_dir: str | None, probe) -> str:
    if dataset == "mnist_sample":
        return dataset
    if prepared("mnist", data_dir) or probe():
        return "mnist"
    where = data_dir or tfds.core.constants.DATA_DIR
    if dataset == "mnist":
        raise DatasetUnavailableError(
            f"full MNIST is not prepared in {where} and cannot be downloaded (no network): "
            f"pass {setting('mnist_dir')} with its four published .gz files, run once with "
            f"network access, pass {setting('data_dir')} where it is prepared, or use "
            f"{setting('dataset', 'mnist_sample')}"
        )
    logging.warning(
        "Full MNIST is not in %s and cannot be downloaded: using the bundled sample "
        "mnist_sample (4,000 train / 1,000 test images). For full MNIST offline, pass the "
        "directory holding its four published .gz files as mnist_dir; or run once with "
        "network access, or point the data dir at a prepared copy.",
        where,
    )
    return "mnist_sample"


def prepared(name: str, data_dir: str | None) -> bool:
    """Whether TFDS dataset `name` is prepared in `data_dir`."""
    # TFDS warns about the missing folder it is asked to look for: not news here.
    return _quietly(lambda: tfds.builder(name, data_dir=data_dir).is_prepared())


def check_mnist_files(mnist_dir: str, data_dir: str | None = None) -> None:
    """Fails with one line unless `mnist_dir` holds the four MNIST files as published: the
    names, sizes and sha256 sums that TFDS's own `mnist` builder downloads and checks."""
    expected = {info.filename: info
                for info in tfds.builder("mnist", data_dir=data_dir).url_infos.values()}
    names = ", ".join(sorted(expected))
    if not os.path.isdir(mnist_dir):
        raise DatasetUnavailableError(
            f"{setting('mnist_dir', mnist_dir)} is not a directory: pass the directory that "
            f"holds the four MNIST files as published ({names})")
    for name, info in sorted(expected.items()):
        path = os.path.join(mnist_dir, name)
        try:
            size = os.stat(path).st_size if not os.path.isdir(path) else None
            digest = _sha256(path) if size == int(info.size) else None
        except FileNotFoundError:
            raise DatasetUnavailableError(
                f"{path} is missing: {setting('mnist_dir')} must hold the four MNIST files as "
                f"published ({names})") from None
        except OSError as e:
            raise DatasetUnavailableError(
                f"cannot read {path}: {e.strerror or e}; make the four MNIST files in "
                f"{setting('mnist_dir')} readable to you") from None
        if size is None:
            raise DatasetUnavailableError(f"{path} is not a file: {setting('mnist_dir')} must "
                                          f"hold the four MNIST files as published ({names})")
        if size != int(info.size):
            raise DatasetUnavailableError(
                f"{path} has {size:,} bytes, not the published file's {int(info.size):,}: use "
                "the file as published, not cut short or compressed again")
        if digest != info.checksum:
            raise DatasetUnavailableError(
                f"{path} has sha256 {digest}, not the published file's {info.checksum}: use "
                "the file as published, not compressed again or altered")


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_preparable(name: str, data_dir: str | None) -> None:
    """A dataset not prepared yet is written into data_dir: it must be writable."""
    if prepared(name, data_dir):
        return
    where = data_dir or tfds.core.constants.DATA_DIR
    existing = os.path.abspath(where)
    while not os.path.exists(existing):  # TFDS creates the rest.
        existing = os.path.dirname(existing)
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise DatasetUnavailableError(
            f"cannot prepare {name} in {setting('data_dir', where)}: {e.strerror or e}; pass "
            f"a writable {setting('data_dir')}, or one where {name} is prepared") from None


def prepare_mnist(mnist_dir: str, data_dir: str | None = None,
                  out: TextIO = sys.stdout) -> None:
    """Prepares TFDS's `mnist` in `data_dir` from the published files in `mnist_dir` (see
    check_mnist_files) once, as TFDS would from its download, which it checks again."""
    _prepare_once("mnist", data_dir, f"full MNIST once, from {mnist_dir}", out,
                  download_config=tfds.download.DownloadConfig(manual_dir=mnist_dir))


def prepare_sample(data_dir: str | None = None, out: TextIO = sys.stdout) -> None:
    """Writes the bundled sample as a TFDS dataset in `data_dir` once, saying so in one line:
    TFDS's own words would speak of a download, and nothing is downloaded."""
    _prepare_once("mnist_sample", data_dir, "the bundled sample (5,000 MNIST digits) once",
                  out)


def _prepare_once(name: str, data_dir: str | None, what: str, out: TextIO,
                  **prepare_options) -> None:
    """Prepares TFDS dataset `name` in `data_dir` unless it is there, saying so in one line.
    Processes that start at once take turns on a lock beside it, so the first prepares and the
    others find it done; TFDS's temporary names come from Python's `random`, which a run
    seeds, so it draws them from a state of its own."""
    if prepared(name, data_dir):
        return
    where = data_dir or tfds.core.constants.DATA_DIR
    with files.waiting_for(os.path.join(where, f".{name}{PREPARE_LOCK_SUFFIX}")):
        if prepared(name, data_dir):
            return
        builder = _quietly(lambda: tfds.builder(name, data_dir=data_dir))
        print(f"Preparing {what}, in {builder.data_dir}", file=out, flush=True)
        tfds.display_progress_bar(False)
        seeded = random.getstate()
        random.seed()  # From the OS: unlike any other process's.
        try:
            _quietly(lambda: builder.download_and_prepare(**prepare_options))
        finally:
            random.setstate(seeded)


def _quietly(call):
    """call(), without TFDS's printed lines and log messages below errors."""
    verbosity = logging.get_verbosity()
    logging.set_verbosity(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return call()
    finally:
        logging.set_verbosity(verbosity)
