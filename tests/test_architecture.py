"""The package's import rules (issue 13), read from the source with ``ast``.

Every ``import`` / ``from … import`` of every module under ``minillm/`` counts, including imports inside
functions (a lazy import is still a dependency). The rules:

- ``minillm/objectives/`` holds pure losses over tensors: of the project it imports only
  ``minillm.errors`` and its own modules (no data, evaluation, rollout, models, training modules,
  Lightning or entry points);
- ``minillm/rollout/`` imports no objective, no data and no evaluation module;
- ``minillm/data/`` imports no evaluation module (SeqKD samples through ``minillm.rollout``);
- ``minillm/training/`` (the LightningModules, the round, the trainer) imports no evaluation module:
  validation metrics are callbacks that evaluation supplies;
- nothing under ``minillm/`` imports an entry point; the modules of ``minillm/bench/`` (the package
  behind ``python -m minillm.bench``) import each other, and nothing outside it imports them;
- ``minillm/training/`` imports of the project only training, objectives, rollout, data, models, errors,
  instantiate (building ``_target_`` nodes) and the checkpoint plumbing (resume, safe_load);
- ``minillm/errors.py`` holds the exception classes only and imports nothing of the project (building
  config nodes lives in ``minillm/instantiate.py``).
- the evaluation command's modules keep to their part: its config checks (``evaluation/evaluate_config``)
  import only errors, its model loading (``evaluation/loading``) no metric, data, rollout or training, its
  metrics (``evaluation/suite_metrics``) and outputs (``evaluation/suite_outputs``) neither the run's config
  checks nor another's part, and only the orchestration (``evaluation/suite``) ties them together.
- ``minillm/resume/`` (the checkpoint plumbing) imports of the project only itself, errors and safe_load;
- ``minillm/schema/`` (every config key's type, default and range) imports of the project only itself and
  errors, and no torch: ``import minillm`` registers it before any config is composed;
- only ``minillm.resume.lightning_state`` reaches into Lightning's private loop state (the checkpoint's
  ``loops``, the epoch loop's ``_batches_that_stepped``, ``LightningModule._trainer``): what it relies on is
  checked against the installed Lightning by ``tests/test_lightning_private.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "minillm"

# Modules run as programs: each has a ``main`` and ``if __name__ == "__main__"`` (checked below).
# ``minillm.cli`` is not one of them: it is the plumbing they share (logging set-up, the one-line error).
ENTRY_POINTS = {
    "minillm.run",
    "minillm.evaluate",
    "minillm.compare",
    "minillm.report",
    "minillm.bench.__main__",
    "minillm.models.assets",
    "minillm.models.convert",
    "minillm.diagnose",
    "minillm.rollout.vllm_server",  # the engine's process, started by vllm_engine in the engine's own venv
}
# Programs the project starts itself, with no console script; every other entry point is a command (test_scripts).
INTERNAL_PROGRAMS = {"minillm.rollout.vllm_server"}

# Packages of an entry point's own modules: only their own modules import them.
ENTRY_POINT_PACKAGES = {"minillm.bench"}

# What ``minillm/training/`` may import of the project.
TRAINING_ALLOWED = (
    "minillm.training",
    "minillm.objectives",
    "minillm.rollout",
    "minillm.data",
    "minillm.models",
    "minillm.errors",
    "minillm.instantiate",
    "minillm.resume",
    "minillm.safe_load",
)

# What each module of the evaluation command may import of the project (beyond itself).
EVALUATION_COMMAND_ALLOWED = {
    "minillm.evaluation.evaluate_config": ("minillm.errors",),
    "minillm.evaluation.loading": ("minillm.errors", "minillm.models", "minillm.safe_load", "minillm.resume"),
    "minillm.evaluation.suite_metrics": (
        "minillm.evaluation.calibration",
        "minillm.evaluation.exposure",
        "minillm.evaluation.sampled",
        "minillm.evaluation.plots",
        "minillm.evaluation.loading",  # the teacher that exposure bias compares with
    ),
    "minillm.evaluation.suite_outputs": ("minillm.evaluation.report", "minillm.loggers"),
}

# What ``minillm/resume/`` may import of the project.
RESUME_ALLOWED = ("minillm.resume", "minillm.errors", "minillm.safe_load")
# What ``minillm/schema/`` may import of the project.
SCHEMA_ALLOWED = ("minillm.schema", "minillm.errors")

# Lightning's private state: attributes and checkpoint keys that only LIGHTNING_STATE may name.
LIGHTNING_STATE = "minillm.resume.lightning_state"
LIGHTNING_PRIVATE_ATTRIBUTES = {"fit_loop", "epoch_loop", "_batches_that_stepped", "_trainer"}
LIGHTNING_PRIVATE_KEYS = {"loops", "fit_loop", "_batches_that_stepped"}
LIGHTNING_PRIVATE_KEY_PREFIXES = ("epoch_loop.", "epoch_progress")

# Third-party packages an objective must not reach for (losses take tensors, not trainers or models).
OBJECTIVE_FORBIDDEN_LIBRARIES = ("lightning", "pytorch_lightning", "transformers", "hydra", "omegaconf")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in the file, as absolute dotted names."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: resolve against this module's package
                base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
            found.add(base)
            # ``from minillm import run`` imports the module minillm.run
            found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def project_modules() -> dict[str, set[str]]:
    return {module_name(p): imported_modules(p) for p in sorted(PACKAGE.rglob("*.py"))}


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_the_listed_entry_points_are_the_programs():
    """Each listed module has a main and a ``__main__`` guard, and no other module has both."""
    programs = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        has_main = any(
            isinstance(n, ast.FunctionDef | ast.Assign)
            and (
                n.name == "main"
                if isinstance(n, ast.FunctionDef)
                else any(isinstance(t, ast.Name) and t.id == "main" for t in n.targets)
            )
            for n in tree.body
        )
        guarded = any(
            isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) and "__name__" in ast.unparse(n.test)
            for n in tree.body
        )
        if has_main and guarded:
            programs.add(module_name(path))
    assert programs == ENTRY_POINTS


def test_objectives_import_nothing_of_the_project_but_errors():
    bad = []
    for name, imports in project_modules().items():
        if not within(name, "minillm.objectives"):
            continue
        for dep in sorted(imports):
            project = within(dep, "minillm")
            allowed = dep == "minillm" or within(dep, "minillm.errors") or within(dep, "minillm.objectives")
            library = any(within(dep, lib) for lib in OBJECTIVE_FORBIDDEN_LIBRARIES)
            if (project and not allowed) or library:
                bad.append(f"{name} imports {dep}")
    assert not bad, "objectives must be pure losses over tensors:\n" + "\n".join(bad)


def test_rollout_imports_no_objective():
    bad = [
        f"{name} imports {dep}"
        for name, imports in project_modules().items()
        if within(name, "minillm.rollout")
        for dep in sorted(imports)
        if within(dep, "minillm.objectives")
    ]
    assert not bad, "\n".join(bad)


def test_data_imports_nothing_from_evaluation():
    """Evaluation reads data (examples, records, checkers); data never reads evaluation back. SeqKD's
    teacher samples come from ``minillm.rollout``, as evaluation's own samples do."""
    bad = [
        f"{name} imports {dep}"
        for name, imports in project_modules().items()
        if within(name, "minillm.data")
        for dep in sorted(imports)
        if within(dep, "minillm.evaluation")
    ]
    assert not bad, "\n".join(bad)


