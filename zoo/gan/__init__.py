"""The GAN family: `zoo.gan`, `zoo.dcgan`, `zoo.wgan`, `zoo.wgan_gp`, `zoo.cgan`, `zoo.infogan`, `zoo.ebgan`."""

from zoo.gan.model import GAN, GANConfig, build

__all__ = ["GAN", "GANConfig", "build"]
