"""Autoregressive image models: PixelCNN and Gated PixelCNN.

van den Oord, Kalchbrenner, Kavukcuoglu. Pixel Recurrent Neural Networks. ICML
  2016, arXiv:1601.06759 ("2016a").
van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves, Kavukcuoglu. Conditional
  Image Generation with PixelCNN Decoders. NeurIPS 2016, arXiv:1606.05328 ("2016b").

Both factor the image into pixels in raster order (2016a Eq. 1; 2016b Eq. 3 given y):

    p(x | y) = Π_i p(x_i | x_1, …, x_{i−1}, y),

each conditional a Bernoulli (binarized data) or a 256-way softmax over the 8-bit
levels round(255 x) (2016a Sec. 2.2), and the likelihood is exact. One family,
two registry entries:

* `zoo.pixelcnn`: a 7×7 mask-A convolution, then residual blocks 2h → h → h → 2h
  with a 3×3 mask-B convolution inside (2016a Sec. 3.5, Fig. 5, Table 1). Its
  receptive field has a blind spot above and to the right of each pixel.
* `zoo.gated_pixelcnn`: gated layers with a vertical stack (the rows above) and a
  horizontal stack (the row so far), which together see every earlier pixel
  (2016b Sec. 2.2, Fig. 2), with the gate

      y = tanh(W_f ∗ x + V_f h) ⊙ σ(W_g ∗ x + V_g h)    (2016b Eq. 4; Eq. 2 without h),

  h the one-hot class label when `conditional` (Sec. 2.3).

Both output heads are ReLU, 1×1 convolution, ReLU, 1×1 convolution (2016a Table 1).
Channels of a pixel are conditionally independent given the earlier pixels (whole-pixel
conditioning, as in PixelCNN++ Sec. 2.2), not R → G → B as in 2016a Sec. 3.4; the
zoo's data are grey, where the two coincide.

Sampling runs in raster order inside a `tf.while_loop` (`base.raster_sample`), so
exported SavedModels hold it. Two samplers draw the same images from the same
seeds: "naive", one full forward pass per pixel, and "cached" (Ramachandran et
al. 2017, arXiv:1704.06001), which keeps each layer's recent inputs and computes
only the new pixel (`cached_sampling`); serving uses the cached one.
"""

from __future__ import annotations

import dataclasses

import keras

from zoo import config as config_lib, registry
from zoo.autoregressive import pixel_likelihood
from zoo.autoregressive.base import AutoregressiveImageModel, build_in_order
from zoo.autoregressive.cached_sampling import CachedGatedSampler, CachedResidualSampler
from zoo.autoregressive.masked_conv import MaskedConv2D
from zoo.autoregressive.pixelcnn_layers import GatedLayer, ResidualBlock


@dataclasses.dataclass(frozen=True)
class PixelCNNConfig(config_lib.TrainingConfig):
    # Network.
    architecture: str = "pixelcnn"          # "pixelcnn" (2016a Sec. 3.5) or "gated" (2016b Sec. 2.2, Fig. 2)
    filters: int = 16                       # h: blocks map 2h → h → h → 2h (2016a Fig. 5); gated stacks carry h
                                            # maps. 2016a Table 4: h = 16 in its best MNIST model (a Diagonal BiLSTM)
    layers: int = 7                         # blocks after the mask-A layer: 7 as in that MNIST model; deviation for
                                            # gated: 2016b Sec. 3.1 uses 20 (CIFAR-10); 7 keeps CPU epochs short
    first_kernel_size: int = 7              # 2016a Table 1: 7×7 conv, mask A
    kernel_size: int = 3                    # n: 2016a Table 1: 3×3 mask B; gated n×n and 1×n (deviation: 2016b
                                            # Sec. 3.1 uses n = 5)
    output_filters: int = 32                # the head's hidden 1×1 conv: 2016a Table 1, 32 maps for MNIST
    likelihood: str = "bernoulli"           # "bernoulli" (sigmoid, 2016a Table 1, binarized MNIST) or
                                            # "categorical" (256-way softmax, 2016a Sec. 2.2)
    conditional: bool = False               # 2016b Sec. 2.3: one-hot label h into every gate (Eq. 4); gated only
    num_classes: int = 10
    # Data and optimisation.
    dataset: str = "binarized_mnist"        # 2016a Table 4: binarized MNIST, PixelCNN 81.30 nats
    batch_size: int = 64                    # ours (not from the papers)
    epochs: int = 20                        # deviation: a budget; the papers train to convergence
    learning_rate: float = 1e-3             # ours: Adam with Kingma & Ba's defaults (not from the papers)

    def __post_init__(self):
        super().__post_init__()
        checks = [
            (self.architecture in ("pixelcnn", "gated"), "architecture must be 'pixelcnn' or 'gated'"),
            (self.filters >= 1 and self.layers >= 0, "filters must be >= 1, layers >= 0"),
            (self.first_kernel_size >= 3 and self.first_kernel_size % 2 == 1
             and self.kernel_size >= 3 and self.kernel_size % 2 == 1,
             "first_kernel_size and kernel_size must be odd and >= 3"),
            (not self.conditional or self.architecture == "gated",
             "conditional=true conditions the gates (2016b Eq. 4): set architecture=gated"),
            (not self.conditional or self.num_classes >= 2, "num_classes must be >= 2"),
            *pixel_likelihood.config_checks(self),
        ]
        config_lib.check(self, checks)


