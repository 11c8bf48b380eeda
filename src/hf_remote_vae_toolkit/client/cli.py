"""``hf-remote-vae decode`` and ``hf-remote-vae encode``: files in, files out, over a remote VAE.

Latents files are safetensors, torch ``.pt`` or ComfyUI ``.latent`` (``_latent_files.py``). A file may
hold one tensor under any key (``latents`` is the convention this command writes) or several: each tensor is then decoded on its own and its outputs
are named ``<stem>_<key>.<ext>`` (``--key`` picks one). Tensors are ``[B, C, h, w]`` image latents,
``[B, C, T, h, w]`` video latents or ``[B, N, 4C]`` packed latents (give ``--height``/``--width``),
as a pipeline's ``output_type="latent"`` returns them, i.e. still normalised: by default the server
applies the model's own scaling (``--scaling-factor``/``--shift-factor`` override it, ``--no-scaling``
turns it off). A ComfyUI ``.latent`` (or a ``torch.save``-d LATENT dict) is already in the VAE's own
latent space and is decoded with no scaling: the recovery path after a local out-of-memory decode.

The output format follows the extension of ``-o``: ``.png``/``.jpg``/``.jpeg`` (one image per batch
item; ``_<i>`` is added to the name when ``B > 1``), ``.mp4`` (video models) or ``.safetensors``
(the raw decoder output in ``[-1, 1]`` under the key ``images``). With several inputs, or an ``-o``
that is a directory (it exists, or ends with ``/``), files are written there and ``--format`` picks
the extension (default png).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from ..errors import ServiceError
from ._encode import remote_encode
from ._many import decode_many

if TYPE_CHECKING:  # torch is imported where files are read, so `hf-remote-vae --help` stays fast
    import torch

__all__ = ["add_parser", "run_decode", "run_encode"]

_IMAGE_EXTS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
_EXTS = (*_IMAGE_EXTS, ".mp4", ".safetensors")


@dataclass(frozen=True)
class _Job:
    source: str  # "file.safetensors" or "file.safetensors:key", for messages
    tensor: torch.Tensor
    out: Path  # output path; image outputs of a batch add _<i>
    vae_space: bool = False  # already in the VAE's latent space (ComfyUI): decoded with no scaling


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--endpoint", required=True, help="URL of the remote VAE endpoint")
    parser.add_argument("--scaling-factor", type=float, help="latent scaling factor (default: the model's own)")
    parser.add_argument("--shift-factor", type=float, help="latent shift factor")
    parser.add_argument("--token", help="bearer token (default: your Hugging Face token, for HF hosts)")
    parser.add_argument("--timeout", type=float, help="seconds to wait for an answer (default 310)")
    parser.add_argument("--retries", type=int, default=3, help="retries on 429/502/503/504 and connection errors")


def add_parser(subparsers: Any) -> None:
    """Register ``decode`` and ``encode`` on the ``hf-remote-vae`` command."""
    dec = subparsers.add_parser("decode", help="decode latents files on a remote VAE", description=__doc__)
    dec.formatter_class = argparse.RawDescriptionHelpFormatter
    dec.add_argument("latents", nargs="+", type=Path, help="latents file(s): .safetensors, .pt, ComfyUI .latent")
    dec.add_argument(
        "-o", "--output", required=True, help="output file (its extension picks the format), or a directory (DIR/)"
    )
    dec.add_argument(
        "--format", choices=[e.lstrip(".") for e in _EXTS], help="output format when -o is a directory (default png)"
    )
    dec.add_argument("--key", help="decode only this tensor of each file")
    dec.add_argument("--no-scaling", action="store_true", help="latents are already de-normalised")
    dec.add_argument("--height", type=int, help="output height in pixels (packed latents)")
    dec.add_argument("--width", type=int, help="output width in pixels (packed latents)")
    dec.add_argument("--jpeg-quality", type=int, default=95, help="JPEG quality of written files")
    dec.add_argument("--concurrency", type=int, default=4, help="requests in flight at once")
    dec.add_argument("--no-progress", action="store_true", help="no progress bar")
    dec.add_argument(
        "--no-stream", action="store_true", help=".mp4: wait for the whole file instead of writing it as it streams in"
    )
    _common(dec)
    dec.set_defaults(func=run_decode)

    enc = subparsers.add_parser(
        "encode",
        help="encode images to latents on a remote VAE",
        description=(
            "Encode image files (any format Pillow reads) on a remote VAE encode endpoint. Each image becomes a "
            "safetensors file holding one tensor, `latents` [1, C, H/8, W/8], scaled by --scaling-factor / "
            "--shift-factor when given (z = (z - shift) * scale), else as the VAE returns it. By default the "
            "latent distribution's mode is taken; --sample draws from it (--seed makes the draw reproducible)."
        ),
    )
    enc.add_argument("images", nargs="+", type=Path, help="image file(s) (any format Pillow reads)")
    enc.add_argument("-o", "--output", type=Path, required=True, help="latents .safetensors, or a directory")
    enc.add_argument("--sample", action="store_true", help="sample the latent distribution instead of its mode")
    enc.add_argument("--seed", type=int, help="seed of the --sample draw (default: random)")
    _common(enc)
    enc.set_defaults(func=run_encode)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _plan(paths: list[Path], output: Path, fmt: str, key: str | None, as_dir: bool = False) -> list[_Job]:
    from ._latent_files import load_latent_file

    several = len(paths) > 1
    if several or as_dir or output.is_dir():
        output.mkdir(parents=True, exist_ok=True)
    jobs: list[_Job] = []
    for path in paths:
        latent_file = load_latent_file(path)
        tensors = latent_file.tensors
        if key is not None:
            if key not in tensors:
                raise ValueError(f"{path}: no tensor {key!r} (keys: {sorted(tensors)})")
            tensors = {key: tensors[key]}
        if not tensors:
            raise ValueError(f"{path}: holds no tensors")
        base = output / f"{path.stem}.{fmt}" if output.is_dir() else output
        for name, tensor in tensors.items():
            out = base if len(tensors) == 1 else base.with_name(f"{base.stem}_{name}{base.suffix}")
            source = f"{path}:{name}" if len(tensors) > 1 else str(path)
            jobs.append(_Job(source, tensor, out, vae_space=latent_file.space == "vae"))
    return jobs


def _decode_kwargs(args: argparse.Namespace, ext: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "do_scaling": not args.no_scaling,
        "scaling_factor": args.scaling_factor,
        "shift_factor": args.shift_factor,
        "height": args.height,
        "width": args.width,
        "timeout": args.timeout,
        "retries": args.retries,
        "token": args.token,
    }
    if ext in _IMAGE_EXTS:  # uint8 pixels, encoded here: exact PNGs, any JPEG quality, every batch item
        kwargs.update(output_type="pt", return_type="pt", partial_postprocess=True)
    elif ext == ".mp4":
        kwargs.update(output_type="mp4", return_type="mp4")
    else:
        kwargs.update(output_type="pt", return_type="pt")
    return kwargs


def _write(out: Path, result: Any, jpeg_quality: int) -> list[Path]:
    """Write one decode result; returns the files written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    ext = out.suffix.lower()
    if ext == ".mp4":
        out.write_bytes(result)
        return [out]
    if ext == ".safetensors":
        from safetensors.torch import save_file

        save_file({"images": result.contiguous()}, out)
        return [out]
    frames = result  # uint8 [B|F, H, W, 3]
    paths = [out] if len(frames) == 1 else [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(len(frames))]
    for path, frame in zip(paths, frames):
        options = {"quality": jpeg_quality} if _IMAGE_EXTS[ext] == "JPEG" else {}
        Image.fromarray(frame.numpy()).save(path, format=_IMAGE_EXTS[ext], **options)
    return paths


