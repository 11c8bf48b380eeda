"""The server: the Inference Endpoints handler contract, extended with binary tensor bodies."""
