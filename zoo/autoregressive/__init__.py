"""The autoregressive image family: `zoo.pixelcnn`, `zoo.gated_pixelcnn`, `zoo.pixelcnn_pp`, `zoo.pixelrnn`.

`base` holds what they share (the exact likelihood, the raster-order sampler, the
signatures); each model is a module beside its private layers.
"""

from zoo.autoregressive import pixelcnn, pixelcnn_pp, pixelrnn

__all__ = ["pixelcnn", "pixelcnn_pp", "pixelrnn"]
