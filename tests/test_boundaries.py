"""The package boundaries of README's "How it is built", checked on the real code.

- Every import statement (lazy ones in functions too) follows the one direction: api/ imports
  no other whisperwire package, the client never imports the server and the server never the
  client, and the server reads only engine manifests from engine_builder.
- The SDK and the client commands run with the server's dependencies absent: a subprocess
  blocks every module the `server` extra brings (read from the installed metadata) and the
  server's own package, then imports all of the client and runs the CLI.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from importlib.metadata import packages_distributions, requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]

# Which first-party packages each source tree may import (engine_builder: which modules).
ALLOWED = {
    "api/whisperwire": {"whisperwire.v1", "whisperwire.modal_registry"},
    "client/whisperwire": {"whisperwire.v1", "whisperwire.modal_registry", "whisperwire.client"},
    "server/whisperwire": {
        "whisperwire.v1",
        "whisperwire.modal_registry",
        "whisperwire.server",
        "engine_builder.manifest",
        "engine_builder.errors",
    },
}


def imported_modules(path: Path) -> set[str]:
    """Every absolute module an import statement in `path` names (`from x import y`: x.y too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def first_party(name: str) -> bool:
    return name.split(".")[0] in ("whisperwire", "engine_builder")


def within(name: str, allowed: set[str]) -> bool:
    return any(name == a or name.startswith(f"{a}.") or a.startswith(f"{name}.") for a in allowed)


@pytest.mark.parametrize("tree", sorted(ALLOWED))
def test_imports_go_one_way(tree: str) -> None:
    crossings = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted((ROOT / tree).rglob("*.py"))
        for name in imported_modules(path)
        if first_party(name) and not within(name, ALLOWED[tree])
    }
    assert not crossings, f"{tree} imports outside its side of the boundary: {sorted(crossings)}"


def server_only_modules() -> set[str]:
    """Top-level modules of the distributions only the `server` extra requires."""
    base, server = set(), set()
    for line in requires("whisperwire") or []:
        requirement = Requirement(line)
        if requirement.marker is None:
            base.add(requirement.name.lower())
        elif requirement.marker.evaluate({"extra": "server"}):
            server.add(requirement.name.lower())
    modules = {
        module
        for module, distributions in packages_distributions().items()
        if {d.lower() for d in distributions} & (server - base)
    }
    # Must be non-trivial, or the check below proves nothing.
    assert {"ctranslate2", "pydantic_settings", "tiktoken"} <= modules
    return modules


CLIENT_ALONE = """
import contextlib, io, importlib, json, pkgutil, sys
from importlib.abc import MetaPathFinder

blocked = set(json.loads(sys.argv[1]))

class ServerAbsent(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked or name.startswith("whisperwire.server"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None

sys.meta_path.insert(0, ServerAbsent())

import whisperwire.client
for module in pkgutil.walk_packages(whisperwire.client.__path__, "whisperwire.client."):
    importlib.import_module(module.name)
from whisperwire import cli

with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
    cli.main(["--help"])
assert "transcribe" in out.getvalue() and "serve" in out.getvalue(), out.getvalue()
print("serve exit", cli.main(["serve", "--model", "tiny.en"]))
loaded = sorted(m for m in sys.modules if m.split(".")[0] in blocked or "server" in m.split("."))
print("loaded", loaded)
"""


def test_the_client_runs_without_the_server_installed() -> None:
    blocked = sorted(server_only_modules())
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CLIENT_ALONE), repr(blocked).replace("'", '"')],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "serve exit 2" in result.stdout
    assert "loaded []" in result.stdout
    assert "whisperwire serve: " in result.stderr
    assert "pip install 'whisperwire[server,models]'" in result.stderr
