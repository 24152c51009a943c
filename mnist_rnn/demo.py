"""Draw a digit and watch the LSTM read it: `python -m mnist_rnn.demo --model=PATH`.

Serves a page on http://127.0.0.1:7860 (--host, --port) where a digit drawn with the mouse or a
finger, or an uploaded image, is read row by row: the digit as the model sees it, the answer
after each row, the row where it settles, and the final answer. With two --model flags (say
static and dynamic), both read the same drawing side by side.

Beside the page, `POST /read` (the image file's bytes as the body; `?model=1` for the second
model) answers with JSON: `answer`, `probabilities`, `step_probabilities` ([rows][10]),
`settled_step` and `digit` (the 28x28 pixels read), the numbers `predict --per_step --json` gives
for the same image. `GET /models` lists the models.

The page is one HTML file served by Python's own http.server: no package beyond the base
install, nothing fetched from the network, and no path that the browser names is ever read.
"""

import sys

from absl import flags

from mnist_rnn import cli

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    fv = dict(flag_values=flag_values)
    flags.DEFINE_multi_string("model", None,
                              "A model.keras file, a saved_model/ directory or a .tflite file; "
                              "twice to compare two models on the same drawing.", **fv)
    flags.mark_flag_as_required("model", flag_values=flag_values)
    flags.DEFINE_string("host", "127.0.0.1",
                        "The address to listen on: this machine only, unless you say otherwise "
                        "(0.0.0.0 opens it to the network).", **fv)
    flags.DEFINE_integer("port", 7860, "The port to listen on (0: any free one).",
                         lower_bound=0, upper_bound=65535, **fv)
    flags.register_validator("model", lambda paths: len(paths) <= 2,
                             "--model: at most two models, to read side by side",
                             flag_values=flag_values)


def main(argv):
    del argv  # cli.run refuses stray arguments.
    from mnist_rnn.serving import formats, page  # TensorFlow loads once the flags are valid.

    models = [formats.load(path, eager=True) for path in FLAGS.model]  # Once, at start.
    server = page.serve(models, FLAGS.host, FLAGS.port)
    host, port = server.server_address[:2]
    print(f"Reading digits at http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except cli.Stopped as e:  # Ctrl-C is how a server ends: no file is left to finish.
        print("Stopped serving.", file=sys.stderr)
        return 128 + e.signal_number
    finally:
        server.server_close()


if __name__ == "__main__":
    cli.run(main, define_flags)
