"""A sibling module: the legacy pipeline imports it (the model directory is on sys.path)."""


def reverse(text: str) -> str:
    return text[::-1]
