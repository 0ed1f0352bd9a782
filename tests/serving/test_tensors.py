"""serving.tensors against TensorFlow's own converters, and malformed protos."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving import tensors

ARRAYS = {
    "float32": np.arange(12, dtype=np.float32).reshape(3, 2, 2) / 7,
    "float64": np.linspace(-1, 1, 5),
    "float16": np.array([0.5, -2.25], np.float16),
    "int64": np.array([0, -3, 2**40], np.int64),
    "int32": np.array([[1, 2], [3, -4]], np.int32),
    "uint8": np.array([0, 255], np.uint8),
    "bool": np.array([True, False]),
    "string": np.array([b"a", b"\x00\xffpng"], dtype=object),
    "empty": np.zeros((0, 28, 28, 1), np.float32),
    "scalar": np.array(3, np.int64),
}


@pytest.mark.parametrize("name", ARRAYS)
def test_round_trips_agree_with_tensorflows_converters(name):
    array = ARRAYS[name]
    np.testing.assert_array_equal(tensors.to_array(tf.make_tensor_proto(array)), array)
    ours = tensors.to_proto(array)
    back = tf.make_ndarray(ours)
    assert back.dtype == (array.dtype if array.dtype != object else back.dtype) and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_typed_value_fields_and_the_one_value_shorthand_are_read():
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT64, int64_val=[4, 5, 6])
    proto.tensor_shape.dim.add(size=3)
    np.testing.assert_array_equal(tensors.to_array(proto), [4, 5, 6])
    filled = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.5])
    filled.tensor_shape.dim.add(size=2)
    np.testing.assert_array_equal(tensors.to_array(filled), np.full(2, 1.5, np.float32))


@pytest.mark.parametrize("dtype, values, shape, phrase", [
    (types_pb2.DT_INT64, [1, 2], [3], "2 values do not fill shape [3]"),
    (types_pb2.DT_INT64, [], [3], "0 values do not fill shape [3]"),
    (types_pb2.DT_RESOURCE, [], [1], "DT_RESOURCE is not served"),
    (types_pb2.DT_INT64, [1], [-1], "negative size"),
])
def test_malformed_protos_raise_value_error(dtype, values, shape, phrase):
    proto = tensor_pb2.TensorProto(dtype=dtype, int64_val=values)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    with pytest.raises(ValueError, match=phrase.replace("[", r"\[").replace("]", r"\]")):
        tensors.to_array(proto)


def _declaring(shape, dtype=types_pb2.DT_INT64, **values):
    proto = tensor_pb2.TensorProto(dtype=dtype, **values)
    for size in shape:
        proto.tensor_shape.dim.add(size=size)
    return proto


def test_declared_size_is_known_before_any_value_is_decoded():
    declared = tensors.DeclaredTensor(_declaring([10**6, 10**6], int64_val=[1]))  # one value, 8 TB declared
    assert declared.shape == (10**6, 10**6) and declared.ndim == 2 and declared.dtype == np.int64
    assert declared.nbytes == 8 * 10**12
    filled = tensors.to_array(_declaring([128], int64_val=[7]))  # the shorthand
    np.testing.assert_array_equal(filled, np.full(128, 7))


def test_a_shape_of_more_dimensions_than_tensorflow_allows_is_refused_before_its_size_is_computed():
    tensors.DeclaredTensor(_declaring([1] * tensors.MAX_RANK, int64_val=[1]))
    with pytest.raises(ValueError, match="the shape has 40000 dimensions; TensorFlow allows 254"):
        tensors.DeclaredTensor(_declaring([2**62] * 40_000, int64_val=[1]))  # its size: a 2.5-million-bit product


@pytest.mark.parametrize("content_bytes", [8, 127, 129])
def test_tensor_content_must_hold_exactly_the_declared_shapes_bytes(content_bytes):
    proto = _declaring([16], tensor_content=bytes(content_bytes))
    with pytest.raises(ValueError, match=f"tensor_content holds {content_bytes} bytes; shape \\[16\\] of DT_INT64 "
                                         f"needs 128"):
        tensors.to_array(proto)


def test_numpy_str_and_bytes_arrays_are_sent_as_utf8_strings():
    for array in (np.array(["the digit 3 .", "ünïcode"]), np.array([b"the digit 3 ."])):
        back = tf.make_ndarray(tensors.to_proto(array))
        expected = [value.encode() if isinstance(value, str) else value for value in array.tolist()]
        assert back.tolist() == expected and back.shape == array.shape
