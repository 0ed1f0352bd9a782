"""TensorProto ⇄ numpy without TensorFlow's general converters, which cost ~0.2 ms per tensor.

A numeric tensor travels as raw little-endian bytes (`tensor_content`), the way
`tf.make_tensor_proto` writes it; strings travel in `string_val`. Protos written
with the typed repeated fields (`float_val`, `int64_val`, …, as other clients
may send them) are read too, including TF's shorthand of one value standing for
a filled tensor. A `tensor_content` must hold exactly the declared shape's bytes.
"""

from __future__ import annotations

import math

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

# dtype enum → (numpy dtype, the repeated field its values may come in)
NUMERIC = {
    types_pb2.DT_FLOAT: (np.float32, "float_val"),
    types_pb2.DT_DOUBLE: (np.float64, "double_val"),
    types_pb2.DT_HALF: (np.float16, "half_val"),
    types_pb2.DT_INT8: (np.int8, "int_val"),
    types_pb2.DT_INT16: (np.int16, "int_val"),
    types_pb2.DT_INT32: (np.int32, "int_val"),
    types_pb2.DT_INT64: (np.int64, "int64_val"),
    types_pb2.DT_UINT8: (np.uint8, "int_val"),
    types_pb2.DT_UINT16: (np.uint16, "int_val"),
    types_pb2.DT_UINT32: (np.uint32, "uint32_val"),
    types_pb2.DT_UINT64: (np.uint64, "uint64_val"),
    types_pb2.DT_BOOL: (np.bool_, "bool_val"),
}
MAX_RANK = 254  # TensorFlow's TensorShape::MaxDimensions()
DTYPE_ENUM = {np.dtype(numpy_dtype): enum for enum, (numpy_dtype, _) in NUMERIC.items()}


class DeclaredTensor:
    """A received TensorProto: its dtype and declared shape, read without decoding any value.

    A request is checked against the signature and the server's caps on these
    (`dtype`, `shape`, `ndim`, `nbytes`, as on an ndarray) before `to_array`
    allocates anything, so a proto that declares shape [10^9] and carries one
    value costs nothing. ValueError for a dtype the server does not serve or a
    negative size.
    """

    def __init__(self, proto: tensor_pb2.TensorProto):
        self.proto = proto
        if proto.tensor_shape.unknown_rank:
            raise ValueError("the shape has an unknown rank; give every dimension")
        if len(proto.tensor_shape.dim) > MAX_RANK:  # before any arithmetic on the sizes
            raise ValueError(f"the shape has {len(proto.tensor_shape.dim)} dimensions; TensorFlow allows {MAX_RANK}")
        self.shape = tuple(dim.size for dim in proto.tensor_shape.dim)
        if any(size < 0 for size in self.shape):
            raise ValueError(f"shape {list(self.shape)} has a negative size")
        if proto.dtype == types_pb2.DT_STRING:
            self.dtype = np.dtype(object)
        elif proto.dtype in NUMERIC:
            self.dtype = np.dtype(NUMERIC[proto.dtype][0])
        else:
            raise ValueError(f"dtype {types_pb2.DataType.Name(proto.dtype)} is not served")
        self.ndim = len(self.shape)
        self.size = math.prod(self.shape)  # a Python int: no overflow however large the declared sizes
        self.nbytes = self.size * self.dtype.itemsize  # strings: one pointer each, their bytes came in the message

    def to_array(self) -> np.ndarray:
        """The values; ValueError when they do not fill the declared shape."""
        proto, shape, count = self.proto, self.shape, self.size
        if self.dtype == object:
            values = np.array(list(proto.string_val), dtype=object)
        elif proto.tensor_content:
            if len(proto.tensor_content) != self.nbytes:
                raise ValueError(f"tensor_content holds {len(proto.tensor_content)} bytes; shape {list(shape)} of "
                                 f"{types_pb2.DataType.Name(proto.dtype)} needs {self.nbytes}")
            values = np.frombuffer(proto.tensor_content, dtype=self.dtype.newbyteorder("<"))
        elif proto.dtype == types_pb2.DT_HALF:
            values = np.array(proto.half_val, np.uint16).view(np.float16)
        else:
            values = np.array(getattr(proto, NUMERIC[proto.dtype][1]), dtype=self.dtype)
        if values.size == count:
            return values.astype(values.dtype.newbyteorder("="), copy=False).reshape(shape)
        if values.size == 1 or (values.size == 0 and count == 0):  # TF's shorthand: one value fills the tensor
            return np.full(shape, values[0] if values.size else 0, dtype=values.dtype)
        raise ValueError(f"{values.size} values do not fill shape {list(shape)}")


def to_array(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """The array a TensorProto holds; ValueError for one whose values do not fit its shape."""
    return DeclaredTensor(proto).to_array()


def to_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    """A TensorProto of a numeric or string array (bytes, or str sent as UTF-8; numpy's str, bytes or object)."""
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in array.shape])
    if array.dtype.kind in "OSU":
        values = [value.encode() if isinstance(value, str) else bytes(value) for value in array.reshape(-1)]
        return tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape, string_val=values)
    little_endian = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return tensor_pb2.TensorProto(dtype=DTYPE_ENUM[array.dtype.newbyteorder("=")], tensor_shape=shape,
                                  tensor_content=np.ascontiguousarray(little_endian).tobytes())
