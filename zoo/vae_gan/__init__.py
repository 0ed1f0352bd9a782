"""VAE-GAN: `zoo.vae_gan` (Larsen et al. 2016)."""

from zoo.vae_gan.model import VAEGAN, VAEGANConfig, build

__all__ = ["VAEGAN", "VAEGANConfig", "build"]
