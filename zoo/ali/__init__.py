"""The ALI / BiGAN family: `zoo.ali` (Dumoulin et al. 2017; Donahue et al. 2017)."""

from zoo.ali.model import ALI, ALIConfig, build

__all__ = ["ALI", "ALIConfig", "build"]
