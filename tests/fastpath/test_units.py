"""The fast path's pieces on the CPU: per-shape compile dispatch, channels-last layouts, device-JPEG
selection, deferred results. The CUDA-only calls (pinned memory, events, streams) are behind the device
checks these tests drive from both sides."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from hf_remote_vae_toolkit.vae import fastpath
from hf_remote_vae_toolkit.vae.families import get_family
from hf_remote_vae_toolkit.vae.fastpath import (
    FastPath,
    Pending,
    ShapeCompiled,
    device_jpeg_encoder,
    input_format,
    to_channels_last,
    tune_module,
    use_compile,
)

CPU = torch.device("cpu")
CUDA = torch.device("cuda")  # only its type is read: no CUDA call is made


class RecordingCompiler:
    """Stands in for ``torch.compile``'s wrapping only: records what it was asked and every compiled call."""

    def __init__(self) -> None:
        self.kwargs: dict[str, Any] = {}
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, fn: Callable[..., Any], **kwargs: Any) -> Callable[..., Any]:
        self.kwargs = kwargs

        def compiled(x: torch.Tensor, *args: Any, **kw: Any) -> Any:
            self.calls.append(tuple(x.shape))
            return fn(x, *args, **kw)

        return compiled


def test_use_compile_auto_is_on_for_cuda_only() -> None:
    assert use_compile(None, CUDA) and not use_compile(None, CPU)
    assert use_compile(True, CPU) and not use_compile(False, CUDA)


def test_shape_compiled_runs_warmed_keys_compiled_and_others_eagerly() -> None:
    conv = torch.nn.Conv2d(3, 3, 1)
    compiler = RecordingCompiler()
    dispatch = ShapeCompiled(conv, compiler)
    assert compiler.kwargs == {"dynamic": False}  # one specialised graph per shape
    small, big = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 8, 8)
    expected = torch.nn.functional.conv2d(small, conv.weight, conv.bias)
    assert torch.equal(conv(small), expected) and dispatch.calls == {"compiled": 0, "eager": 1}
    dispatch.warm(small)
    assert torch.equal(conv(small), expected) and compiler.calls == [(1, 3, 4, 4)]
    conv(big)  # not warmed: eager, no compile
    assert compiler.calls == [(1, 3, 4, 4)] and dispatch.calls == {"compiled": 1, "eager": 2}
    # same shape, other strides (channels-last): another key, so eager (a compiled graph would recompile)
    conv(small.contiguous(memory_format=torch.channels_last))
    assert dispatch.calls["eager"] == 3
    with dispatch.admitting():
        conv(big)
    conv(big)
    assert compiler.calls == [(1, 3, 4, 4), (1, 3, 8, 8), (1, 3, 8, 8)]
    dispatch.remove()
    conv(big)
    assert dispatch.calls["compiled"] == 3 and "forward" not in conv.__dict__


def test_channels_last_layouts_keep_the_decode_equal() -> None:
    vae = get_family("sd-v1").build_random("tiny").eval()
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        before = vae.decode(z).sample
    to_channels_last(vae)
    convs = [m.weight for m in vae.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs if w.shape[2:] != (1, 1))
    with torch.inference_mode():
        after = vae.decode(input_format(z, CUDA)).sample
    assert torch.allclose(before, after, atol=1e-5)


def test_channels_last_3d_for_video_weights() -> None:
    conv = torch.nn.Conv3d(4, 4, 3, padding=1)
    x = torch.randn(1, 4, 3, 6, 6)
    before = conv(x)
    to_channels_last(conv)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    y = input_format(x, CUDA)
    assert y.is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.allclose(conv(y), before, atol=1e-5)


def test_tune_module_and_input_format_leave_a_cpu_model_alone() -> None:
    conv = torch.nn.Conv2d(3, 3, 3)
    old = torch.backends.cudnn.benchmark
    assert tune_module(conv, CPU) is False and torch.backends.cudnn.benchmark == old
    assert conv.weight.is_contiguous()
    x = torch.randn(1, 3, 4, 4)
    assert input_format(x, CPU) is x


def _jpeg_on_pillow(images: Sequence[torch.Tensor], quality: int) -> list[bytes]:
    out = []
    for image in images:
        buf = io.BytesIO()
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(buf, format="JPEG", quality=quality)
        out.append(buf.getvalue())
    return out


