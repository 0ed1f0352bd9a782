"""The DRAW family: `zoo.draw` (Gregor et al. 2015), its filterbank attention in `zoo.draw.attention`."""

from zoo.draw.model import DRAW, DRAWConfig, build

__all__ = ["DRAW", "DRAWConfig", "build"]
