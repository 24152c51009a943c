"""What the documentation says of the code, held to the code: the README's layout (the
modules, in the order in which each imports only those above it) and docs/training.md's flag
table (every flag of python -m mnist_rnn.train, with its default)."""

import ast
import pathlib
import re

from absl import flags

from mnist_rnn import train
from mnist_rnn.config import TrainConfig

ROOT = pathlib.Path(__file__).resolve().parents[1]


def listed_modules() -> list[str]:
    """The modules of the README's layout block, in its order."""
    layout = (ROOT / "README.md").read_text().split("## Layout", 1)[1]
    paths = re.findall(r"^(mnist_rnn/\S+\.py)\s", layout, flags=re.M)
    return [path[:-3].replace("/", ".") for path in paths]


def imported(module: str) -> set[str]:
    """The mnist_rnn modules `module` imports, anywhere in its file."""
    tree = ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "mnist_rnn":
            found |= {f"mnist_rnn.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mnist_rnn."):
            found |= {f"{node.module}.{alias.name}" if (ROOT / node.module.replace(".", "/")
                      / f"{alias.name}.py").exists() else node.module for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("mnist_rnn.")}
    return found - {module, "mnist_rnn.compare"}  # The package itself holds nothing.


def test_the_readme_lists_every_module_and_each_imports_only_those_above_it():
    listed = listed_modules()
    on_disk = sorted(str(p.relative_to(ROOT))[:-3].replace("/", ".")
                     for p in (ROOT / "mnist_rnn").rglob("*.py")
                     if p.name != "__init__.py")
    assert sorted(listed) == on_disk
    for i, module in enumerate(listed):
        below = imported(module) - set(listed[:i])
        assert not below, f"{module} imports {sorted(below)}, listed below it in the README"


def flag_table() -> dict[str, str]:
    """docs/training.md's flag table: {flag name: its default, as written}."""
    rows = re.findall(r"^\| `--(\w+)` \| ([^|]+) \|", (ROOT / "docs/training.md").read_text(),
                      flags=re.M)
    return {name: default.strip().strip("`") for name, default in rows}


def same(written: str, value) -> bool:
    if isinstance(value, bool):
        return written == str(value).lower()
    if isinstance(value, (int, float)):
        return float(written) == value
    return written == value


def test_the_flag_table_is_the_flags_of_train_with_their_defaults():
    flag_values = flags.FlagValues()
    train.define_flags(flag_values)
    fields = {f for f in TrainConfig.__dataclass_fields__ if f in flag_values}
    table = flag_table()
    assert set(table) == fields, "docs/training.md's flag table and the flags differ"
    for name in fields:
        default = flag_values[name].default
        if default is not None:  # None is described in words ("TFDS default").
            assert same(table[name], default), (name, table[name], default)
