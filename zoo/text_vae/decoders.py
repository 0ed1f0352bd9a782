"""The two decoders of Yang et al. 2017: an LSTM, and a dilated convolutional network whose receptive field
sets how much of the text so far it reads.

Both map the decoder's inputs, x_t = [embedding of word t − 1 ; z] at every position t (the latent z
repeated, Sec. 2.2; none for a language model), to features h_t [batch, T, units] from which the
model predicts word t. Both are causal: h_t depends on x_1 … x_t only. For sampling they run one
position at a time (`start`, `step`), from a state: the LSTM's (h, c), the convolution's last
`receptive_field` inputs.

Yang, Hu, Salakhutdinov, Berg-Kirkpatrick. Improved Variational Autoencoders for Text Modeling using
Dilated Convolutions. ICML 2017, arXiv:1702.08139.
"""

from __future__ import annotations

import keras
import tensorflow as tf

DILATIONS = {  # Yang et al. 2017 (from memory of the paper, not checked against it): kernel 3; LCNN, VLCNN repeat [1 … 16]
    "scnn": (1, 2, 4),
    "mcnn": (1, 2, 4, 8, 16),
    "lcnn": (1, 2, 4, 8, 16) * 2,
    "vlcnn": (1, 2, 4, 8, 16) * 3,
}


@keras.saving.register_keras_serializable(package="zoo")
class LSTMDecoder(keras.layers.Layer):
    """h_t = LSTM(x_t, h_{t−1}): the whole text so far, through the recurrent state."""

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.lstm = keras.layers.LSTM(units, return_sequences=True, name="lstm")

    def build(self, input_shape):
        self.lstm.build(input_shape)

    def call(self, inputs):
        return self.lstm(inputs)

    def start(self, batch):
        zeros = tf.zeros([batch, self.units])
        return [zeros, zeros]

    def step(self, state, inputs):
        """(h_t [batch, units], the next state) for x_t [batch, features]."""
        features, state = self.lstm.cell(inputs, state)
        return features, state

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="zoo")
class ResidualBlock(keras.layers.Layer):
    """h + W_3 ReLU(dilated causal conv_k(ReLU(W_1 ReLU(h)))), W_1, W_3 1×1 convolutions through half
    the channels (the bottleneck block of Yang et al. 2017, Fig. 2, after He et al. 2016)."""

    def __init__(self, channels: int, dilation: int, kernel_size: int, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.dilation, self.kernel_size = channels, dilation, kernel_size
        inner = max(1, channels // 2)
        self.reduce = keras.layers.Conv1D(inner, 1, name="reduce")
        self.dilated = keras.layers.Conv1D(inner, kernel_size, dilation_rate=dilation, padding="causal",
                                           name="dilated")
        self.expand = keras.layers.Conv1D(channels, 1, name="expand")

    def build(self, input_shape):
        self.reduce.build(input_shape)
        inner_shape = (*input_shape[:-1], self.reduce.filters)
        self.dilated.build(inner_shape)
        self.expand.build(inner_shape)

    def call(self, h):
        inner = self.dilated(tf.nn.relu(self.reduce(tf.nn.relu(h))))
        return h + self.expand(tf.nn.relu(inner))

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "dilation": self.dilation,
                "kernel_size": self.kernel_size}


@keras.saving.register_keras_serializable(package="zoo")
class DilatedConvDecoder(keras.layers.Layer):
    """A 1×1 projection of x_t to `channels`, then a residual block per dilation (Sec. 3.2).

    Causal convolutions pad on the left only, so h_t reads x_{t − R + 1} … x_t, R = `receptive_field`
    = 1 + (k − 1) Σ_l d_l: 15 inputs for SCNN, 63 for MCNN, 125 for LCNN, 187 for VLCNN (k = 3).
    """

    def __init__(self, channels: int, dilations, kernel_size: int, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.dilations, self.kernel_size = channels, tuple(dilations), kernel_size
        self.project = keras.layers.Conv1D(channels, 1, name="project")
        self.blocks = [ResidualBlock(channels, dilation, kernel_size, name=f"block_{index}")
                       for index, dilation in enumerate(self.dilations)]

    @property
    def receptive_field(self) -> int:
        return 1 + (self.kernel_size - 1) * sum(self.dilations)

    def build(self, input_shape):
        self.project.build(input_shape)
        for block in self.blocks:
            block.build((*input_shape[:-1], self.channels))

    def call(self, inputs):
        h = self.project(inputs)
        for block in self.blocks:
            h = block(h)
        return tf.nn.relu(h)

    def start(self, batch):
        """An empty window of the last R inputs, and how many of them the text has given: none."""
        return [tf.zeros([batch, self.receptive_field, self.project.kernel.shape[1]]), tf.constant(0)]

    def step(self, state, inputs):
        """(h_t, the next state) for x_t: the stack on the window max(0, t − R + 1) … t alone, which is all
        that h_t reads, so its cost does not grow with t. Positions before the text's first are left out, not
        zeros: causal padding pads every layer's input (where a zero input would become each layer's bias)."""
        window, given = state
        window = tf.concat([window[:, 1:], inputs[:, None]], axis=1)
        given = tf.minimum(given + 1, self.receptive_field)
        return self.call(window[:, self.receptive_field - given:])[:, -1], [window, given]

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "dilations": list(self.dilations),
                "kernel_size": self.kernel_size}
