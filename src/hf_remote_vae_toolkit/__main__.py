"""``python -m hf_remote_vae_toolkit ...`` is the ``hf-remote-vae`` command."""

import sys

from .cli import main

sys.exit(main())
