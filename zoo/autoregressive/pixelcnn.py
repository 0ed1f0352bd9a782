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

Sampling runs in raster order inside a `tf.while_loop` (`zoo.autoregressive`), so
exported SavedModels hold it. Two samplers draw the same images from the same
seeds: "naive", one full forward pass per pixel, and "cached" (Ramachandran et
al. 2017, arXiv:1704.06001), which keeps each layer's recent inputs and computes
only the new pixel (`zoo.pixelcnn_layers`); serving uses the cached one.
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from zoo import config as config_lib, registry
from zoo.autoregressive import pixel_likelihood
from zoo.autoregressive.base import AutoregressiveImageModel, Sampler
from zoo.autoregressive.masked_conv import MaskedConv2D
from zoo.autoregressive.pixelcnn_layers import (GatedLayer, GatedLayerSteps, MaskedConvolutionCache, Pixel, ResidualBlock, affine,
                                 pixel_weights, row_write)



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
    image_shape: tuple[int, ...] = (28, 28, 1)
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
class PixelCNN(pixel_likelihood.PixelLogitsLikelihood, AutoregressiveImageModel):
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
        self._make_head(initializer)

    # The network and the likelihood.

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
        return self._head_logits(features)

    # Sampling (the head, the likelihood and the pixel draw are PixelLogitsLikelihood's).

    def samplers(self):
        """"naive" and "cached" (Ramachandran et al. 2017): the same images, the second H·W times less work."""
        cached = self._gated_sampler if self.config.architecture == "gated" else self._residual_sampler
        return {**super().samplers(), "cached": cached}

    def _pixel_logits(self, head_weights, features):
        """The head at one pixel: features [batch, F] → logits [batch, C] or [batch, C, levels]."""
        for weights in head_weights:
            features = affine(weights, tf.nn.relu(features))
        return self._logits(features)

    def _cached_sampler(self, initial_caches, next_row_caches, pixel_step, write_drawn) -> Sampler:
        """The loop both cached samplers share: the image so far, one row buffer of raw values
        and the layers' caches, which move to the next row at each row's start.

        initial_caches(batch, one_hot) → caches; next_row_caches(caches, finished row
        [batch, W, C], one_hot) → caches; pixel_step(caches, pixel) → (logits, caches)
        at a `Pixel` of the current row, before it is drawn; write_drawn(caches, pixel,
        centred values [batch, C]) → caches once it is.
        """
        height, width, channels = self.config.image_shape

        def with_row(state, row):  # images [H, batch, W, C] receive a finished row once
            return tf.tensor_scatter_nd_update(state["images"], [[row]], state["row"][None])

        def initial_state(batch, labels):
            return {"images": tf.zeros([height, batch, width, channels]), "row": tf.zeros([batch, width, channels]),
                    "caches": initial_caches(batch, self.one_hot_labels(labels))}

        def start_row(row, state, labels):
            def next_row():
                finished = 2.0 * state["row"] - 1.0  # centred, as `call` sees it
                return {**state, "images": with_row(state, row - 1),
                        "caches": next_row_caches(state["caches"], finished, self.one_hot_labels(labels))}

            return tf.cond(row > 0, next_row, lambda: state)

        def step(row, column, state, uniforms, labels):
            pixel = Pixel(column, tf.shape(uniforms)[0])
            logits, caches = pixel_step(state["caches"], pixel)
            values = self.draw(logits, uniforms)
            return {"images": state["images"], "caches": write_drawn(caches, pixel, 2.0 * values - 1.0),
                    "row": row_write(state["row"], pixel, 0, values)}

        def images(state):
            return tf.transpose(with_row(state, height - 1), [1, 0, 2, 3])

        return Sampler(initial_state, step, start_row, images)

    def _residual_sampler(self) -> Sampler:
        """Every layer at the new pixel alone, from caches of its input's recent rows (pixelcnn_layers)."""
        width = self.config.image_shape[1]
        first, *blocks = self.network
        first = MaskedConvolutionCache(first)
        blocks = [block.pixel_step() for block in blocks]  # (empty, next_row, step) each
        head_weights = [pixel_weights(layer) for layer in self.head]

        def initial_caches(batch, one_hot):
            del one_hot  # the residual network is unconditional
            return [first.empty(width, batch), *[empty(width, batch) for empty, _, _ in blocks]]

        def next_row_caches(caches, finished, one_hot):
            del finished, one_hot  # every layer wrote its row pixel by pixel
            image_cache, *block_caches = caches
            return [first.next_row(image_cache), *[next_row(cache) for (_, next_row, _), cache
                                                   in zip(blocks, block_caches)]]

        def pixel_step(caches, pixel):
            image_cache, *block_caches = caches
            features = first.output(image_cache, pixel)
            for index, (_, _, step) in enumerate(blocks):
                features, block_caches[index] = step(features, block_caches[index], pixel)
            return self._pixel_logits(head_weights, features), [image_cache, *block_caches]

        def write_drawn(caches, pixel, centred):
            return [first.write(caches[0], pixel, centred), *caches[1:]]

        return self._cached_sampler(initial_caches, next_row_caches, pixel_step, write_drawn)

    def _gated_sampler(self) -> Sampler:
        """Per row, the vertical stacks on the row just finished; per pixel, the horizontal stacks
        at the new pixel alone (GatedLayerSteps)."""
        width, channels = self.config.image_shape[1:]
        layers = [GatedLayerSteps(layer) for layer in self.network]
        head_weights = [pixel_weights(layer) for layer in self.head]

        def initial_caches(batch, one_hot):
            return [layer.empty(width, self.config.filters if index else channels, batch, one_hot)
                    for index, layer in enumerate(layers)]

        def next_row_caches(caches, inputs, one_hot):
            updated = []
            for layer, cache in zip(layers, caches):
                inputs, cache = layer.next_row(cache, inputs, one_hot)
                updated.append(cache)
            return updated

        def pixel_step(caches, pixel):
            features, updated = None, []
            for layer, cache in zip(layers, caches):
                features, cache = layer.step(cache, pixel, features)
                updated.append(cache)
            return self._pixel_logits(head_weights, features), updated

        def write_drawn(caches, pixel, centred):
            return [layers[0].write_input(caches[0], pixel, centred), *caches[1:]]

        return self._cached_sampler(initial_caches, next_row_caches, pixel_step, write_drawn)


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
