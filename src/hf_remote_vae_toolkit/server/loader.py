"""Finding and loading the handler, as the Inference Endpoints contract says.

``HF_MODEL_DIR/handler.py`` -> ``EndpointHandler(path)``; the legacy ``pipeline.py`` ->
``PreTrainedPipeline(path)``. The model directory goes on ``sys.path`` first so a handler can
import its sibling modules. With ``HF_MODEL_ID`` the repo is downloaded into the model directory
when that directory is empty.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import Any

from ..settings import Settings

__all__ = ["HandlerLoadError", "download_into", "ensure_model_dir", "find_handler_file", "load_handler"]

log = logging.getLogger("hf_remote_vae_toolkit")

_LEGACY = ("pipeline.py", "PreTrainedPipeline")


class HandlerLoadError(RuntimeError):
    """The handler could not be found or built; ``hint`` says what to fix in one line."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


def ensure_model_dir(settings: Settings) -> Path:
    """The model directory, downloading ``HF_MODEL_ID`` into it first when it is empty."""
    path = Path(settings.model_dir)
    empty = not path.exists() or not any(path.iterdir())
    if settings.model_id and empty:
        log.info("Downloading %s@%s into %s", settings.model_id, settings.revision, path)
        try:
            download_into(settings.model_id, settings.revision, settings.hub_token, path)
        except Exception as exc:
            raise HandlerLoadError(
                f"could not download {settings.model_id}@{settings.revision}: {exc}",
                "check HF_MODEL_ID / HF_REVISION, network access, and HF_HUB_TOKEN for private repos",
            ) from exc
    if not path.is_dir():
        raise HandlerLoadError(
            f"model directory {path} does not exist",
            "set HF_MODEL_DIR (or --model-dir) to a directory holding handler.py, or set HF_MODEL_ID",
        )
    return path


def download_into(repo_id: str, revision: str, token: str | None, target: Path) -> int:
    """Put the Hub repo's files into ``target`` and return how many: the repo goes into the Hugging Face
    cache (``snapshot_download``: the Hub, or with ``HF_HUB_OFFLINE=1`` a pre-populated cache), and
    ``target`` gets one absolute symlink per file pointing at the cached blob, so weights are not stored twice.
    The container's entrypoint (``docker/fetch_model.py``) and ``ensure_model_dir`` both use it."""
    from huggingface_hub import snapshot_download

    snapshot = Path(snapshot_download(repo_id=repo_id, revision=revision, token=token))
    target.mkdir(parents=True, exist_ok=True)  # only once the download worked: no half-made directory
    count = 0
    for root, _dirs, files in os.walk(snapshot):
        for name in files:
            source = Path(root) / name
            link = target / source.relative_to(snapshot)
            link.parent.mkdir(parents=True, exist_ok=True)
            # the cache's own links are relative (../../blobs/...): resolve them, or they break here
            link.symlink_to(source.resolve())
            count += 1
    return count


def find_handler_file(model_dir: Path, pipeline_name: str = "handler.py") -> tuple[Path, str] | None:
    """(file, class name) of the custom handler in ``model_dir``, or None when there is none."""
    custom = model_dir / pipeline_name
    if custom.is_file():
        return custom, "EndpointHandler"
    legacy = model_dir / _LEGACY[0]
    if legacy.is_file():
        return legacy, _LEGACY[1]
    return None


def _builtin_class(settings: Settings, model_dir: Path) -> tuple[type, str] | None:
    """A shipped VAE handler class for a directory with weights but no handler file, and its name.

    ``HF_TASK`` names it (``sd-v1-decode``); without it the weights' config.json decides.
    """
    from ..vae.builtin import BUILTIN_HANDLERS, builtin_handler_class, detect_handler_name

    name = settings.task or detect_handler_name(model_dir)
    if name is None:
        return None
    if name not in BUILTIN_HANDLERS:
        raise HandlerLoadError(
            f"HF_TASK={name!r} names no handler this server ships",
            f"set HF_TASK to one of {list(BUILTIN_HANDLERS)}, or put a handler.py in the model directory",
        )
    how = "HF_TASK" if settings.task else "the weights' config.json"
    log.info(
        "No %s in %s; serving the built-in %s handler (chosen by %s)",
        settings.default_pipeline_name,
        model_dir,
        name,
        how,
    )
    return builtin_handler_class(name), name


def _import_handler_class(model_dir: Path, handler_file: Path, class_name: str) -> type:
    """Import ``handler_file`` (its directory on ``sys.path``) and return ``class_name`` from it."""
    if str(model_dir) not in sys.path:
        sys.path.insert(0, str(model_dir))
    module_name = f"_hf_handler_{abs(hash(str(handler_file)))}"
    spec = importlib.util.spec_from_file_location(module_name, handler_file)
    if spec is None or spec.loader is None:  # pragma: no cover - only for unreadable files
        raise HandlerLoadError(f"cannot import {handler_file}", "check the file is a readable Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise HandlerLoadError(
            f"importing {handler_file} failed: {exc!r}",
            f"fix the error in {handler_file.name} or install what it imports (requirements.txt)",
        ) from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise HandlerLoadError(
            f"{handler_file} defines no `{class_name}`",
            f"define `class {class_name}` with __init__(self, path) and __call__(self, data)",
        )
    return cls


def load_handler(settings: Settings, model_dir: Path | None = None) -> Any:
    """Find the handler (custom file, else a shipped one for bare weights) and build it with the
    model directory as a string."""
    model_dir = model_dir or ensure_model_dir(settings)
    log.info("Initializing model from directory:%s", model_dir)
    found = find_handler_file(model_dir, settings.default_pipeline_name)
    if found is not None:
        handler_file, class_name = found
        log.info("Found custom pipeline at %s", handler_file)
        cls = _import_handler_class(model_dir, handler_file, class_name)
        hint = f"fix {class_name}.__init__ or the files it loads from {model_dir} (weights, config.json)"
    else:
        builtin = _builtin_class(settings, model_dir)
        if builtin is None:
            raise HandlerLoadError(
                f"no {settings.default_pipeline_name} (or legacy {_LEGACY[0]}) in {model_dir}",
                f"put a {settings.default_pipeline_name} defining `class EndpointHandler` in the model directory "
                "(`hf-remote-vae init-repo NAME --out DIR` writes one), or set HF_TASK to a shipped handler "
                "such as sd-v1-decode when the directory holds only VAE weights",
            )
        cls, name = builtin
        class_name = f"the built-in {name} handler"
        hint = f"check that {model_dir} (or its vae/ folder) holds the weights of a {name.rsplit('-', 1)[0]} VAE"
    # the path exactly as configured (HF_MODEL_DIR), as the stock toolkit passes it
    path = settings.model_dir if Path(settings.model_dir) == model_dir else os.fspath(model_dir)
    try:
        handler = cls(path)
    except Exception as exc:
        raise HandlerLoadError(f"{class_name}({path!r}) raised {exc!r}", hint) from exc
    log.info("Model initialized successfully")
    return handler
