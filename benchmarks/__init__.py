"""Benchmarks: the CPU suite (``python -m benchmarks.run``) and the GPU script (``python -m benchmarks.gpu``)."""
