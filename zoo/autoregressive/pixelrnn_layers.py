"""The two-dimensional LSTM layers of PixelRNN, and the skew that makes diagonals columns.

van den Oord, Kalchbrenner, Kavukcuoglu. Pixel Recurrent Neural Networks. ICML 2016,
arXiv:1601.06759.

Both layers are LSTMs whose gates come from two convolutions (Sec. 3.1, Eq. 3):

    [o, f, i, g] = σ(K^ss ⊛ h_prev + K^is ⊛ x),   c = f ⊙ c_prev + i ⊙ g,   h = o ⊙ tanh(c),

σ the logistic sigmoid for o, f, i and tanh for g. The input-to-state convolution K^is
(masked, Sec. 3.4) runs once over the whole input map; the state-to-state convolution
K^ss runs inside the recurrence, one step per row (Row LSTM) or per diagonal (Diagonal
BiLSTM). Each layer is a residual block (Sec. 3.3, Fig. 5): 2h maps in, h per gate in the
LSTM, a 1×1 convolution back to 2h, plus the input. The initial state h_prev, c_prev
of the first step is learned (Sec. 5.2).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from zoo.autoregressive.masked_conv import MaskedConv2D


def skew(inputs):
    """[batch, H, W, C] → [batch, H, W + H − 1, C]: row i shifted right by i, zeros around it
    (Sec. 3.2, Fig. 3), so the diagonal i + j = t of the image is column t.

    Reshapes only: each row padded by H zeros, the rows flattened into one line of H(W + H)
    values, its last H dropped, and the line cut into rows of W + H − 1; entry (i, t) of the
    result is then entry i(W + H) + (t − i) of the line, pixel (i, t − i) when 0 ≤ t − i < W
    and a padding zero otherwise.
    """
    _, height, width, channels = inputs.shape
    length = width + height - 1
    padded = tf.pad(inputs, [[0, 0], [0, 0], [0, height], [0, 0]])
    line = tf.reshape(padded, [-1, height * (length + 1), channels])
    return tf.reshape(tf.slice(line, [0, 0, 0], [-1, height * length, -1]), [-1, height, length, channels])


def unskew(skewed, width: int):
    """The inverse of `skew`: [batch, H, W + H − 1, C] → [batch, H, W, C], entry (i, j) from (i, i + j)."""
    _, height, length, channels = skewed.shape
    line = tf.pad(tf.reshape(skewed, [-1, height * length, channels]), [[0, 0], [0, height], [0, 0]])
    return tf.slice(tf.reshape(line, [-1, height, length + 1, channels]), [0, 0, 0, 0], [-1, -1, width, -1])


def shift_down(inputs):
    """Row i gets row i − 1, row 0 zeros: [batch, H, W, C] → the same shape."""
    return tf.pad(tf.slice(inputs, [0, 0, 0, 0], [-1, inputs.shape[1] - 1, -1, -1]), [[0, 0], [1, 0], [0, 0], [0, 0]])


def lstm_update(gates, cell):
    """Eq. 3 from the gates' pre-activations [..., 4h], laid out (o, f, i, g): → (h, c)."""
    output_gate, forget_gate, input_gate, content = tf.split(gates, 4, axis=-1)
    cell = tf.sigmoid(forget_gate) * cell + tf.sigmoid(input_gate) * tf.tanh(content)
    return tf.sigmoid(output_gate) * tf.tanh(cell), cell


