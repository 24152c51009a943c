"""What the documentation says of the code, held to the code: the README's layout (the base, the
stages as folders in their order, the commands; each module importing only what comes before
it), the size of each function, and docs/training.md's flag table (every flag of python -m
mnist_rnn.train, with its default)."""

import ast
import json
import pathlib
import re

from absl import flags

from helpers import run_python
from mnist_rnn import train
from mnist_rnn.config import TrainConfig

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mnist_rnn"
MAX_TOP_MODULES = 12
MAX_FUNCTION_LINES = 50


def layout() -> dict[str, tuple[int, int]]:
    """The modules of the README's layout block: {module: (its stage's rank, its place)}. The
    modules at the top before the first folder are the base (rank 0), each folder is a stage
    (ranks 1, 2, ... in the README's order), and the modules after them are the commands."""
    block = (ROOT / "README.md").read_text().split("## Layout", 1)[1].split("```")[1]
    found, rank, package = {}, 0, "mnist_rnn"
    for line in block.splitlines():
        if match := re.match(r"^  (\w+)/\s", line):
            rank, package = rank + 1, f"mnist_rnn.{match.group(1)}"
        elif match := re.match(r"^    (\w+)\.py\s", line):
            found[f"{package}.{match.group(1)}"] = (rank, len(found))
        elif match := re.match(r"^  (\w+)\.py\s", line):
            if package != "mnist_rnn":  # The first module after the folders: a command.
                rank, package = rank + 1, "mnist_rnn"
            found[f"mnist_rnn.{match.group(1)}"] = (rank, len(found))
    return found


def stage_of(module: str) -> str:
    """The folder a module is in, or the module itself at the top."""
    return ".".join(module.split(".")[:2])


def on_disk() -> list[str]:
    return sorted(".".join(p.relative_to(ROOT).with_suffix("").parts)
                  for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")


def imported(module: str) -> set[str]:
    """The mnist_rnn modules (or packages) `module` imports, anywhere in its file."""
    tree = ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mnist_rnn"):
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                is_module = (ROOT / (name.replace(".", "/") + ".py")).exists() or (
                    ROOT / name.replace(".", "/")).is_dir()
                found.add(name if is_module else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("mnist_rnn.")}
    return found - {module, "mnist_rnn"}


def test_the_readme_lists_every_module_under_its_folder():
    assert sorted(layout()) == on_disk()
    top = [m for m in on_disk() if m.count(".") == 1]
    assert len(top) <= MAX_TOP_MODULES, top


def test_each_module_imports_only_the_stages_before_it_and_its_own_above_it():
    """data -> model -> evaluation -> training -> serving -> study: a stage may use those
    before it, never one after; within a stage, a module uses only those listed above it."""
    listed = layout()
    packages = {stage_of(m): rank for m, (rank, _) in listed.items() if m.count(".") == 2}
    for module, (rank, place) in listed.items():
        for used in imported(module):
            used_rank, used_place = listed.get(used, (packages.get(used), -1))
            assert used_rank is not None, f"{module} imports {used}, not in the layout"
            assert used_rank < rank or (used_rank == rank and used_place < place), (
                f"{module} imports {used}, which comes after it in the README's layout")


def test_training_loads_nothing_of_serving_or_study():
    script = "import json, sys, mnist_rnn.training.trainer; print(json.dumps(list(sys.modules)))"
    result = run_python("-c", script, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = {m for m in json.loads(result.stdout.splitlines()[-1]) if m.startswith("mnist_rnn")}
    assert "mnist_rnn.training.trainer" in loaded
    assert not {m for m in loaded if m.startswith(("mnist_rnn.serving", "mnist_rnn.study"))}


def test_each_stage_says_its_job_in_one_line():
    for init in PACKAGE.glob("*/__init__.py"):
        tree = ast.parse(init.read_text())
        docstring = ast.get_docstring(tree)
        assert docstring and "\n" not in docstring, init
        # A docstring only: importing one module of a stage loads no other.
        assert len(tree.body) == 1, init


def test_no_function_is_longer_than_a_screen():
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                assert lines <= MAX_FUNCTION_LINES, f"{path}:{node.lineno} {node.name}: {lines}"


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
