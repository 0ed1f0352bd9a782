"""The VAE family: `zoo.vae` and `zoo.iwae` (Kingma & Welling 2014; Burda et al. 2016)."""

from zoo.vae.model import VAE, VAEConfig, build

__all__ = ["VAE", "VAEConfig", "build"]
