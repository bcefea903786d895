"""The house (docs/ARCHITECTURE.md): imports run down the layers only, no module is part of a circle, and an op's
name is spelled in at most four modules. Read from the source with `ast`, every import counted (also the ones inside
functions)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "hba_fast"

# Bottom (0) to top: a module may import its own layer's modules and those of lower layers.
LAYERS = {
    "errors": 0, "atomic": 0, "safe_load": 0, "kernels": 0,
    "augment": 1,
    "schedule": 2,
    "data": 3, "models": 3,
    "run": 4,
    "engine": 5,
    "config": 6, "search": 6, "train": 6,
    "compare": 7, "tune": 7,
    "cli": 8,
}


def modules() -> dict[str, Path]:
    """'augment.ops' -> its file, for every module of the package but hba_fast/__init__.py (the public names'
    lazy table, which points at every layer by design)."""
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts == ["__init__"]:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules `name` imports (relative or absolute, anywhere in the file)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.startswith("hba_fast"):
                target = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:  # `from . import atomic` names a module
                sub = ".".join(target + [alias.name])
                found.add(sub if sub in known else ".".join(target))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("hba_fast."):
                    found.add(alias.name[len("hba_fast."):])
    return {m for m in found if m in known and m != name}


def layer(module: str) -> int:
    return LAYERS[module.split(".")[0]]


def test_every_package_has_a_layer():
    assert {m.split(".")[0] for m in modules()} == set(LAYERS)


def test_imports_run_down_the_layers_only():
    mods = modules()
    up = [(m, t) for m, p in mods.items() for t in imports(m, p, set(mods)) if layer(t) > layer(m)]
    assert up == [], f"imports that run up a layer: {up}"


def test_no_circle():
    mods = modules()
    graph = {m: imports(m, p, set(mods)) for m, p in mods.items()}
    # A package's __init__ is where its modules are reached from; a module importing its own package's __init__
    # (for a re-exported name) is not a circle of modules, so package nodes keep only what they import.
    state: dict[str, int] = {}
    circles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1 and not (m.startswith(t + ".")):
                circles.append(stack[stack.index(t):] + [t] if t in stack else [m, t])
            elif t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert circles == [], f"import circles: {circles}"


def test_an_ops_name_is_spelled_in_at_most_four_modules():
    from hba_fast.augment.ops import OPS

    mods = modules()
    for op in OPS:
        spelled = sorted(m for m, p in mods.items() if re.search(rf"[\"']{op.name}[\"']", p.read_text()))
        assert len(spelled) <= 4 and "augment.ops" in spelled, (op.name, spelled)


def test_at_most_ten_modules_at_the_top():
    top = [p.name for p in ROOT.glob("*.py")]
    assert len(top) <= 10, top