class ResidualLSTM(keras.layers.Layer):
    """x + conv_1×1(LSTM(x)): a residual block around a two-dimensional LSTM (Sec. 3.3, Fig. 5).

    A subclass sets `directions`, gives the kernel sizes of K^is (masked, B) and K^ss, and
    implements `recur(inputs) -> h` [batch, H, W, h] with `scan`.
    """

    directions = 1

    def __init__(self, units: int, input_kernel_size, state_to_state_shape, kernel_initializer="glorot_uniform",
                 **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.kernel_initializer = kernel_initializer
        self.input_to_state = MaskedConv2D(4 * self.directions * units, input_kernel_size, "B",
                                           kernel_initializer=kernel_initializer, name="input_to_state")
        self.state_to_state_shape = state_to_state_shape
        self.output_conv = MaskedConv2D(2 * units, 1, "B", kernel_initializer=kernel_initializer, name="output_conv")

    def build(self, input_shape):
        self.input_to_state.build(input_shape)
        self.state_to_state = self.add_weight(shape=self.state_to_state_shape, initializer=self.kernel_initializer,
                                              name="state_to_state")
        self.initial_state = self.add_weight(shape=(2, self.directions, self.units), initializer="zeros",
                                             name="initial_state")  # (h, c) before the first step (Sec. 5.2)
        self.output_conv.build((*input_shape[:-1], self.units))

    def compute_output_shape(self, input_shape):
        return input_shape

    def call(self, inputs):
        return inputs + self.output_conv(self.recur(inputs))

    def scan(self, state_to_state, gates):
        """Eq. 3 step by step along axis 0 of `gates` = K^is ⊛ x, [steps, batch, positions, directions·4h]
        laid out (direction, gate, unit), with `state_to_state(h) = K^ss ⊛ h` mapping a step's state
        [batch, positions, directions·h] to the next step's gates: → h [steps, batch, positions, directions·h]."""
        steps, _, positions, _ = gates.shape
        hidden, cell = tf.unstack(tf.broadcast_to(self.initial_state[:, None, None],
                                                  [2, tf.shape(gates)[1], positions, self.directions, self.units]))

        def next_state(state, step_gates):
            hidden, cell = state
            step_gates += state_to_state(tf.reshape(hidden, [-1, positions, self.directions * self.units]))
            return lstm_update(tf.reshape(step_gates, [-1, positions, self.directions, 4 * self.units]), cell)

        hidden, _ = tf.scan(next_state, gates, initializer=(hidden, cell))
        return tf.reshape(hidden, [steps, -1, positions, self.directions * self.units])


class RowLSTM(ResidualLSTM):
    """Rows top to bottom, each row's state at once (Sec. 3.1).

    K^is: a 1×k convolution along the row, mask B (taps j − r … j of row i, r = k // 2);
    K^ss: an unmasked 1×k convolution of the previous row's hidden state (taps j − r … j + r
    of row i − 1). Pixel (i, j) therefore sees a triangle above it (Fig. 4): row i − d
    within about d·r columns of j, plus what the layers below bring from its own row.
    """

    def __init__(self, units: int, kernel_size: int, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(units, (1, kernel_size), (kernel_size, units, 4 * units), kernel_initializer, **kwargs)

    def recur(self, inputs):
        rows = tf.transpose(self.input_to_state(inputs), [1, 0, 2, 3])  # K^is ⊛ x of every row: [H, batch, W, 4h]
        hidden = self.scan(lambda hidden: tf.nn.conv1d(hidden, self.state_to_state, 1, "SAME"), rows)
        return tf.transpose(hidden, [1, 0, 2, 3])


class DiagonalBiLSTM(ResidualLSTM):
    """Diagonals left to right, in two directions (Sec. 3.2).

    The input-to-state maps (a 1×1 convolution, mask B, per direction) are skewed, so that
    column t holds the diagonal i + j = t, and the LSTM steps over the columns with K^ss a
    2×1 column convolution: the state at (i, j) reads the states at (i − 1, j) and (i, j − 1),
    so it sees every pixel above and to the left. The second direction runs on the mirrored
    map and sees everything above and to the right, its own row included; its output is
    shifted down one row before it is added to the first's, so that pixel (i, j) gets from
    it only rows < i (Sec. 3.2, last paragraph). Together they see every earlier pixel (the
    paper's "entire available context") but one: no feature at row i − 1 contains pixel
    (i − 1, W − 1) (mask A, then mask B everywhere), so only the first layer's kernel brings
    it, to columns j ≥ W − 1 − r of row i (r its radius: 3 for Table 1's 7×7).

    Both directions step together in one convolution whose kernel is block-diagonal: the
    state is [left h | right h], the gates [left 4h | right 4h], and each direction's K^ss
    maps only its own half (a grouped convolution, written out, because TensorFlow has no
    gradient for grouped convolutions on CPUs without oneDNN).
    """

    directions = 2

    def __init__(self, units: int, kernel_initializer="glorot_uniform", **kwargs):
        # K^ss: taps (i − 1, i) of the previous column, h inputs per group (direction) → 4h gates per group
        super().__init__(units, 1, (2, units, 8 * units), kernel_initializer, **kwargs)

    def recur(self, inputs):
        width = inputs.shape[2]
        left, right = tf.split(self.input_to_state(inputs), 2, axis=-1)
        gates = tf.concat([left, tf.reverse(right, [2])], axis=-1)  # the right direction on the mirrored map
        columns = tf.transpose(skew(gates), [2, 0, 1, 3])  # [W + H − 1, batch, H, 8h]

        left_kernel, right_kernel = tf.split(self.state_to_state, 2, axis=-1)  # [2, h, 4h] each
        zeros = tf.zeros_like(left_kernel)
        kernel = tf.concat([tf.concat([left_kernel, zeros], -1), tf.concat([zeros, right_kernel], -1)], 1)

        def state_to_state(hidden):  # the previous column's states at rows i − 1 and i
            return tf.nn.conv1d(tf.pad(hidden, [[0, 0], [1, 0], [0, 0]]), kernel, 1, "VALID")

        hidden = unskew(tf.transpose(self.scan(state_to_state, columns), [1, 2, 0, 3]), width)
        left, right = tf.split(hidden, 2, axis=-1)
        return left + shift_down(tf.reverse(right, [2]))
