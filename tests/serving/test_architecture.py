"""The rooms of serving/ and their import rules (DESIGN.md, "Who may import whom"), and no import cycles."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every project module a file imports, at module level or inside functions."""
    mod = module_name(path)
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                pkg = mod.split(".")[: -node.level] if not path.name == "__init__.py" else mod.split(".")[: len(mod.split(".")) - node.level + 1]
                base = ".".join([*pkg, base]) if base else ".".join(pkg)
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in out if m.split(".")[0] in ("serving", "flows")}


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for top in ("serving", "flows") for p in (ROOT / top).rglob("*.py")}
    return {m: {i for i in imports_of(p) if i in files and i != m} for m, p in files.items()}


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(g[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)


FORBIDDEN = {  # room -> prefixes it must not import
    "serving.gate": ("serving.engine", "serving.lineio", "serving.evidence", "serving.api", "serving.station",
                     "serving.config", "serving.alarms"),
    "serving.engine": ("serving.lineio", "serving.evidence", "serving.api", "serving.station", "serving.config"),
    "serving.lineio": ("serving.engine", "serving.evidence", "serving.api", "serving.station", "serving.gate",
                       "serving.config"),
    "serving.evidence": ("serving.lineio", "serving.engine", "serving.api", "serving.station", "serving.config"),
    "serving.drift": ("serving.engine", "serving.lineio", "serving.evidence", "serving.api", "serving.station",
                      "serving.gate", "serving.config"),
    "serving.station": ("serving.api",),
    "serving": ("flows",),
}


def test_each_room_imports_only_what_the_design_allows():
    offenders = []
    for mod, deps in graph().items():
        for room, banned in FORBIDDEN.items():
            if mod == room or mod.startswith(room + "."):
                offenders += [f"{mod} -> {d}" for d in deps if d.startswith(banned)]
    assert offenders == []


def test_only_the_cli_reaches_the_api():
    users = {m for m, deps in graph().items() if any(d.startswith("serving.api") for d in deps)}
    assert {u for u in users if not u.startswith("serving.api")} <= {"serving.cli"}