@keras.saving.register_keras_serializable(package="zoo")
class PixelCNN(AutoregressiveImageModel):
    """p(x) = Π_i p(x_i | x_<i) with a masked convolutional network (see module docstring).

    `model(images, labels)` returns the per-pixel logits; batches follow
    `AutoregressiveImageModel`'s data contract.
    """

    config_class = PixelCNNConfig

    def __init__(self, config: PixelCNNConfig, **kwargs):
        super().__init__(config, **kwargs)
        initializer = keras.initializers.GlorotUniform(seed=keras.random.SeedGenerator(config.seed))
        if config.architecture == "gated":
            self.network = [
                GatedLayer(config.filters, size, first=not index, num_classes=config.num_classes * config.conditional,
                           kernel_initializer=initializer, name=f"gated_{index}")
                for index, size in enumerate([config.first_kernel_size] + [config.kernel_size] * config.layers)
            ]
        else:
            self.network = [
                MaskedConv2D(2 * config.filters, config.first_kernel_size, "A", kernel_initializer=initializer,
                             name="input_conv"),
                *[ResidualBlock(config.filters, config.kernel_size, initializer, name=f"residual_{index + 1}")
                  for index in range(config.layers)],
            ]
        self.likelihood = pixel_likelihood.PixelLogitsLikelihood(config.likelihood, config.image_shape[-1])
        self.head = pixel_likelihood.output_head(config.output_filters, self.likelihood, initializer)

    def build(self, input_shape=None):
        build_in_order([*self.network, *self.head], self.config.image_shape)
        super().build(input_shape)

    def call(self, images, labels=None):
        """Logits of p(x_i | x_<i, y) at every pixel: [batch, H, W, C], or [batch, H, W, C, 256] (categorical)."""
        one_hot = self.one_hot_labels(labels)
        features = 2.0 * images - 1.0  # centred, so the zero padding of the convolutions reads as mid-grey
        if self.config.architecture == "gated":
            vertical = features
            for layer in self.network:
                vertical, features = layer(vertical, features, labels=one_hot)
        else:
            for layer in self.network:
                features = layer(features)
        return self.likelihood.logits(pixel_likelihood.apply_head(self.head, features))

    def samplers(self):
        """"naive" and "cached" (Ramachandran et al. 2017): the same images, the second H·W times less work."""
        cached = CachedGatedSampler if self.config.architecture == "gated" else CachedResidualSampler
        return {**super().samplers(), "cached": cached}


def build(config: PixelCNNConfig) -> PixelCNN:
    model = PixelCNN(config, name="gated_pixelcnn" if config.architecture == "gated" else "pixelcnn")
    model.build((None, *config.image_shape))
    return model


def dataset(config: PixelCNNConfig) -> registry.DatasetSpec:
    return registry.DatasetSpec(config.dataset, binarize=config.likelihood == "bernoulli", labels=config.conditional)


def _register(name: str, description: str, **preset):
    registry.register(registry.ModelSpec(name, description, PixelCNNConfig, build, dataset, preset=preset,
                                         tiny=dict(image_shape=(5, 5, 1), filters=4, layers=2, output_filters=8,
                                                   batch_size=8),
                                         evaluation=("exact_likelihood",)))


_register("zoo.pixelcnn", "PixelCNN (van den Oord et al. 2016a) with residual blocks")
_register("zoo.gated_pixelcnn", "Gated PixelCNN (van den Oord et al. 2016b): vertical and horizontal stacks",
          architecture="gated")