def test_rollout_imports_neither_data_nor_evaluation():
    """Rollout decodes token ids with models; what the ids are (data) and what is scored (evaluation)
    sit above it."""
    bad = [
        f"{name} imports {dep}"
        for name, imports in project_modules().items()
        if within(name, "minillm.rollout")
        for dep in sorted(imports)
        if within(dep, "minillm.data") or within(dep, "minillm.evaluation")
    ]
    assert not bad, "\n".join(bad)


def test_nothing_in_the_package_imports_an_entry_point():
    bad = []
    for name, imports in project_modules().items():
        for dep in sorted(imports):
            if any(within(dep, entry) for entry in ENTRY_POINTS - {name}):
                bad.append(f"{name} imports {dep}")
            elif any(within(dep, p) and not within(name, p) for p in ENTRY_POINT_PACKAGES):
                bad.append(f"{name} imports {dep}, a module of an entry point's package")
    assert not bad, "entry points are run, never imported:\n" + "\n".join(bad)


def test_training_imports_only_objectives_rollout_data_and_models():
    bad = [
        f"{name} imports {dep}"
        for name, imports in project_modules().items()
        if within(name, "minillm.training")
        for dep in sorted(imports)
        if within(dep, "minillm")
        and dep != "minillm"
        and not within(dep, "minillm.errors")
        and not any(within(dep, allowed) for allowed in TRAINING_ALLOWED)
    ]
    assert not bad, "\n".join(bad)


def test_the_evaluation_command_modules_keep_to_their_part():
    """Checks, loading, metrics and outputs of ``python -m minillm.evaluate`` each import only what their
    part needs; ``evaluation/suite`` (the orchestration) is the one module that imports all four, and of the
    package only the entry point and ``suite`` import it."""
    modules = project_modules()
    bad = []
    for name, allowed in EVALUATION_COMMAND_ALLOWED.items():
        assert name in modules, f"{name}: no such module"
        for dep in sorted(modules[name]):
            if within(dep, "minillm") and dep != "minillm" and not within(dep, name):
                if not any(within(dep, a) for a in allowed):
                    bad.append(f"{name} imports {dep}")
    for name, imports in modules.items():
        if name != "minillm.evaluation.suite" and all(
            any(within(dep, part) for dep in imports) for part in EVALUATION_COMMAND_ALLOWED
        ):
            bad.append(f"{name} imports every part of the evaluation command (only suite may)")
        users = {"minillm.evaluate", "minillm.evaluation.suite"}
        if name not in users and any(within(dep, "minillm.evaluation.suite") for dep in imports):
            bad.append(f"{name} imports minillm.evaluation.suite (the command's body: only minillm.evaluate)")
    assert not bad, "\n".join(bad)


