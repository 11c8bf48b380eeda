"""The server: the Inference Endpoints handler contract, extended with binary tensor bodies."""

from ..contract import Output

__all__ = ["Output"]
