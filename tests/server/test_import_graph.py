"""The package layers: contract.py at the bottom, then vae/ and server/ beside each other, with no import
from vae/ into server/'s modules at import time and none at all from server/ into vae/ (no cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "hf_remote_vae_toolkit"


def _imports(module: Path) -> set[str]:
    """Absolute names of the package's own modules that ``module`` imports (anywhere in the file)."""
    package = ["hf_remote_vae_toolkit", *module.relative_to(PACKAGE).parent.parts]
    found: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("hf_remote_vae_toolkit")}


def _layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ("server", "vae") else None


def test_vae_never_imports_server() -> None:
    offenders = {
        str(module.relative_to(PACKAGE)): sorted(n for n in _imports(module) if _layer(n) == "server")
        for module in (PACKAGE / "vae").glob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_contract_module_imports_neither_layer_nor_torch() -> None:
    names = _imports(PACKAGE / "contract.py")
    assert not any(_layer(n) for n in names), names
    assert "import torch" not in (PACKAGE / "contract.py").read_text(encoding="utf-8")


def test_server_reaches_vae_only_lazily_from_the_loader() -> None:
    # the loader finds a shipped handler for bare weights; nothing else in server/ knows the VAE handlers
    users = sorted(
        str(module.relative_to(PACKAGE))
        for module in (PACKAGE / "server").glob("*.py")
        if any(_layer(n) == "vae" for n in _imports(module))
    )
    assert users == ["server/loader.py"]
