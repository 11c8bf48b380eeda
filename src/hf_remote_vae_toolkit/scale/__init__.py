"""Scale-out: the server as Ray Serve replicas (``hf-remote-vae ray-serve``, ``deploy/ray/``).

Import ``hf_remote_vae_toolkit.scale.ray_serve`` for the deployment (it needs ``ray[serve]``: the
``ray`` extra); this package itself imports nothing heavy.
"""
