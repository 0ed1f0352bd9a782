"""zoo.autoregressive.base: the raster-order loop every sampler of the family runs in."""

import numpy as np
import tensorflow as tf

from zoo.autoregressive.base import raster_sample

HEIGHT, WIDTH, BATCH = 3, 4, 2


class RecordingSampler:
    """Writes each pixel's first uniform into the image and records when each pixel and each row start
    was visited."""

    def initial_state(self, batch, labels):
        return {"images": tf.zeros([batch, HEIGHT, WIDTH]), "visits": tf.zeros([HEIGHT, WIDTH], tf.int32),
                "row_starts": tf.zeros([HEIGHT], tf.int32), "count": tf.constant(0), "labels": labels}

    def start_row(self, row, state, labels):
        return {**state, "row_starts": tf.tensor_scatter_nd_update(state["row_starts"], [[row]], [state["count"]])}

    def step(self, row, column, state, uniforms, labels):
        at_pixel = tf.reshape(tf.one_hot(row * WIDTH + column, HEIGHT * WIDTH), [1, HEIGHT, WIDTH])
        visits = tf.tensor_scatter_nd_update(state["visits"], [[row, column]], [state["count"]])
        return {**state, "images": state["images"] + at_pixel * uniforms[:, :1, None], "visits": visits,
                "count": state["count"] + 1}

    def images(self, state):
        return state


def test_raster_sample_visits_rows_top_to_bottom_and_pixels_left_to_right_with_their_own_uniforms():
    uniforms = tf.random.stateless_uniform([BATCH, HEIGHT, WIDTH, 2], seed=[0, 1])
    labels = tf.constant([4, 7], tf.int64)
    state = tf.function(lambda uniforms, labels: raster_sample(RecordingSampler(), uniforms, labels))(uniforms, labels)
    np.testing.assert_array_equal(state["visits"], np.arange(HEIGHT * WIDTH).reshape(HEIGHT, WIDTH))
    np.testing.assert_array_equal(state["row_starts"], np.arange(HEIGHT) * WIDTH)  # before each row's first pixel
    np.testing.assert_array_equal(state["images"], uniforms[..., 0])
    np.testing.assert_array_equal(state["labels"], labels)