def test_device_jpeg_is_searched_for_cuda_only() -> None:
    asked: list[str] = []

    def none() -> Any:
        asked.append("none")
        return None

    def found() -> Any:
        asked.append("found")
        return _jpeg_on_pillow

    assert device_jpeg_encoder(CPU, [found]) is None and asked == []  # a CPU never imports an encoder
    assert device_jpeg_encoder(CUDA, [none, found]) is _jpeg_on_pillow and asked == ["none", "found"]
    assert device_jpeg_encoder(CUDA, [none]) is None


def test_default_cuda_search_survives_a_torchvision_that_does_not_import(monkeypatch: pytest.MonkeyPatch) -> None:
    # this environment's torchvision (if any) does not match the installed torch: the answer must be None
    # or a working encoder, never an exception
    monkeypatch.setattr(fastpath, "_DEVICE_JPEG", {})
    found = device_jpeg_encoder(CUDA)
    assert found is None or callable(found)


class FakeEvent:
    """A CUDA event's host side: ``synchronize`` blocks until the work it marks is done."""

    def __init__(self) -> None:
        self.synchronized = 0

    def synchronize(self) -> None:
        self.synchronized += 1


def test_pending_waits_once_then_builds_its_value() -> None:
    event = FakeEvent()
    pending = Pending(torch.arange(3), event, then=lambda t: t.tolist())
    assert pending.wait() == [0, 1, 2] and pending() == [0, 1, 2]
    assert event.synchronized == 1


def test_fastpath_on_a_cpu_copies_now_and_defers_only_when_told() -> None:
    x = torch.randn(2, 3, 4, 4).permute(0, 2, 3, 1)  # not contiguous
    fast = FastPath(CPU)
    assert fast.defer is False and fast.jpeg is None and fast.cuda is False
    pending = fast.to_host(x)
    assert pending.event is None and pending.value.is_contiguous() and torch.equal(pending.value, x)
    assert torch.equal(fast.result(pending), x)
    deferred = FastPath(CPU, defer=True)
    result = deferred.result(deferred.to_host(x))
    assert isinstance(result, Pending) and torch.equal(result.wait(), x)
    assert torch.equal(fast.to_device(x, torch.float64), x.double())


def test_device_jpeg_encodes_the_first_image_and_falls_back_once_broken() -> None:
    images = torch.randint(0, 256, (2, 16, 24, 3), dtype=torch.uint8)
    threads: list[str] = []

    def encoder(batch: Sequence[torch.Tensor], quality: int) -> list[bytes]:
        threads.append(threading.current_thread().name)
        assert [tuple(t.shape) for t in batch] == [(3, 16, 24)] and quality == 90
        return _jpeg_on_pillow(batch, quality)

    fast = FastPath(CPU, jpeg=encoder)
    pending = fast.jpeg_on_device(images, 90)
    assert pending is not None
    body = pending.wait()
    decoded = np.asarray(Image.open(io.BytesIO(body)))
    assert decoded.shape == (16, 24, 3) and len(threads) == 1

    def broken(batch: Sequence[torch.Tensor], quality: int) -> list[bytes]:
        raise RuntimeError("nvjpeg is not available")

    fast = FastPath(CPU, jpeg=broken)
    pending = fast.jpeg_on_device(images, 90)
    assert pending is not None
    body = pending.wait()  # the CPU encoder answers this request
    assert Image.open(io.BytesIO(body)).size == (24, 16)
    assert fast.jpeg_failed == "RuntimeError: nvjpeg is not available"
    assert fast.jpeg_on_device(images, 90) is None  # and every later one goes to the CPU path directly


@pytest.mark.slow
@pytest.mark.parametrize("family", ["hunyuanvideo", "wan"])
def test_video_vaes_decode_the_same_with_channels_last_3d_weights(family: str) -> None:
    # what load_vae does to a video VAE on CUDA; every reshape in diffusers' decoders must accept that layout
    vae = get_family(family).build_random("tiny").eval()
    z = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        before = vae.decode(z).sample
    to_channels_last(vae)
    assert any(p.ndim == 5 and p.is_contiguous(memory_format=torch.channels_last_3d) for p in vae.parameters())
    with torch.inference_mode():
        after = vae.decode(input_format(z, CUDA)).sample
    assert after.shape == before.shape and torch.allclose(before, after, atol=1e-5)
