"""The package map holds (docs/ARCHITECTURE.md): imports run one way, `TYPE_CHECKING` and
function-level imports included; nothing below the facade knows it; the core imports no click;
only the git layer imports GitPython; no module over 400 lines; at most 10 modules at the top."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hystate"
# lowest first: a package may import only from its own layer's packages below it or lower layers
LAYERS = [
    {"core"},
    {"git"},
    {"cache"},
    {"engine"},
    {"review"},
    {"fsck", "events", "cluster"},
    {"reports"},
    {"manager"},
    {"integrations", "serve"},
    {"cli"},
    {"demo", "demo_cluster", "demo_orchestrators", "launcher", "__init__", "__main__"},
]


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        else:
            continue
        for imported in names:
            while imported and imported not in known and imported != "hystate":
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                out.add(imported)
    return out


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports(name, path, known) for name, path in found.items()}


def room(name: str) -> str:
    """The package (or top-level module) a module lives in: ``hystate.engine.steps`` -> engine."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer(name: str) -> int:
    return next(i for i, rooms in enumerate(LAYERS) if room(name) in rooms)


def test_every_room_has_a_layer() -> None:
    for name in graph():
        assert any(room(name) in rooms for rooms in LAYERS), f"{name}: no layer in this test"


def test_imports_run_one_way() -> None:
    wrong = []
    for name, deps in graph().items():
        for dep in deps:
            if dep == "hystate" and room(name) != "__init__":
                # the lazy front door is for users: hystate's own modules import from where
                # things live
                if layer(name) < layer("hystate.manager"):
                    wrong.append(f"{name} -> hystate")
                continue
            if layer(dep) > layer(name):
                wrong.append(f"{name} -> {dep}")
    assert not wrong, "imports upwards:\n" + "\n".join(sorted(wrong))


def test_no_module_circle() -> None:
    deps = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in deps.get(v, ()):
            if w not in deps:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in deps:
        if v not in index:
            visit(v)
    assert not circles, circles


@pytest.mark.parametrize(
    ("rooms", "forbidden"),
    [
        ({"core", "git", "cache", "engine", "review", "fsck", "reports", "events", "cluster"},
         "click"),
    ],
)  # fmt: skip
def test_no_click_below_the_cli(rooms: set[str], forbidden: str) -> None:
    found = modules()
    for name, path in found.items():
        if room(name) not in rooms:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] != forbidden for a in node.names), name
            elif isinstance(node, ast.ImportFrom) and not node.level:
                assert (node.module or "").split(".")[0] != forbidden, name


def test_only_the_git_layer_imports_gitpython() -> None:
    for name, path in modules().items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(
                a.name.split(".")[0] == "git" for a in node.names
            ):
                assert room(name) == "git", f"{name} imports GitPython"
            if isinstance(node, ast.ImportFrom) and not node.level:
                top = (node.module or "").split(".")[0]
                assert top != "git" or room(name) == "git", f"{name} imports GitPython"


def test_sizes_and_the_top_level() -> None:
    big = [
        f"{p.relative_to(PACKAGE.parent)}: {n}"
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 400
    ]
    assert not big, big
    top = [p.name for p in PACKAGE.glob("*.py")]
    assert len(top) <= 10, top
    for sub in PACKAGE.iterdir():
        init = sub / "__init__.py"
        if sub.is_dir() and init.exists():
            doc = ast.get_docstring(ast.parse(init.read_text()))
            assert doc, f"{sub.name}/__init__.py says nothing of what it owns"
