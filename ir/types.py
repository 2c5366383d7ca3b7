"""Tensor types: a static shape and a numpy dtype name."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DTYPES = ("float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint64", "uint32",
          "uint16", "uint8", "bool")
FLOATS = ("float32", "float64", "float16")
INTS = ("int64", "int32", "int16", "int8", "uint64", "uint32", "uint16", "uint8")
# compared, divided and widened as unsigned numbers
UNSIGNED = ("uint64", "uint32", "uint16", "uint8", "bool")


@dataclass(frozen=True)
class TensorType:
    shape: tuple[int, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        assert all(isinstance(d, int) and d >= 0 for d in self.shape), self.shape
        assert self.dtype in DTYPES, self.dtype

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize

    def __str__(self) -> str:
        short = {"float32": "f32", "float64": "f64", "float16": "f16", "int64": "i64",
                 "int32": "i32", "int16": "i16", "int8": "i8", "uint64": "u64", "uint32": "u32",
                 "uint16": "u16", "uint8": "u8"}
        return f"{short.get(self.dtype, self.dtype)}[{','.join(map(str, self.shape))}]"


def type_of(array: np.ndarray) -> TensorType:
    return TensorType(tuple(int(d) for d in array.shape), str(array.dtype))
