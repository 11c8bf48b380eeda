"""``hf-remote-vae init-repo``: write a deployable model repo (handler files + VAE weights).

The result is what a user pushes to a Hub model repo to deploy from the Endpoints UI, or points
``HF_MODEL_DIR`` at::

    OUT/handler.py  requirements.txt  README.md     from custom_handlers/NAME/
    OUT/config.json  diffusion_pytorch_model.safetensors

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
from typing import Any

from .families import Family, get_family
from .loading import WEIGHT_FILES, find_weights_dir

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


def _copy_weights(source_dir: Path, out: Path) -> None:
    weights = find_weights_dir(source_dir)
    shutil.copy2(weights / "config.json", out / "config.json")
    for filename in WEIGHT_FILES:
        if (weights / filename).is_file():
            shutil.copy2(weights / filename, out / filename)
            if filename.endswith(".safetensors"):
                return  # one safetensors file is all from_pretrained needs


def _download_weights(hub_id: str, family: Family, out: Path) -> None:
    from huggingface_hub import snapshot_download

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
) -> Path:
    """Write handler ``name`` and its VAE weights into ``out_dir``; return the directory.

    Exactly one of ``weights`` (Hub id or local directory) and ``random_weights`` (``"tiny"`` or ``"full"``).
    """
    if (weights is None) == (random_weights is None):
        raise ValueError("give exactly one of weights (a Hub id or a directory) and random_weights ('tiny' | 'full')")
    family = family_for_handler(name)
    handlers = find_handlers_dir(handlers_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _copy_handler(name, handlers, out)
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
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        out = init_repo(
            args.name,
            args.out,
            weights=args.weights,
            random_weights=args.random_weights,
            handlers_dir=args.handlers_dir,
            seed=args.seed,
        )
    except (ValueError, FileNotFoundError) as exc:  # a wrong name or path: the message says what to do
        print(f"init-repo: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.name} to {out}")
    if args.random_weights:
        print("random weights decode to noise; for real images use --weights HUB_ID (e.g. stabilityai/sd-vae-ft-mse)")
    print(f"serve it: HF_MODEL_DIR={out} hf-remote-vae serve")
    return 0
