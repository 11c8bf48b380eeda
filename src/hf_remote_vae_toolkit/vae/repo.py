"""``hf-remote-vae init-repo``: write a deployable model repo (handler files + VAE weights).

The result is what a user pushes to a Hub model repo to deploy from the Endpoints UI, or points
``HF_MODEL_DIR`` at::

    OUT/handler.py  requirements.txt  README.md     from custom_handlers/NAME/
    OUT/config.json  diffusion_pytorch_model.safetensors
    OUT/hf_remote_vae_toolkit/  OUT/prometheus_client/   what the stock container lacks (--no-vendor: skip)

The vendored packages make the repo deploy on the unmodified stock Inference Endpoints container too: it puts
the repo on ``sys.path`` before importing ``handler.py``, so the handler imports this package from the repo,
and the package takes over the toolkit's request parsing (``hf_remote_vae_toolkit/stock.py``). On our own
server and image the installed package is imported first and the copies are never read.

Weights come from a Hub repo id (the family's ``vae/`` subfolder when it has one), a local directory
(its root or ``vae/``), or are built at random with the family's real config (``full``) or a small one
(``tiny``, for tests and the demo; no network needed).

Where the handler files come from: ``--handlers-dir``, else ``$HF_REMOTE_VAE_HANDLERS``, else the
``custom_handlers/`` folder of the source checkout this package runs from (editable installs and the
container, which copies the checkout). A non-editable install from a wheel has no checkout: pass
``--handlers-dir`` then; the error says so.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: they import torch, and `hf-remote-vae --help` should not
    from .families import Family

__all__ = ["init_repo", "find_handlers_dir", "family_for_handler", "add_parser", "run"]

_HANDLER_FILES = ("handler.py", "requirements.txt", "README.md")
_SOURCE_CHECKOUT = Path(__file__).resolve().parents[3]  # src/hf_remote_vae_toolkit/vae/repo.py -> repo root


def find_handlers_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The ``custom_handlers`` directory: explicit path, ``$HF_REMOTE_VAE_HANDLERS``, or the source checkout."""
    candidates = [Path(p) for p in (explicit, os.environ.get("HF_REMOTE_VAE_HANDLERS")) if p]
    if not candidates:
        candidates = [_SOURCE_CHECKOUT / "custom_handlers"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"no custom_handlers directory at {candidates[0]}: this install has no source checkout. "
        "Pass --handlers-dir PATH/custom_handlers (or set HF_REMOTE_VAE_HANDLERS) from a clone of the project."
    )


def family_for_handler(name: str) -> Family:
    """``sd-v1-decode`` -> the sd-v1 family (a handler name is ``<family>-<decode|encode>``)."""
    from .families import get_family

    base, _, op = name.rpartition("-")
    if op not in ("decode", "encode") or not base:
        raise ValueError(f"handler name must be <family>-decode or <family>-encode, got {name!r}")
    return get_family(base)


def _copy_handler(name: str, handlers_dir: Path, out: Path) -> None:
    source = handlers_dir / name
    if not (source / "handler.py").is_file():
        available = sorted(p.name for p in handlers_dir.iterdir() if (p / "handler.py").is_file())
        raise FileNotFoundError(f"no handler {name!r} in {handlers_dir}; available: {available}")
    for filename in _HANDLER_FILES:
        if (source / filename).is_file():
            shutil.copy2(source / filename, out / filename)


#: Packages a repo carries for the stock container: this one, and what it imports that the stock image lacks.
VENDORED_PACKAGES = ("hf_remote_vae_toolkit", "prometheus_client")


def _vendor(out: Path) -> None:
    """Copy the vendored packages' sources (no caches) into the repo root."""
    import importlib

    for name in VENDORED_PACKAGES:
        source = Path(importlib.import_module(name).__file__ or "").parent
        target = out / name
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def _copy_weights(source_dir: Path, out: Path) -> None:
    from .loading import WEIGHT_FILES, find_weights_dir

    weights = find_weights_dir(source_dir)
    shutil.copy2(weights / "config.json", out / "config.json")
    for filename in WEIGHT_FILES:
        if (weights / filename).is_file():
            shutil.copy2(weights / filename, out / filename)
            if filename.endswith(".safetensors"):
                return  # one safetensors file is all from_pretrained needs


def _download_weights(hub_id: str, family: Family, out: Path) -> None:
    from huggingface_hub import snapshot_download

    from .loading import WEIGHT_FILES

    prefix = f"{family.subfolder}/" if family.subfolder else ""
    patterns = [f"{prefix}config.json", *(f"{prefix}{name}" for name in WEIGHT_FILES if name.endswith(".safetensors"))]
    with tempfile.TemporaryDirectory() as tmp:
        local = snapshot_download(hub_id, allow_patterns=patterns, local_dir=tmp)
        _copy_weights(Path(local), out)


