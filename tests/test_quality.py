"""The one check command is the test command: lint and strict typing run with the tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.procs import REPO


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, check=False)


def test_ruff_lint_is_clean() -> None:
    done = run("ruff", "check", "veo_archiver", "receiver", "workers", "tests", "bench")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow  # tens of seconds without its cache (a fresh clone)
def test_mypy_strict_is_clean() -> None:
    done = run("mypy")
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_module_is_squeezed_to_fit() -> None:
    """Modules are split by concept, never held under the size limit by ``# fmt: skip``."""
    squeezed = [
        f"{path.relative_to(REPO)}:{number}"
        for package in ("veo_archiver", "receiver", "workers")
        for path in sorted((REPO / package).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "fmt: skip" in line or "fmt: off" in line
    ]
    assert not squeezed, squeezed


def test_import_contracts_hold() -> None:
    """receiver and workers never import each other; the core imports neither; providers do no I/O."""
    lint_imports = Path(sys.executable).with_name("lint-imports")  # installed by the test extra beside python
    done = subprocess.run([str(lint_imports)], cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


# ------------------------------------------------------------------------------------ public faces only

#: libraries used through their public face only (issue 18): no module or attribute of theirs whose name
#: starts with ``_``, however it is reached
GUARDED_LIBRARIES = ("redis", "httpx", "httpcore", "uvicorn")
#: private attributes of those libraries' objects that the code once reached into (redis-py's connection
#: ``_writer``/``_reader``/``_parser``/``_sock``, httpx's ``_transport``/``_pool``, httpcore's
#: ``_network_backend``, uvicorn's ``_loop``...): flagged on any object but ``self``/``cls``
PRIVATE_ATTRIBUTES = frozenset(
    {
        "_writer",
        "_reader",
        "_parser",
        "_sock",
        "_buffer",
        "_pool",
        "_transport",
        "_network_backend",
        "_connections",
        "_protocol",
        "_loop",
        "_server_state",
    }
)
SCANNED = ("veo_archiver", "receiver", "workers")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _library(module: str) -> bool:
    return module.split(".", 1)[0] in GUARDED_LIBRARIES


def private_uses(path: Path, source: str) -> list[str]:
    """``file:line: what`` for each use of a guarded library's private names in ``source``."""
    import ast

    tree = ast.parse(source)
    found: list[str] = []
    modules: set[str] = set()  # local names bound to a guarded library's modules
    protocol_classes: set[str] = set()  # names imported from uvicorn.protocols

    def flag(node: ast.AST, what: str) -> None:
        found.append(f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _library(alias.name):
                    if any(_private(part) for part in alias.name.split(".")):
                        flag(node, f"import {alias.name}")
                    modules.add(alias.asname or alias.name.split(".", 1)[0])
        elif isinstance(node, ast.ImportFrom) and node.module and _library(node.module) and not node.level:
            if any(_private(part) for part in node.module.split(".")):
                flag(node, f"from {node.module} import ...")
            for alias in node.names:
                if _private(alias.name):
                    flag(node, f"from {node.module} import {alias.name}")
                if node.module.startswith("uvicorn.protocols"):
                    protocol_classes.add(alias.asname or alias.name)
                elif alias.name[:1].islower():
                    modules.add(alias.asname or alias.name)  # a submodule (or a function: harmless)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) >= 2:
                name = node.args[1]
                if isinstance(name, ast.Constant) and isinstance(name.value, str) and _private(name.value):
                    flag(node, f'{node.func.id}(..., "{name.value}")')
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in modules:
                flag(node, f"{owner.id}.{node.attr}")
            elif node.attr in PRIVATE_ATTRIBUTES and not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                flag(node, f"<object>.{node.attr}")
        elif isinstance(node, ast.ClassDef):
            for base in node.bases:
                if isinstance(base, ast.Name) and base.id in protocol_classes:
                    flag(node, f"class {node.name} subclasses uvicorn's {base.id} (wrap it instead)")
    return found


def test_private_names_of_guarded_libraries_are_not_used() -> None:
    """redis-py, uvicorn, httpx and httpcore through their public face only: a minor release may change any
    ``_name`` (STYLE.md, "Speed that lasts")."""
    found: list[str] = []
    for package in SCANNED:
        for path in sorted((REPO / package).rglob("*.py")):
            found += private_uses(path, path.read_text(encoding="utf-8"))
    assert found == [], "private names of redis/httpx/httpcore/uvicorn used:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "source",
    [
        "from httpx._transports.default import HTTPTransport",
        "import httpcore._sync.connection_pool",
        "from redis.asyncio import _parsers",
        "import redis\nredis._compat",
        "import redis.asyncio as aioredis\naioredis._x",
        "w = getattr(conn, '_writer', None)",
        "transport._pool = None",
        "pool = client._transport",
        "from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol\nclass P(HttpToolsProtocol): pass",
    ],
)
def test_the_scan_sees_each_kind_of_private_use(source: str) -> None:
    assert private_uses(REPO / "receiver" / "example.py", source), source


def test_the_scan_leaves_own_private_names_alone() -> None:
    source = (
        "import httpx\nfrom uvicorn.config import HTTP_PROTOCOLS\nclass A:\n"
        "    def f(self):\n        self._pool = httpx.Client()\n        return self._transport, httpx.URL, x._own\n"
    )
    assert private_uses(REPO / "receiver" / "example.py", source) == []