def run_decode(args: argparse.Namespace) -> int:
    """Decode every latents file; exit 0 if all succeeded, 1 if any failed, 2 on bad arguments."""
    raw = str(args.output)
    output = Path(raw)
    as_dir = raw.endswith(("/", os.sep)) or output.is_dir()
    several = len(args.latents) > 1 or as_dir
    if several:
        if output.suffix.lower() in _EXTS and not output.is_dir():
            return _fail(f"-o {raw} looks like a file, but several inputs need a directory: -o DIR/ --format EXT")
        ext = f".{args.format or 'png'}"
    else:
        ext = output.suffix.lower()
        if ext not in _EXTS:
            return _fail(
                f"cannot tell the output format from -o {raw}: give a file name ending in one of "
                f"{', '.join(_EXTS)}, or a directory (-o {raw}/ --format png)"
            )
        if args.format is not None and f".{args.format}" != ext and not (args.format == "jpg" and ext == ".jpeg"):
            return _fail(
                f"-o {raw} is a {ext} file but --format is {args.format}: change one (--format is for -o DIR/)"
            )
    try:
        jobs = _plan(args.latents, output, ext.lstrip("."), args.key, as_dir=as_dir)
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    vae_space = [job.source for job in jobs if job.vae_space]
    if vae_space and (args.scaling_factor is not None or args.shift_factor is not None):
        return _fail(
            f"{vae_space[0]} is already in the VAE's latent space (ComfyUI); drop --scaling-factor/--shift-factor"
        )
    if ext == ".mp4" and not args.no_stream and all(job.tensor.ndim == 5 for job in jobs):
        # video latents: each file written as the server decodes it (client/streaming.py)
        from .streaming import run_streamed_mp4

        return run_streamed_mp4(args, jobs)
    results: list[Any] = [None] * len(jobs)
    for in_vae_space in (False, True):  # ComfyUI latents are sent with no scaling
        group = [i for i, job in enumerate(jobs) if job.vae_space == in_vae_space]
        if not group:
            continue
        kwargs = _decode_kwargs(args, ext)
        if in_vae_space:
            kwargs.update(do_scaling=False, scaling_factor=None, shift_factor=None)
        decoded = decode_many(
            args.endpoint,
            [jobs[i].tensor for i in group],
            concurrency=args.concurrency,
            progress=not args.no_progress,
            return_exceptions=True,
            **kwargs,
        )
        for i, result in zip(group, decoded):
            results[i] = result
    failed = 0
    for job, result in zip(jobs, results):
        if isinstance(result, Exception):
            failed += 1
            print(f"error: {job.source}: {result}", file=sys.stderr)
            continue
        for path in _write(job.out, result, args.jpeg_quality):
            print(path)
    return 1 if failed else 0


