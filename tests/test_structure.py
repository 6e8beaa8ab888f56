"""The modules of app/ import each other one way only (STYLE.md: imports run downwards).

The graph is read from the source with `ast`, without importing anything. Its edges are the
imports that run when a module is imported: at module level, in a class body, under a
module-level `if` or `try`; never the ones under `if TYPE_CHECKING:` (they never run). Imports
inside a function run when it is called, once every module is loaded, so they cannot break an
import; but a circle through them is still two modules that each need the other, so they must
point downwards too (the second graph, `in_functions=True`).

Importing `app.exports.centre` runs `app/__init__.py` and `app/exports/__init__.py` first, so
it is an edge to those packages too. A module's own packages are the exception: Python has
begun running them before the module itself whatever it imports, so `from app import db` in
app/models.py and `from app.main import bp` in app/main/routes.py (the blueprint idiom) add
nothing to the order of imports, and are no edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.once

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "app"

# The task modules: what a route starts, what a worker runs and everything between, whose
# imports went round in a circle (issue 12). Among these, even an import inside a function
# must point downwards.
JOB_MODULES = {"app.models", "app.email", "app.jobs.lifecycle", "app.jobs.failures",
               "app.jobs.stop", "app.jobs.types", "app.jobs.reconcile", "app.jobs.bootstrap",
               "app.tasks", "app.jobs.worker", "app.exports.centre", "app.exports.delivery",
               "app.exports.formats", "app.exports.posts", "app.exports.activitystreams",
               "app.exports.storage", "app.imports", "app.imports.centre",
               "app.imports.identity", "app.imports.importer", "app.imports.readers"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources() -> dict[str, Path]:
    return {module_name(path): path for path in (ROOT / PACKAGE).rglob("*.py")}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_statements(tree: ast.AST, in_functions: bool) -> list[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is imported (and, with
    `in_functions`, those that run when one of its functions is called)."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending = [tree]
    while pending:
        for child in ast.iter_child_nodes(pending.pop()):
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.append(child)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                pending.extend(child.orelse)
            elif in_functions or not isinstance(
                    child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                pending.append(child)
    return found


def _with_packages(target: str) -> list[str]:
    """`a.b.c` -> a.b.c, a.b, a: importing a module runs its packages first."""
    parts = target.split(".")
    return [".".join(parts[:n]) for n in range(len(parts), 0, -1)]


def imported_modules(name: str, path: Path, known: set[str],
                     in_functions: bool = False) -> set[str]:
    """The modules of app/ that importing module `name` (at `path`) imports."""
    own_packages = set(_with_packages(name)[1:])
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in import_statements(ast.parse(path.read_text(), str(path)), in_functions):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:  # relative: from the module's package (a package's own, for __init__)
            anchor = name.split(".")[: len(name.split(".")) - node.level + is_package]
            base = ".".join(anchor + ([base] if base else []))
        for alias in node.names:  # `from app import models` imports the module app.models
            submodule = f"{base}.{alias.name}"
            targets.add(submodule if submodule in known else base)
    return {module for target in targets for module in _with_packages(target)
            if module in known and module != name and module not in own_packages}


def import_graph(in_functions: bool = False) -> dict[str, set[str]]:
    found = sources()
    return {name: imported_modules(name, path, set(found), in_functions)
            for name, path in found.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph`, as the path round it (ending where it starts), or None."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path = [start]
        branches = [iter(sorted(graph[start]))]
        while path:  # depth first; `path` is the way from `start` to where we are
            successor = next(branches[-1], None)
            if successor is None:
                done.add(path.pop())
                branches.pop()
            elif successor in path:
                return path[path.index(successor):] + [successor]
            elif successor not in done:
                path.append(successor)
                branches.append(iter(sorted(graph[successor])))
    return None


def test_the_graph_is_read_from_the_source():
    graph = import_graph()
    # Edges known to be there, so that a graph read wrong cannot pass the tests below.
    assert {"app.jobs.lifecycle", "app.models", "app.jobs.bootstrap", "app.exports"} <= graph[
        "app.tasks"]
    assert "app.main.routes" in graph["app.main"]  # a package importing its routes
    assert "app" not in graph["app.models"]  # its own package
    assert "app.tasks" not in graph["app.jobs.worker"]  # inside AppWorker.__init__
    assert "app.tasks" in import_graph(in_functions=True)["app.jobs.worker"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def test_modules_of_app_import_each_other_without_a_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_modules_of_app_import_each_other_without_a_cycle_even_inside_functions():
    graph = import_graph(in_functions=True)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle (counting imports inside functions): " + " -> ".join(cycle)


def test_the_cli_package_imports_downwards():
    """`flask ...` commands: the package registers the groups, the groups use the output helpers,
    and the helpers know nothing of the commands (they used to import each other)."""
    graph = import_graph(in_functions=True)
    groups = {"app.cli.translate", "app.cli.tasks", "app.cli.users", "app.cli.posts"}
    assert groups <= graph["app.cli"]
    assert all("app.cli.output" in graph[group] for group in groups - {"app.cli.translate"})
    assert not graph["app.cli.output"] & (groups | {"app.cli"})


def test_task_modules_import_downwards_even_inside_functions():
    graph = {name: edges & JOB_MODULES for name, edges in import_graph(in_functions=True).items()
             if name in JOB_MODULES}
    assert set(graph) == JOB_MODULES  # none renamed away from under this test
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_worker_bootstrap_imports_nothing_of_ours_above_the_app_factory():
    graph = import_graph(in_functions=True)
    assert graph["app.jobs.bootstrap"] <= {"app", "app.redis_connection"}
    assert not graph["app.models"] & {"app.jobs", "app.jobs.lifecycle", "app.tasks",
                                      "app.jobs.worker", "app.jobs.bootstrap"}


def test_app_keeps_a_short_list_of_top_level_modules():
    """A reader scans app/ at a glance: its concepts live in packages (app/jobs/, app/exports/,
    app/security/, the blueprints), and the top level holds only what every part shares."""
    top_level = sorted(path.stem for path in (ROOT / PACKAGE).glob("*.py"))
    assert len(top_level) <= 14, top_level


def test_the_export_walk_runs_one_way():
    """What happens when a user clicks Export is read in three files (README.md, "The code"):
    the user's action (app/exports/actions.py, which the pages and the API both call), the
    lifecycle, the task; the export's own modules below them never call back up
    into the job system (they used to, four times). The import's walk is the same."""
    graph = import_graph(in_functions=True)
    assert "app.exports.actions" in graph["app.exports.routes"]
    assert "app.jobs.lifecycle" in graph["app.exports.actions"]
    assert "app.imports.actions" in graph["app.imports.routes"]
    assert "app.jobs.lifecycle" in graph["app.imports.actions"]
    assert {"app.jobs.lifecycle", "app.exports.centre", "app.exports.delivery",
            "app.imports.centre", "app.imports.importer"} <= graph["app.tasks"]
    below_the_jobs = [name for name in graph
                      if name.split(".")[:2] in (["app", "exports"], ["app", "imports"])
                      and name not in ("app.exports.routes", "app.exports.actions",
                                       "app.imports.routes", "app.imports.actions")
                      ] + ["app.email", "app.models"]
    climbing = {name: sorted(m for m in graph[name] if m.split(".")[:2] == ["app", "jobs"])
                for name in below_the_jobs}
    assert {name: up for name, up in climbing.items() if up} == {}


