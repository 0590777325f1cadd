"""The ``api`` package's modules import one another without a circle.

- Each module of ``api`` imports first, on its own, in an interpreter where no module of ``api``
  is loaded yet (an import circle shows as a partly made module, whichever comes first).
- Following every import of one ``api`` module by another, those the type checker alone sees
  included, no module comes back to itself; the one exception is ``api.keys``, which names the
  types of the keys made in ``api`` for the type checker only, and imports no ``api`` module as
  it runs (every module may import it).
- Every app and request key is made in ``api.keys``, and nowhere else.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

API = Path(__file__).resolve().parents[2] / "api"
MODULES = sorted(f"api.{path.stem}" for path in API.glob("*.py") if path.stem != "__init__")


def _imports(module: str, *, type_checking: bool) -> set[str]:
    """The ``api`` modules ``module`` imports at its top level (and in its TYPE_CHECKING
    blocks, when ``type_checking``)."""
    tree = ast.parse((API / f"{module.removeprefix('api.')}.py").read_text())
    found: set[str] = set()

    def walk(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                if type_checking:
                    walk(node.body)
                walk(node.orelse)
            elif isinstance(node, ast.ImportFrom) and node.module is not None:
                if node.module == "api":
                    found.update(f"api.{alias.name}" for alias in node.names)
                elif node.module.startswith("api."):
                    found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("api."))

    walk(tree.body)
    return found & set(MODULES) - {module}


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
    """A circle of ``graph``, if it has one."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module):], module]
        if module in done:
            return None
        for imported in sorted(graph[module]):
            circle = visit(imported, [*path, module])
            if circle is not None:
                return circle
        done.add(module)
        return None

    for module in sorted(graph):
        circle = visit(module, [])
        if circle is not None:
            return circle
    return None


def test_each_api_module_imports_first_in_a_fresh_interpreter() -> None:
    script = (
        "import importlib, sys\n"
        f"for name in {MODULES!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'api' or m.startswith('api.')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, cwd=API.parent, check=False)
    assert result.returncode == 0, result.stderr


def test_no_api_module_comes_back_to_itself_through_its_imports() -> None:
    graph = {module: _imports(module, type_checking=module != "api.keys") for module in MODULES}
    assert _circle(graph) is None, " → ".join(_circle(graph) or [])


def test_the_keys_module_imports_no_api_module_as_it_runs() -> None:
    assert _imports("api.keys", type_checking=False) == set()


def test_every_app_and_request_key_is_made_in_the_keys_module() -> None:
    makers = {}
    for module in MODULES:
        source = (API / f"{module.removeprefix('api.')}.py").read_text()
        makers[module] = source.count("web.AppKey(") + source.count("web.RequestKey(")
    assert makers.pop("api.keys") >= 20
    assert {module: n for module, n in makers.items() if n} == {}
