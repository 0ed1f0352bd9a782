"""The DRAW family: `zoo.draw` (Gregor et al. 2015) and `zoo.align_draw` (Mansimov et al. 2016),
their filterbank attention in `zoo.draw.attention`."""

from zoo.draw.align_draw import AlignDRAW, AlignDRAWConfig
from zoo.draw.model import DRAW, DRAWConfig, build

__all__ = ["AlignDRAW", "AlignDRAWConfig", "DRAW", "DRAWConfig", "build"]