def _encode_outputs(images: list[Path], output: Path) -> Iterable[tuple[Path, Path]]:
    if len(images) > 1 or output.is_dir():
        output.mkdir(parents=True, exist_ok=True)
        return [(image, output / f"{image.stem}.safetensors") for image in images]
    return [(images[0], output)]


def run_encode(args: argparse.Namespace) -> int:
    """Encode each image to a safetensors file holding one tensor, ``latents`` ``[1, C, H/8, W/8]``."""
    from safetensors.torch import save_file

    if len(args.images) == 1 and not args.output.is_dir() and args.output.suffix != ".safetensors":
        return _fail(f"{args.output}: the output must be a .safetensors file or a directory")
    if args.seed is not None and not args.sample:
        return _fail("--seed seeds the --sample draw: add --sample (without it the mode is taken, no draw)")
    failed = 0
    for image_path, out in _encode_outputs(args.images, args.output):
        try:
            with Image.open(image_path) as image:
                image.load()
                latents = remote_encode(
                    args.endpoint,
                    image,
                    args.scaling_factor,
                    args.shift_factor,
                    sample=args.sample,
                    seed=args.seed,
                    timeout=args.timeout,
                    retries=args.retries,
                    token=args.token,
                )
        except (OSError, ValueError, ServiceError) as exc:
            failed += 1
            print(f"error: {image_path}: {exc}", file=sys.stderr)
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        save_file({"latents": latents.contiguous()}, out)
        print(out)
    return 1 if failed else 0
