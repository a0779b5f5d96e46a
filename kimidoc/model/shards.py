"""Reading safetensors shards tensor by tensor, straight into their destination.

A small reader of the safetensors layout (8-byte header length, JSON header, raw little-endian
data) instead of memory-mapping: mapped pages count towards the process's resident memory until
the file is closed, so a mapped shard would double the peak during loading. Reading with
``readinto`` into the destination tensor keeps the peak at the weights plus one tensor, and
checking every header entry against the file size names a truncated file and tensor up front.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded; the message names the file and the tensor."""


@dataclass(frozen=True)
class TensorInfo:
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


class ShardReader:
    """One ``.safetensors`` file: its header, validated, and reads of single tensors."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self._file = open(self.path, "rb")
        except FileNotFoundError as e:
            raise CheckpointError(f"{self.path}: shard file not found") from e
        size = os.fstat(self._file.fileno()).st_size
        head = self._file.read(8)
        if len(head) < 8:
            self.close()
            raise CheckpointError(f"{self.path}: truncated shard (no safetensors header, {size} bytes)")
        (header_len,) = struct.unpack("<Q", head)
        if 8 + header_len > size:
            self.close()
            raise CheckpointError(f"{self.path}: truncated shard (header of {header_len} bytes, file has {size})")
        try:
            header = json.loads(self._file.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            self.close()
            raise CheckpointError(f"{self.path}: corrupt safetensors header ({e})") from e
        header.pop("__metadata__", None)
        base = 8 + header_len
        self.tensors: dict[str, TensorInfo] = {}
        for name, entry in header.items():
            dtype = DTYPES.get(entry.get("dtype"))
            if dtype is None:
                self.close()
                raise CheckpointError(f"{self.path}: tensor {name} has unsupported dtype {entry.get('dtype')!r}")
            start, end = entry["data_offsets"]
            info = TensorInfo(dtype, tuple(entry["shape"]), base + start, base + end)
            if info.end > size:
                self.close()
                raise CheckpointError(
                    f"{self.path}: truncated shard: tensor {name} needs bytes up to {info.end}, file has {size}"
                )
            self.tensors[name] = info

    def read_into(self, name: str, out: torch.Tensor) -> torch.Tensor:
        """Read tensor ``name`` into the contiguous CPU tensor ``out`` (same dtype and size)."""
        info = self.tensors[name]
        if out.numel() * out.element_size() != info.nbytes:
            raise CheckpointError(
                f"{self.path}: tensor {name} holds {info.nbytes} bytes, expected {out.numel() * out.element_size()}"
            )
        if info.nbytes:
            view = memoryview(out.reshape(-1).view(torch.uint8).numpy())
            self._file.seek(info.start)
            got = self._file.readinto(view)
            if got != info.nbytes:
                raise CheckpointError(
                    f"{self.path}: truncated shard: tensor {name} cut short ({got} of {info.nbytes} bytes)"
                )
        return out

    def read(self, name: str) -> torch.Tensor:
        info = self.tensors[name]
        return self.read_into(name, torch.empty(info.shape, dtype=info.dtype))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
