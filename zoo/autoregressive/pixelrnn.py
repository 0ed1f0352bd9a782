"""PixelRNN: an autoregressive image model whose layers are two-dimensional LSTMs.

van den Oord, Kalchbrenner, Kavukcuoglu. Pixel Recurrent Neural Networks. ICML 2016,
arXiv:1601.06759.

The image is a sequence of pixels in raster order and the likelihood is exact (Eq. 1):

    p(x) = Π_i p(x_i | x_1, …, x_{i−1}),

each conditional a Bernoulli (binarized MNIST, Table 1: sigmoid) or a 256-way softmax
over the 8-bit levels round(255 x) (Sec. 2.2), from `pixel_likelihood`. The network
(Table 1): a 7×7 convolution with mask A (Sec. 3.4), then `layers` residual LSTM layers
of h units (Sec. 3.3, Fig. 5: 2h maps in and out), then ReLU, 1×1 convolution (mask B),
ReLU, 1×1 convolution to the logits. The LSTM layer is one of (`pixelrnn_layers`):

* `cell=row_lstm` (Sec. 3.1): rows top to bottom; input-to-state a 1×k convolution along
  the row, mask B; state-to-state a 1×k convolution of the row above; gates of Eq. 3.
  Its receptive field is a triangle above the pixel (Fig. 4).
* `cell=diagonal_bilstm` (Sec. 3.2): the map skewed so that diagonals are columns;
  input-to-state a 1×1 convolution, mask B; state-to-state a 2×1 convolution of the
  previous column; a second direction on the mirrored map, its output shifted down one
  row and added. Its receptive field is the whole past, except the last pixel of the row
  above where the first layer's 7×7 kernel does not reach it (see `DiagonalBiLSTM`).

Channels of a pixel are conditionally independent given the earlier pixels (whole-pixel
conditioning), not R → G → B as in Sec. 3.4; the zoo's data are grey, where the two
coincide. Sampling is the family's naive raster-order loop (`base.raster_sample` with
`base.NaiveSampler`: one full forward pass per pixel), inside a `tf.while_loop`, so
exported SavedModels hold it.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import keras

from zoo import config as config_lib, registry
from zoo.autoregressive import pixel_likelihood
from zoo.autoregressive.base import AutoregressiveImageModel, build_in_order
from zoo.autoregressive.masked_conv import MaskedConv2D
from zoo.autoregressive.pixelrnn_layers import DiagonalBiLSTM, RowLSTM

CELLS = ("row_lstm", "diagonal_bilstm")


@dataclasses.dataclass(frozen=True)
class PixelRNNConfig(config_lib.TrainingConfig):
    # Network.
    cell: str = "diagonal_bilstm"           # Table 4: the best MNIST model (79.20 nats); "row_lstm" (Sec. 3.1)
                                            # reaches 80.54
    filters: int = 16                       # h: Table 4, Diagonal BiLSTM of 7 layers with h = 16
    layers: int = 7                         # LSTM layers after the mask-A convolution: Table 4 (7 layers)
    first_kernel_size: int = 7              # Table 1: 7×7 conv, mask A
    row_kernel_size: int = 3                # k: Row LSTM input-to-state and state-to-state kernels along the row
                                            # (Sec. 3.1; Table 1: "3 × 1", the paper's k × 1)
    output_filters: int = 32                # the head's hidden 1×1 conv: Table 1, 32 maps for MNIST
    likelihood: str = "bernoulli"           # "bernoulli" (sigmoid, Table 1, MNIST) or "categorical"
                                            # (256-way softmax, Sec. 2.2)
    image_shape: tuple[int, ...] = (28, 28, 1)  # MNIST (Table 4)
    conditional: ClassVar[bool] = False     # PixelRNN models p(x): no class labels
    # Data and optimisation.
    dataset: str = "binarized_mnist"        # Table 4: binarized MNIST (Salakhutdinov & Murray 2008)
    batch_size: int = 64                    # deviation: Sec. 5.2 uses 16 for MNIST; 64 takes ~30% less CPU per
                                            # epoch here (61 vs 87 CPU-minutes for the default Diagonal BiLSTM)
    epochs: int = 20                        # deviation: a budget (as zoo.pixelcnn); the paper trains to convergence
    learning_rate: float = 1e-3             # deviation: Adam (Kingma & Ba's defaults); Sec. 5.2 uses RMSProp
                                            # with per-dataset schedules it does not give

    def __post_init__(self):
        super().__post_init__()
        checks = [
            (self.cell in CELLS, "cell must be 'row_lstm' or 'diagonal_bilstm'"),
            (self.filters >= 1, "filters must be >= 1"),
            (self.layers >= 1, "layers must be >= 1: a PixelRNN has at least one LSTM layer"),
            (self.first_kernel_size >= 3 and self.first_kernel_size % 2 == 1,
             "first_kernel_size must be odd and >= 3 (Table 1: 7)"),
            (self.row_kernel_size >= 3 and self.row_kernel_size % 2 == 1,
             "row_kernel_size must be odd and >= 3 (Sec. 3.1: 3)"),
            *pixel_likelihood.config_checks(self),
        ]
        config_lib.check(self, checks)


@keras.saving.register_keras_serializable(package="zoo")
class PixelRNN(AutoregressiveImageModel):
    """p(x) = Π_i p(x_i | x_<i) with a stack of Row LSTM or Diagonal BiLSTM layers (see module docstring).

    `model(images)` returns the per-pixel logits; batches follow `AutoregressiveImageModel`'s
    data contract (dicts with "image").
    """

    config_class = PixelRNNConfig

    def __init__(self, config: PixelRNNConfig, **kwargs):
        super().__init__(config, **kwargs)
        initializer = keras.initializers.GlorotUniform(seed=keras.random.SeedGenerator(config.seed))
        if config.cell == "row_lstm":
            blocks = [RowLSTM(config.filters, config.row_kernel_size, initializer, name=f"row_lstm_{index + 1}")
                      for index in range(config.layers)]
        else:
            blocks = [DiagonalBiLSTM(config.filters, initializer, name=f"diagonal_bilstm_{index + 1}")
                      for index in range(config.layers)]
        self.network = [  # Table 1: 7×7 conv mask A to 2h maps, then the residual LSTM layers (Fig. 5)
            MaskedConv2D(2 * config.filters, config.first_kernel_size, "A", kernel_initializer=initializer,
                         name="input_conv"),
            *blocks,
        ]
        self.likelihood = pixel_likelihood.PixelLogitsLikelihood(config.likelihood, config.image_shape[-1])
        self.head = pixel_likelihood.output_head(config.output_filters, self.likelihood, initializer)

    def build(self, input_shape=None):
        build_in_order([*self.network, *self.head], self.config.image_shape)
        super().build(input_shape)

    def call(self, images, labels=None):
        """Logits of p(x_i | x_<i) at every pixel: [batch, H, W, C], or [batch, H, W, C, 256] (categorical)."""
        del labels  # unconditional
        features = 2.0 * images - 1.0  # Sec. 5.2: scaled and centred, so zero padding reads as mid-grey
        for layer in self.network:
            features = layer(features)
        return self.likelihood.logits(pixel_likelihood.apply_head(self.head, features))


def build(config: PixelRNNConfig) -> PixelRNN:
    model = PixelRNN(config, name="pixelrnn")
    model.build((None, *config.image_shape))
    return model


def dataset(config: PixelRNNConfig) -> registry.DatasetSpec:
    return registry.DatasetSpec(config.dataset, binarize=config.likelihood == "bernoulli")


# One training step per call. With several, Keras runs them in a tf.while_loop around the step, and
# grappler's memory optimizer turns AddN nodes of the LSTM scan's gradient into temporary variables
# named per step container, frame and iteration; after some steps (minutes, for the Diagonal BiLSTM)
# two of them collide: AlreadyExistsError "Resource __per_step_0/…/AddN_1/tmp_var" (TF 2.21; also
# tensorflow/tensorflow#23780, #37740). A step is seconds, so one per call costs nothing measurable.
registry.register(registry.ModelSpec("zoo.pixelrnn", "PixelRNN (van den Oord et al. 2016): Row LSTM or Diagonal "
                                     "BiLSTM layers", PixelRNNConfig, build, dataset,
                                     evaluation=("exact_likelihood",), max_steps_per_execution=1,
                                     tiny=dict(image_shape=(5, 5, 1), filters=4, layers=1, output_filters=8,
                                               first_kernel_size=3, batch_size=8)))