# --------------------------------------------------------------------------- private names

# Private names of one module that another still reaches for, each with why it is left: a new
# entry needs a reason, and an entry whose import is gone fails the test below (remove it).
KNOWN_PRIVATE_IMPORTS: dict[tuple[str, str], str] = {}


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and name != "_"


def private_imports(path: Path, ours: set[str]) -> set[str]:
    """The private names of our modules that the module at `path` uses: `from x import _y`,
    and `x._y` where `x` is one of our modules it imported."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    modules: dict[str, str] = {}  # local name -> our module it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ours and not node.level:
            for alias in node.names:
                if f"{node.module}.{alias.name}" in ours:
                    modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                elif _is_private(alias.name):
                    found.add(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            modules.update({alias.asname: alias.name for alias in node.names
                            if alias.asname and alias.name in ours})
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in modules and _is_private(node.attr)):
            found.add(f"{modules[node.value.id]}.{node.attr}")
    return found


def test_no_module_uses_a_private_name_of_another_module():
    paths = {module_name(path): path for folder in (PACKAGE, "tests", "bench")
             for path in (ROOT / folder).rglob("*.py")}
    used = {(name, private) for name, path in paths.items()
            for private in private_imports(path, set(paths))
            if not private.startswith(name + ".")}
    assert sorted(used - KNOWN_PRIVATE_IMPORTS.keys()) == [], \
        "give the name a public one, or move the helper where both can import it"
    assert sorted(KNOWN_PRIVATE_IMPORTS.keys() - used) == [], \
        "no longer imported: remove from KNOWN_PRIVATE_IMPORTS"


def test_a_private_import_is_seen(tmp_path):
    """The reader above is read right: both ways of reaching another module's private name."""
    module = tmp_path / "reader.py"
    module.write_text("from app.jobs import lifecycle\nfrom app.models import _hidden\n"
                      "lifecycle._secret()\n")
    assert private_imports(module, {"app.jobs", "app.jobs.lifecycle", "app.models"}) == {
        "app.models._hidden", "app.jobs.lifecycle._secret"}