def _random_weights(family: Family, size: str, out: Path, seed: int) -> None:
    vae: Any = family.build_random(size, seed=seed)
    vae.save_pretrained(str(out), safe_serialization=True)


def init_repo(
    name: str,
    out_dir: str | os.PathLike[str],
    *,
    weights: str | os.PathLike[str] | None = None,
    random_weights: str | None = None,
    handlers_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    vendor: bool = True,
) -> Path:
    """Write handler ``name`` and its VAE weights into ``out_dir``; return the directory.

    Exactly one of ``weights`` (Hub id or local directory) and ``random_weights`` (``"tiny"`` or ``"full"``).
    ``vendor``: also copy the packages the stock Inference Endpoints container lacks (``VENDORED_PACKAGES``).
    """
    if (weights is None) == (random_weights is None):
        raise ValueError("give exactly one of weights (a Hub id or a directory) and random_weights ('tiny' | 'full')")
    family = family_for_handler(name)
    handlers = find_handlers_dir(handlers_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _copy_handler(name, handlers, out)
    if vendor:
        _vendor(out)
    if random_weights is not None:
        _random_weights(family, random_weights, out, seed)
    elif Path(weights).is_dir():  # type: ignore[arg-type]
        _copy_weights(Path(weights), out)  # type: ignore[arg-type]
    else:
        _download_weights(str(weights), family, out)
    return out


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``init-repo`` on the ``hf-remote-vae`` command."""
    parser = subparsers.add_parser(
        "init-repo",
        help="write a deployable model repo: handler files + VAE weights",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("name", help="handler directory name, e.g. sd-v1-decode, flux-encode, wan-decode")
    parser.add_argument("--out", required=True, help="directory to write (created if missing)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--weights", help="Hub repo id (e.g. stabilityai/sd-vae-ft-mse) or a local directory")
    source.add_argument("--random-weights", choices=("tiny", "full"), help="random weights: real config or tiny")
    parser.add_argument("--handlers-dir", help="the project's custom_handlers directory (default: the checkout's)")
    parser.add_argument("--seed", type=int, default=0, help="seed for --random-weights (default 0)")
    parser.add_argument(
        "--no-vendor",
        action="store_true",
        help="do not copy hf_remote_vae_toolkit and prometheus_client into the repo (they let the repo run on the "
        "stock Inference Endpoints container; our image has them installed)",
    )
    parser.set_defaults(func=run)
    return parser


def _looks_like_a_path(value: str) -> bool:
    """``./weights``, ``/data/vae``, ``~/vae``, ``a/b/c``: meant as a directory, not a Hub id (``owner/name``)."""
    return value.startswith((".", "/", "~")) or value.count("/") > 1 or "\\" in value or Path(value).exists()


def _remove_partial(out: Path, existed: bool, before: set[Path]) -> None:
    """Undo a failed init-repo: the directory it created, or the files it added to an existing one."""
    if not existed:
        shutil.rmtree(out, ignore_errors=True)
        return
    for path in set(out.iterdir()) - before:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def run(args: argparse.Namespace) -> int:
    weights = args.weights
    if weights is not None and _looks_like_a_path(weights) and not Path(weights).expanduser().is_dir():
        print(
            f"init-repo: no directory {weights}: --weights takes a local directory (config.json and the weights, "
            "or a vae/ folder) or a Hub repo id such as stabilityai/sd-vae-ft-mse",
            file=sys.stderr,
        )
        return 2
    if weights is not None and Path(weights).expanduser().is_dir():
        weights = str(Path(weights).expanduser())
    out = Path(args.out)
    existed = out.exists()
    before = set(out.iterdir()) if out.is_dir() else set()
    try:
        out = init_repo(
            args.name,
            args.out,
            weights=weights,
            random_weights=args.random_weights,
            handlers_dir=args.handlers_dir,
            seed=args.seed,
            vendor=not args.no_vendor,
        )
    except (ValueError, OSError) as exc:  # a wrong name or path, or a failed download: the message says what to do
        _remove_partial(out, existed, before)
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if weights is not None and not Path(weights).is_dir():
            message = (
                f"could not get the weights of {weights!r} from the Hugging Face Hub: {message} "
                "(check the repo id, your network or HF_TOKEN for a private repo; a local directory must exist)"
            )
        print(f"init-repo: {message}", file=sys.stderr)
        print(f"init-repo: removed what it had written to {out}", file=sys.stderr)
        return 2
    print(f"wrote {args.name} to {out}")
    if args.random_weights:
        print("random weights decode to noise; for real images use --weights HUB_ID (e.g. stabilityai/sd-vae-ft-mse)")
    print(f"serve it: HF_MODEL_DIR={out} hf-remote-vae serve")
    return 0
