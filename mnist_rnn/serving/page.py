"""The page where a learner draws a digit and watches each model read it row by row (the
`demo` command), and its `/read` API, on an HTTP server of Python's own.

Nothing the browser sends names a file: an image arrives as the bytes of a request's body, is
written to a private temporary file and read as `predict` reads one, within its limits.
"""

import http.server
import json
import os
import pathlib
import tempfile
import threading
import urllib.parse

from mnist_rnn.data import images
from mnist_rnn.errors import ImageError
from mnist_rnn.model.predictor import Predictor
from mnist_rnn.serving import answers

PAGE_FILE = pathlib.Path(__file__).with_name("page.html")
# An image file's bytes; its pixels are limited by images.MAX_PIXELS, checked from its header.
MAX_BODY_BYTES = 20 * 2**20
NPY_MAGIC = b"\x93NUMPY"


def read(model: Predictor, data: bytes) -> dict:
    """The answers for one image file's `data`, the numbers `predict --per_step --json` gives:
    answer, probability, probabilities [10], step_probabilities [rows][10] and settled_step
    (None for a model without per-step answers), and the digit read, uint8 [28][28]."""
    if not data:
        raise ImageError("no image: send the image file's bytes as the request's body")
    with tempfile.TemporaryDirectory() as private:
        path = os.path.join(private, "image.npy" if data.startswith(NPY_MAGIC) else "image")
        with open(path, "wb") as f:
            f.write(data)
        try:
            digit = images.load_image(path)
        except ImageError as e:
            raise ImageError(str(e).replace(path, "the image")) from None
    results = [{"file": "image"}]
    answers.answer(model, results, {0: digit}, top_k=10, per_step=model.has_steps)
    result = results[0]
    probabilities = [0.0] * 10
    for ranked in result["top_k"]:
        probabilities[ranked["class"]] = ranked["probability"]
    return {"answer": result["class"], "probability": result["probability"],
            "probabilities": probabilities,
            "step_probabilities": result.get("step_probabilities"),
            "settled_step": result.get("settled_step"), "digit": digit.tolist()}


def describe(model: Predictor) -> dict:
    return {"name": _name(model.path), "path": model.path, "timesteps": model.timesteps,
            "per_step": model.has_steps}


def _name(path: str) -> str:
    """A model's short name: its run directory and file (runs/static/model.keras ->
    static/model.keras)."""
    parts = pathlib.Path(os.path.abspath(path)).parts
    return "/".join(parts[-2:])


def html(models: list[Predictor]) -> bytes:
    """The page, with the models it shows written into it."""
    described = json.dumps([describe(m) for m in models]).replace("</", "<\\/")
    return PAGE_FILE.read_text().replace("{{MODELS}}", described).encode()


def serve(models: list[Predictor], host: str, port: int) -> http.server.ThreadingHTTPServer:
    """A server of the page and its API for `models`, bound and ready for serve_forever()."""
    handler = type("Handler", (Handler,), {
        "models": models, "page": html(models),
        "busy": threading.Lock()})  # One reading at a time: models are not shared by calls.
    return http.server.ThreadingHTTPServer((host, port), handler)


class Handler(http.server.BaseHTTPRequestHandler):
    """GET / (the page) and /models, POST /read. `serve` gives each server its own subclass,
    with its `models`, its `page` and the lock that keeps readings one at a time."""

    models: list[Predictor] = []
    page = b""
    busy: threading.Lock

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        if path == "/":
            self._send(200, "text/html; charset=utf-8", self.page)
        elif path == "/models":
            self._json(200, [describe(m) for m in self.models])
        else:
            self._json(404, {"error": f"no page {path}: GET / or /models, POST /read"})

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/read":
            return self._json(404, {"error": f"no API {url.path}: POST /read"})
        index = urllib.parse.parse_qs(url.query).get("model", ["0"])[0]
        count = len(self.models)
        if index not in [str(i) for i in range(count)]:
            return self._json(400, {"error": f"model={index}: there are {count} models, 0 to "
                                             f"{count - 1}"})
        length = self._body_length()
        if length is None:
            return None
        data = self.rfile.read(length)
        try:
            with self.busy:
                self._json(200, read(self.models[int(index)], data))
        except ImageError as e:
            self._json(400, {"error": str(e)})

    def _body_length(self) -> int | None:
        """The body's length in bytes; None, after answering with the error, for one that is
        not a number of bytes or is over MAX_BODY_BYTES (the body is then never read)."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length < 0:  # read(-1) would read on to the end of the connection.
                raise ValueError(length)
        except ValueError:
            self.close_connection = True
            return self._json(400, {"error": "Content-Length is not a number of bytes"})
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            return self._json(413, {"error": f"the file has {length:,} bytes, over the limit of "
                                             f"{MAX_BODY_BYTES:,}"})
        return length

    def _json(self, status: int, body) -> None:
        self._send(status, "application/json", json.dumps(body).encode())

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002  Quiet: the page is the output.
        pass
