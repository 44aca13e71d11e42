"""The layers import downward only (docs/architecture.md): checked on the source, not hoped for.

Each package lists the packages it may import. An upward import that must stay for a while is
listed in ``KNOWN_UPWARD`` with the module that makes it (none is, since issue 19); a second test
fails when an entry is no longer needed, so the list only shrinks.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "localserve"

BASE = {"errors", "network", "paths", "program", "units", "__version__"}
ALLOWED: dict[str, set[str]] = {
    "errors": {"network"},
    "network": set(),
    "paths": set(),
    "program": set(),
    "units": set(),
    "api": {"errors", "network"},
    "asgi": {"errors", "api"},
    "security": BASE,
    "config": BASE | {"api", "security"},
    "hardware": BASE | {"api"},
    "logs": BASE,
    "media": BASE | {"api"},
    "hub": BASE | {"api", "hardware", "security"},
    "runner": BASE | {"api", "asgi", "hardware", "hub", "media"},
    "cloud": BASE | {"security", "hub"},
    "protocols": BASE | {"api"},
    "router": BASE | {"api", "cloud", "hub", "media"},
    "server": BASE
    | {"api", "asgi", "config", "hardware", "hub", "protocols", "router", "security", "cloud"}
    | {"media"},
    "desktop": BASE,
    "daemon": BASE
    | {"api", "asgi", "cloud", "config", "hardware", "hub", "logs", "router", "runner"}
    | {"media", "security", "server"},
}
# The clients of the core (the CLI, the tray, the app's entry points) may import anything
# below them.
TOP = {"cli", "gui"}
TOP |= {"frozen", "__main__", "__init__"}

KNOWN_UPWARD: set[tuple[str, str]] = set()  # none left; an exception would be listed here


def imported_packages(path: Path) -> set[str]:
    """The localserve packages (first name below ``localserve``) that ``path`` imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "localserve":
                names = [f"localserve.{alias.name}" for alias in node.names]
            else:
                names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        found |= {name.split(".")[1] for name in names if name.startswith("localserve.")}
    return found


def upward_imports() -> set[tuple[str, str]]:
    wrong = set()
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT)
        package = relative.parts[0].removesuffix(".py")
        if package in TOP:
            continue
        assert package in ALLOWED, f"{relative}: which layer is '{package}'? Add it to ALLOWED."
        for target in imported_packages(path) - {package}:
            if target not in ALLOWED[package]:
                wrong.add((relative.as_posix(), target))
    return wrong


def test_no_layer_imports_upward() -> None:
    unexpected = upward_imports() - KNOWN_UPWARD
    assert not unexpected, f"imports against the layers: {sorted(unexpected)}"


def test_the_known_upward_imports_are_still_there() -> None:
    fixed = KNOWN_UPWARD - upward_imports()
    assert not fixed, f"fixed, so remove them from KNOWN_UPWARD: {sorted(fixed)}"
