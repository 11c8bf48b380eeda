"""The GPU fast path of the VAE handlers: compiled decodes per warmed shape, device-side image encoding, and
transfers that overlap the decode.

Every piece is chosen by the device at run time, and every piece also runs on a CPU (tests force it there):

- ``ShapeCompiled``: a module's ``forward`` compiled with ``torch.compile`` (``dynamic=False``: one graph per
  shape, specialised, the fastest) for the shapes warmed before the port opens, and run **eagerly** for any
  other shape. Why eager and not a lazy compile: a shape outside the warmed set would make one user's request
  pay the compile, and every new shape would add a graph until dynamo's recompile limit. Measured on this
  project's 2-core CPU, tiny SD decoder, fresh inductor cache: a lazy compile of a new 1x4x16x16 latent cost
  its request 26.6 s (71.7 s under heavy load), the eager decode of that shape 15 ms; on an H100 a compile is
  about 27 s per shape for SD's decoder, while eager costs about 3x the compiled time (90 ms vs 31.5 ms at
  1024²) and nothing more.
- ``tune_module``: on CUDA, ``torch.backends.cudnn.benchmark`` (cuDNN picks its fastest algorithms per shape,
  at the warm-up) and the weights in ``channels_last`` (``channels_last_3d`` for 5-D video weights).
- ``FastPath``: per worker, the transfers: latents go to the device from pinned host memory with
  ``non_blocking`` on the worker's own copy stream (the compute stream waits for it), results come back into
  pinned host memory with ``non_blocking`` and an event; the wait for that event happens in ``finish``
  (``contract.Output``), in the server's thread pool, so the worker takes the next batch and queues its
  host-to-device copy while the GPU still decodes the current one. JPEG is encoded on the device when an
  encoder for it is found (torchvision's ``encode_jpeg`` takes CUDA tensors: nvJPEG), so only the JPEG bytes
  cross PCIe; without one, the server's Pillow encoder runs in its thread pool, off the worker.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any

import torch

__all__ = [
    "ShapeCompiled",
    "FastPath",
    "Pending",
    "use_compile",
    "tune_module",
    "to_channels_last",
    "to_contiguous",
    "input_format",
    "device_jpeg_encoder",
    "DeviceJpeg",
]

log = logging.getLogger("hf_remote_vae_toolkit")

#: ``(images, quality) -> JPEG bytes per image``; images: uint8 ``[3, H, W]`` tensors on the encoder's device.
DeviceJpeg = Callable[[Sequence[torch.Tensor], int], list[bytes]]


def use_compile(setting: bool | None, device: torch.device) -> bool:
    """``VAE_COMPILE``: forced on/off, or (``auto``: None) on for CUDA only."""
    return device.type == "cuda" if setting is None else setting


# ---------------------------------------------------------------------------------------------- memory format


def to_channels_last(module: torch.nn.Module) -> torch.nn.Module:
    """4-D weights in ``channels_last``, 5-D ones in ``channels_last_3d`` (``Module.to`` converts only 4-D)."""
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.ndim == 4:
                tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
            elif tensor.ndim == 5:
                tensor.data = tensor.data.contiguous(memory_format=torch.channels_last_3d)
    return module


def to_contiguous(module: torch.nn.Module) -> torch.nn.Module:
    """Undo ``to_channels_last``: every weight back in the default (contiguous) layout (for comparisons)."""
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.ndim >= 4:
                tensor.data = tensor.data.contiguous()
    return module


def input_format(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A decoder input in the layout its weights have on ``device`` (channels-last on CUDA, else as is)."""
    if device.type != "cuda":
        return x
    if x.ndim == 4:
        return x.contiguous(memory_format=torch.channels_last)
    if x.ndim == 5:
        return x.contiguous(memory_format=torch.channels_last_3d)
    return x


def tune_module(module: torch.nn.Module, device: torch.device) -> bool:
    """On CUDA: cuDNN autotuning and channels-last weights. Returns whether anything changed."""
    if device.type != "cuda":
        return False
    torch.backends.cudnn.benchmark = True
    to_channels_last(module)
    return True


# ---------------------------------------------------------------------------------------------- compile


def _raise_recompile_limit(at_least: int) -> None:
    """dynamo keeps at most ``recompile_limit`` graphs per function (8 by default); one per warmed shape here."""
    import torch._dynamo

    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, name) and getattr(config, name) < at_least:
            setattr(config, name, at_least)


