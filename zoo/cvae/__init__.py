"""The conditional VAE: `zoo.cvae` (quadrant completion) and `zoo.cvae_label` (Sohn et al. 2015)."""

from zoo.cvae.model import CVAE, CVAEConfig, build

__all__ = ["CVAE", "CVAEConfig", "build"]