def test_errors_holds_only_the_exception_classes():
    """Every module may import ``minillm.errors`` (objectives only that): it defines exception classes and
    nothing else, and imports nothing of the project."""
    path = PACKAGE / "errors.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    other = [
        ast.unparse(node).splitlines()[0]
        for node in tree.body
        if not isinstance(node, ast.ClassDef | ast.Import | ast.ImportFrom)
        and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))  # the docstring
    ]
    assert not other, "errors.py holds exception classes only:\n" + "\n".join(other)
    bases = {
        node.name: [ast.unparse(b) for b in node.bases]
        for node in tree.body
        if isinstance(node, ast.ClassDef)
    }
    assert all(b and set(b) <= {"Exception", "BaseException", *bases} for b in bases.values()), bases
    assert not [dep for dep in imported_modules(path) if within(dep, "minillm")]


def test_resume_imports_only_itself_errors_and_safe_load():
    """The checkpoint plumbing sits below training and evaluation: it never reads them back."""
    bad = [
        f"{name} imports {dep}"
        for name, imports in project_modules().items()
        if within(name, "minillm.resume")
        for dep in sorted(imports)
        if within(dep, "minillm") and dep != "minillm" and not any(within(dep, a) for a in RESUME_ALLOWED)
    ]
    assert not bad, "\n".join(bad)


def test_schema_imports_only_itself_and_errors_and_no_torch():
    bad = [
        f"{name} imports {dep}"
        for name, imports in project_modules().items()
        if within(name, "minillm.schema")
        for dep in sorted(imports)
        if (within(dep, "minillm") and dep != "minillm" and not any(within(dep, a) for a in SCHEMA_ALLOWED))
        or within(dep, "torch")
    ]
    assert not bad, "\n".join(bad)


def lightning_private_names(path: Path) -> list[str]:
    """``line: name`` for each attribute or string (docstrings aside) in ``path`` that names Lightning's
    private loop state."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in LIGHTNING_PRIVATE_ATTRIBUTES:
            found.append(f"{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            named = (
                node.value in LIGHTNING_PRIVATE_KEYS | LIGHTNING_PRIVATE_ATTRIBUTES
            )  # also getattr(x, "...")
            if named or node.value.startswith(LIGHTNING_PRIVATE_KEY_PREFIXES):
                found.append(f"{node.lineno}: {node.value!r}")
    return found


def test_only_lightning_state_touches_lightning_private_state():
    """One module to fix when a Lightning upgrade moves its loop state; the check sees the names there."""
    paths = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    bad = [
        f"{name}:{hit}"
        for name, path in paths.items()
        if name != LIGHTNING_STATE
        for hit in lightning_private_names(path)
    ]
    assert not bad, f"Lightning's private state outside {LIGHTNING_STATE}:\n" + "\n".join(bad)
    seen = " ".join(lightning_private_names(paths[LIGHTNING_STATE]))
    for name in (".fit_loop", "._batches_that_stepped", "._trainer", "'loops'", "'epoch_loop.state_dict'"):
        assert name in seen, f"the check no longer sees {name} in {LIGHTNING_STATE}"


def test_objectives_and_data_agree_on_the_ignored_label():
    """The losses keep their own copy of the label that marks no-loss positions (they may not import
    data); it must be the one the data module writes."""
    from minillm.data.datasets import IGNORE_INDEX as written
    from minillm.objectives.supervised import IGNORE_INDEX as ignored

    assert written == ignored == -100


@pytest.mark.parametrize(
    "source, expected",
    [
        ("import minillm.run", {"minillm.run"}),
        ("def f():\n    from minillm.rollout.generate import sample_responses", None),
        ("from minillm import run", {"minillm", "minillm.run"}),
        ("from ..evaluation import suite", {"minillm.evaluation", "minillm.evaluation.suite"}),
        ("from . import divergences", {"minillm.objectives", "minillm.objectives.divergences"}),
    ],
)
def test_the_import_reader_sees_lazy_and_relative_imports(tmp_path, monkeypatch, source, expected):
    """The checks above are only as good as this reader: it must see imports inside functions and
    resolve relative ones (here as if the file were minillm/objectives/x.py)."""
    folder = tmp_path / "minillm" / "objectives"
    folder.mkdir(parents=True)
    path = folder / "x.py"
    path.write_text(source + "\n")
    monkeypatch.setattr(f"{__name__}.PACKAGE", tmp_path / "minillm")
    found = imported_modules(path)
    if expected is None:
        expected = {"minillm.rollout.generate", "minillm.rollout.generate.sample_responses"}
    assert found == expected
