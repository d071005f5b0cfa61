"""The layers of docs/architecture.md, enforced: import-linter checks the contracts in
pyproject.toml, TYPE_CHECKING imports included."""

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_TIMEOUT = 120
LAYERS = "Layers: wiring, client, transports, protocols | services, store, core"
CORE_ALONE = "Client, transports and protocols speak to the core alone"
DRIVERS = "Redis and PostgreSQL only behind the services and the store"


def lint_imports(cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    script = "import sys; from importlinter.cli import lint_imports_command; lint_imports_command()"
    return subprocess.run(
        [sys.executable, "-c", script, *extra],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=LINT_TIMEOUT,
        env={"PYTHONPATH": str(cwd), "PATH": ""},
    )


def test_every_layer_contract_is_kept() -> None:
    result = lint_imports(ROOT, "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_behind_type_checking_breaks_the_layers(tmp_path: Path) -> None:
    # The same kind of contract on a two-layer package whose lower layer imports the upper
    # one only for type checking: the check must still see it.
    package = tmp_path / "layered"
    (package / "core").mkdir(parents=True)
    (package / "app").mkdir()
    for init in (package, package / "core", package / "app"):
        (init / "__init__.py").write_text("")
    (package / "app" / "server.py").write_text("class Server: ...\n")
    (package / "core" / "hub.py").write_text(
        textwrap.dedent(
            """
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from layered.app.server import Server
            """
        )
    )
    (tmp_path / ".importlinter").write_text(
        textwrap.dedent(
            """
            [importlinter]
            root_package = layered
            [importlinter:contract:layers]
            name = layers
            type = layers
            layers =
                layered.app
                layered.core
            """
        )
    )
    result = lint_imports(tmp_path, "--no-cache")
    assert result.returncode != 0, result.stdout
    assert "layered.core.hub -> layered.app.server" in result.stdout


# Forbidden imports, each planted in a copy of the package and checked against the real
# contracts of pyproject.toml: (module planted, what it imports, the contracts it breaks).
FORBIDDEN = [
    ("transports/probe.py", "from threadchat.services import history", [CORE_ALONE]),
    ("transports/probe.py", "from threadchat.store import base", [CORE_ALONE]),
    # Siblings: neither protocols nor services may import the other.
    ("protocols/probe.py", "from threadchat.services import accounts", [LAYERS, CORE_ALONE]),
    ("services/probe.py", "from threadchat.protocols.native import session", [LAYERS]),
    ("protocols/native/probe.py", "from threadchat.store.base import NewMessage", [CORE_ALONE]),
    ("core/probe.py", "from threadchat.services import moderation", [LAYERS]),
    # The core reaches other nodes through its Bus port, never through Redis itself.
    ("core/probe.py", "import redis", [DRIVERS]),
    ("transports/probe.py", "import psycopg", [DRIVERS]),
]


@pytest.mark.parametrize(("module", "statement", "broken"), FORBIDDEN)
def test_a_forbidden_import_breaks_its_contract(
    tmp_path: Path, module: str, statement: str, broken: list[str]
) -> None:
    shutil.copytree(
        ROOT / "threadchat", tmp_path / "threadchat", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    # Behind TYPE_CHECKING, as a cycle would hide: the contracts must see it all the same.
    (tmp_path / "threadchat" / module).write_text(
        f"from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    {statement}\n"
    )
    result = lint_imports(tmp_path, "--no-cache")
    assert result.returncode != 0, result.stdout
    for contract in broken:
        assert f"{contract} BROKEN" in result.stdout, result.stdout
    kept = {LAYERS, CORE_ALONE, DRIVERS} - set(broken)
    for contract in kept:
        assert f"{contract} KEPT" in result.stdout, result.stdout