class ShapeCompiled:
    """Replaces ``module.forward``: the compiled forward for warmed shapes, the eager one for all others.

    The key of a call is its first tensor's shape, dtype and strides (what ``dynamic=False`` guards on, so a
    warmed key never recompiles). ``warm(key)`` admits a key; its first call then compiles. ``calls`` counts
    ``compiled``/``eager`` calls (for tests and the benchmark).
    """

    def __init__(self, module: torch.nn.Module, compiler: Callable[..., Any] | None = None) -> None:
        self.module = module
        self.eager: Callable[..., Any] = module.forward
        compile_fn = compiler or torch.compile
        self.compiled: Callable[..., Any] = compile_fn(self.eager, dynamic=False)
        self.warmed: set[Hashable] = set()
        self.calls = {"compiled": 0, "eager": 0}
        self._lock = threading.Lock()
        self._admitting = False
        module.forward = self  # type: ignore[method-assign]

    @staticmethod
    def key(x: torch.Tensor) -> Hashable:
        return (tuple(x.shape), x.dtype, tuple(x.stride()), x.device.type)

    def warm(self, x: torch.Tensor) -> None:
        """Admit ``x``'s key: calls with it run compiled from now on (the first one compiles)."""
        with self._lock:
            self.warmed.add(self.key(x))
            _raise_recompile_limit(len(self.warmed) + 8)

    @contextlib.contextmanager
    def admitting(self) -> Iterator[None]:
        """Inside: every call admits its own key first (a warm-up call compiles exactly what it runs)."""
        self._admitting = True
        try:
            yield
        finally:
            self._admitting = False

    def __call__(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if self._admitting:
            self.warm(x)
        if self.key(x) in self.warmed:
            self.calls["compiled"] += 1
            return self.compiled(x, *args, **kwargs)
        self.calls["eager"] += 1
        return self.eager(x, *args, **kwargs)

    def remove(self) -> None:
        """Put the module's own forward back."""
        if self.module.__dict__.get("forward") is self:
            del self.module.forward


def compile_module(module: torch.nn.Module | None, compiler: Callable[..., Any] | None = None) -> ShapeCompiled | None:
    if module is None:
        return None
    existing = module.__dict__.get("forward")
    return existing if isinstance(existing, ShapeCompiled) else ShapeCompiled(module, compiler)


# ---------------------------------------------------------------------------------------------- device JPEG


def _torchvision_jpeg() -> DeviceJpeg | None:
    try:
        from torchvision.io import encode_jpeg
    except Exception:  # not installed, or built against another torch: the CPU encoder serves
        return None

    def encode(images: Sequence[torch.Tensor], quality: int) -> list[bytes]:
        out = encode_jpeg([img.contiguous() for img in images], quality=quality)
        return [bytes(t.cpu().numpy().tobytes()) for t in out]

    return encode


_DEVICE_JPEG: dict[str, DeviceJpeg | None] = {}


def device_jpeg_encoder(
    device: torch.device, finders: Sequence[Callable[[], DeviceJpeg | None]] | None = None
) -> DeviceJpeg | None:
    """A JPEG encoder that takes uint8 ``[3, H, W]`` tensors on ``device``, or None (encode on the CPU).

    Only CUDA has one (nvJPEG through torchvision); the import happens here, on first use, never for a CPU.
    ``finders`` (tests) replace the default search and are not cached; the default answer is cached.
    """
    if device.type != "cuda":
        return None
    if finders is not None:
        return next((found for found in (find() for find in finders) if found is not None), None)
    if device.type not in _DEVICE_JPEG:
        found = _torchvision_jpeg()
        _DEVICE_JPEG[device.type] = found
        log.info("JPEG encoding on %s: %s", device.type, "on the device" if found else "on the CPU (no device encoder)")
    return _DEVICE_JPEG[device.type]


# ---------------------------------------------------------------------------------------------- transfers


class Pending:
    """A result whose device work may still be running: ``value`` is ready once ``wait()`` returns.

    ``event``: a CUDA event recorded after the work (None: nothing to wait for). ``then`` turns the ready value
    into the result (a PIL image, JPEG bytes); it runs in the thread that waits.
    """

    __slots__ = ("event", "then", "value")

    def __init__(self, value: Any, event: Any = None, then: Callable[[Any], Any] | None = None) -> None:
        self.value = value
        self.event = event
        self.then = then

    def wait(self) -> Any:
        if self.event is not None:
            self.event.synchronize()
            self.event = None
        return self.then(self.value) if self.then is not None else self.value

    __call__ = wait


class FastPath:
    """One worker's transfers and device-side encoders.

    ``defer``: return results as ``Pending`` (waited on in the server's thread pool) instead of finished values;
    default: on CUDA only. ``jpeg``: the device JPEG encoder (default: ``device_jpeg_encoder(device)``; tests
    inject one to drive the device-JPEG path on a CPU).
    """

    def __init__(
        self,
        device: torch.device,
        *,
        defer: bool | None = None,
        jpeg: DeviceJpeg | bool | None = True,
    ) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.defer = self.cuda if defer is None else defer
        if jpeg is True:
            self.jpeg: DeviceJpeg | None = device_jpeg_encoder(device)
        else:
            self.jpeg = jpeg or None
        self._copy_stream: Any = torch.cuda.Stream(device) if self.cuda else None
        # device JPEG encodes run in the server's threads: on their own stream, not queued behind the worker's
        # later decodes on the compute stream
        self._encode_stream: Any = torch.cuda.Stream(device) if self.cuda else None
        self._jpeg_lock = threading.Lock()  # one encoder, many server threads
        self.jpeg_failed: str | None = None

    # host -> device ------------------------------------------------------------------------

    def to_device(self, x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``x`` on the device; on CUDA from pinned memory, ``non_blocking``, on the copy stream, which the
        compute stream then waits for (so the copy overlaps whatever the compute stream still runs)."""
        if not self.cuda or x.device.type == "cuda":
            return x.to(self.device, dtype) if dtype is not None else x.to(self.device)
        host = x if x.is_pinned() else x.pin_memory()
        compute = torch.cuda.current_stream(self.device)
        copy_stream = self._copy_stream
        copy_stream.wait_stream(compute)  # the destination memory may be reused from the compute stream
        with torch.cuda.stream(copy_stream):
            out = host.to(self.device, non_blocking=True)
        compute.wait_stream(copy_stream)
        out.record_stream(compute)
        return out.to(dtype) if dtype is not None else out

    # device -> host ------------------------------------------------------------------------

    def to_host(self, x: torch.Tensor, then: Callable[[Any], Any] | None = None) -> Pending:
        """Start copying ``x`` to the host (pinned, ``non_blocking`` on CUDA); ``wait()`` gives it (through
        ``then``)."""
        if not self.cuda:
            return Pending(x.cpu().contiguous() if x.device.type != "cpu" else x.contiguous(), None, then)
        host = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
        host.copy_(x, non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))
        return Pending(host, event, then)

    def jpeg_on_device(self, images_hwc: torch.Tensor, quality: int) -> Pending | None:
        """uint8 ``[B, H, W, 3]`` on the device -> a ``Pending`` of the first image's JPEG bytes encoded on the
        device, or None when there is no device encoder (the caller copies pixels to the host instead)."""
        encoder = self.jpeg
        if encoder is None or self.jpeg_failed:
            return None
        chw = images_hwc[0].permute(2, 0, 1).contiguous()  # planar, made on the compute stream
        event = None
        if self.cuda:
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(self.device))

        def encode(image: torch.Tensor) -> bytes:
            try:
                with self._jpeg_lock, self._on_encode_stream(image):
                    return encoder([image], quality)[0]
            except Exception as exc:  # a broken device encoder: say so once, then the CPU serves
                self.jpeg_failed = f"{type(exc).__name__}: {exc}"
                log.warning("device JPEG encoding failed (%s); encoding on the CPU from now on", self.jpeg_failed)
                from ..media import encode_jpeg

                return encode_jpeg(image.permute(1, 2, 0).cpu().contiguous(), quality=quality)

        return Pending(chw, event, encode)

    @contextlib.contextmanager
    def _on_encode_stream(self, image: torch.Tensor) -> Iterator[None]:
        if self._encode_stream is None:
            yield
            return
        image.record_stream(self._encode_stream)  # its memory is not reused before the encode is done
        with torch.cuda.stream(self._encode_stream):
            yield

    def result(self, pending: Pending) -> Any:
        """What ``call_batch`` returns for ``pending``: itself (waited on later) when deferring, else its value."""
        return pending if self.defer else pending.wait()
