"""The ``hf-remote-vae`` command: serve | init-repo | decode | encode.

Each subcommand lives beside the code it drives and contributes ``add_parser(subparsers)``;
this module only assembles them, importing lazily so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand module -> the module that defines add_parser(subparsers), which sets func=run(args)->int
_SUBCOMMANDS = (
    "hf_remote_vae_toolkit.server.cli",
    "hf_remote_vae_toolkit.vae.repo",
    "hf_remote_vae_toolkit.client.cli",
    "hf_remote_vae_toolkit.scale.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-remote-vae", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in _SUBCOMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # not written yet
                continue
            raise
        module.add_parser(sub)
    return parser


# modules the light client install lacks (the [server] extra has them)
_SERVER_MODULES = ("torch", "diffusers", "starlette", "uvicorn", "safetensors", "prometheus_client", "huggingface_hub")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ModuleNotFoundError as exc:
        # The light client install (pip install hf-remote-vae-toolkit) has none of the server stack.
        missing = (exc.name or "").split(".")[0]
        if missing not in _SERVER_MODULES:
            raise
        if args.command in ("decode", "encode"):  # files of latents: torch and safetensors
            fix = "pip install 'hf-remote-vae-toolkit[client]' torch (from a checkout: pip install '.[client]' torch)"
        else:
            fix = "pip install 'hf-remote-vae-toolkit[server]' (from a checkout: pip install '.[server]')"
        print(f"hf-remote-vae {args.command}: this install has no {missing}; to fix: {fix}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
