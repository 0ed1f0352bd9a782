"""The autoregressive image family: `zoo.pixelcnn`, `zoo.gated_pixelcnn`, `zoo.pixelcnn_pp`, `zoo.pixelrnn`.

`base` holds what they share (the exact likelihood as the objective, the raster-order
sampling loop, the signatures) and `pixel_likelihood` the per-pixel logits likelihood of
PixelCNN and PixelRNN; each model is a module beside its private layers, and PixelCNN's
cached samplers are `cached_sampling`.
"""

from zoo.autoregressive import pixelcnn, pixelcnn_pp, pixelrnn

__all__ = ["pixelcnn", "pixelcnn_pp", "pixelrnn"]
