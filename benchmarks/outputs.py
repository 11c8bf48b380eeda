"""The output types every section compares, as the handler sees them and as the client asks for them.

One table so that the in-process call, the HTTP request and the byte count ask for the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hf_remote_vae_toolkit import protocol
from hf_remote_vae_toolkit.contract import Output, RequestInfo

__all__ = ["OutputType", "OUTPUT_TYPES", "SD_SCALING"]

SD_SCALING = 0.18215  # sent explicitly, so both paths apply the same de-normalisation


@dataclass(frozen=True)
class OutputType:
    name: str
    params: dict[str, Any]  # query parameters (the handler's ``parameters``)
    accept: str
    client_kwargs: dict[str, Any]  # ``remote_decode`` keywords asking for the same thing (None: no client form)
    client: bool = True

    def run(self, handler: Any, latents: Any) -> Any:
        """The handler's result for this request, as the server gets it: ``parse`` with the query and the
        negotiated Accept, then ``call_batch`` (deferred GPU results finished, as the server's encoder does)."""
        request = RequestInfo(accept=self.accept, query={**self.params, "scaling_factor": SD_SCALING})
        result = handler.call_batch([handler.parse({"inputs": latents}, request)])[0]
        if isinstance(result, Output) and result.finish is not None:
            result = Output(result.finish(result.value), result.headers, result.media_type, None, result.encode_options)
        return result


OUTPUT_TYPES: dict[str, OutputType] = {
    o.name: o
    for o in (
        OutputType("jpeg", {"output_type": "pil", "image_format": "jpg"}, protocol.IMAGE_JPEG, {"image_format": "jpg"}),
        OutputType("png", {"output_type": "pil", "image_format": "png"}, protocol.IMAGE_PNG, {"image_format": "png"}),
        # WebP is ours only: the diffusers client cannot ask for it, so it has no client form.
        OutputType("webp", {"output_type": "pil"}, protocol.IMAGE_WEBP, {}, client=False),
        OutputType(
            "uint8 tensor",
            {"output_type": "pt", "partial_postprocess": True},
            protocol.TENSOR_BINARY,
            {"output_type": "pt", "partial_postprocess": True, "return_type": "pt"},
        ),
        OutputType(
            "raw tensor",
            {"output_type": "pt", "partial_postprocess": False},
            protocol.TENSOR_BINARY,
            {"output_type": "pt", "return_type": "pt"},
        ),
    )
}
