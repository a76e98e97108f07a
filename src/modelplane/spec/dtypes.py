"""Data types of fields and tensors, and how they map to numpy and Open Inference Protocol v2."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["DType"]


class DType(StrEnum):
    """The 13 tensor data types of Open Inference Protocol v2, spelled the numpy way."""

    BOOL = "bool"
    UINT8 = "uint8"
    UINT16 = "uint16"
    UINT32 = "uint32"
    UINT64 = "uint64"
    INT8 = "int8"
    INT16 = "int16"
    INT32 = "int32"
    INT64 = "int64"
    FLOAT16 = "float16"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    STRING = "string"

    @property
    def v2(self) -> str:
        """The Open Inference Protocol v2 name (``FP32``, ``BYTES``, ...)."""
        return _TO_V2[self]

    @classmethod
    def from_v2(cls, name: str) -> DType:
        try:
            return _FROM_V2[name]
        except KeyError:
            raise ValueError(f"'{name}' is not an Open Inference Protocol datatype") from None

    @property
    def numpy(self) -> str:
        """The numpy dtype string; strings are held as ``object`` arrays."""
        return "object" if self is DType.STRING else self.value

    @property
    def is_integer(self) -> bool:
        return self.value.startswith(("int", "uint"))

    @property
    def is_float(self) -> bool:
        return self.value.startswith("float")

    @property
    def is_numeric(self) -> bool:
        return self.is_integer or self.is_float

    @property
    def bits(self) -> int:
        """Width in bits; 8 for ``bool``, 0 for ``string`` (unbounded)."""
        if self is DType.STRING:
            return 0
        if self is DType.BOOL:
            return 8
        return int("".join(ch for ch in self.value if ch.isdigit()))


_TO_V2: dict[DType, str] = {
    DType.BOOL: "BOOL",
    DType.UINT8: "UINT8",
    DType.UINT16: "UINT16",
    DType.UINT32: "UINT32",
    DType.UINT64: "UINT64",
    DType.INT8: "INT8",
    DType.INT16: "INT16",
    DType.INT32: "INT32",
    DType.INT64: "INT64",
    DType.FLOAT16: "FP16",
    DType.FLOAT32: "FP32",
    DType.FLOAT64: "FP64",
    DType.STRING: "BYTES",
}
_FROM_V2: dict[str, DType] = {v: k for k, v in _TO_V2.items()}
