"""Reader for CTranslate2's ``model.bin``, without CTranslate2 itself.

Layout (little-endian; mirrors ``ctranslate2.specs.model_spec.ModelSpec._serialize`` and the C++
loader in ``src/models/model.cc``)::

    u32 binary_version                  # 4..6 are read; older files store item sizes, not dtypes
    str spec_name                       # e.g. "WhisperSpec"
    u32 spec_revision
    u32 num_variables
    num_variables x {
        str name                        # scope path, e.g. "encoder/layer_0/ffn/linear_0/weight"
        u8  rank, u32[rank] shape
        u8  dtype_id                    # index into DTYPES below
        u32 num_bytes, bytes data       # row-major
    }
    u32 num_aliases
    num_aliases x { str alias, str target }   # the alias shares the target's tensor

    str = u16 length (including the trailing NUL), utf-8 bytes, NUL
"""

import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch

# Order of ctranslate2's DataType enum (include/ctranslate2/types.h).
DTYPES = (torch.float32, torch.int8, torch.int16, torch.int32, torch.float16, torch.bfloat16)
SUPPORTED_BINARY_VERSIONS = (4, 5, 6)


@dataclass
class Ct2Model:
    """The content of a ``model.bin``.

    ``variables`` maps a scope path to a tensor with the stored shape and dtype (scalars are 0-d);
    ``aliases`` maps an alias name to the name of the variable it shares.
    """

    spec: str
    revision: int
    binary_version: int
    variables: dict = field(default_factory=dict)
    aliases: dict = field(default_factory=dict)


class _Cursor:
    def __init__(self, data: bytes, path: Path):
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError(f"{self.path}: truncated at byte {self.pos} (wanted {n} more bytes)")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        raw = self.take(self.unpack("H"))
        if not raw.endswith(b"\0"):
            raise ValueError(f"{self.path}: string at byte {self.pos - len(raw)} is not NUL-terminated")
        return raw[:-1].decode("utf-8")


def read_model_bin(path) -> Ct2Model:
    """Parse a CTranslate2 ``model.bin`` into tensors.

    Args:
        path: the ``model.bin`` file.

    Returns:
        ``Ct2Model`` whose tensors keep the stored dtype (float16 stays float16, flags are int8,
        head counts int16), so the caller decides every cast.

    Raises:
        ValueError: unsupported binary version, unknown dtype id, a size that disagrees with the
            shape, an alias to a missing variable, a duplicate name, or trailing bytes.
    """
    path = Path(path)
    cur = _Cursor(path.read_bytes(), path)
    version = cur.unpack("I")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise ValueError(f"{path}: binary version {version} not in {SUPPORTED_BINARY_VERSIONS}")
    model = Ct2Model(spec=cur.string(), revision=cur.unpack("I"), binary_version=version)

    for _ in range(cur.unpack("I")):
        name = cur.string()
        shape = [cur.unpack("I") for _ in range(cur.unpack("B"))]
        dtype_id = cur.unpack("B")
        if dtype_id >= len(DTYPES):
            raise ValueError(f"{path}: variable {name!r} has unknown dtype id {dtype_id}")
        dtype = DTYPES[dtype_id]
        num_bytes = cur.unpack("I")
        expected = dtype.itemsize * int(torch.Size(shape).numel())
        if num_bytes != expected:
            raise ValueError(f"{path}: {name!r} has {num_bytes} bytes, shape {shape} needs {expected}")
        if name in model.variables:
            raise ValueError(f"{path}: duplicate variable {name!r}")
        # bytearray: torch.frombuffer wants a writable buffer; clone() detaches from the file bytes.
        raw = bytearray(cur.take(num_bytes))
        tensor = torch.frombuffer(raw, dtype=dtype) if num_bytes else torch.empty(0, dtype=dtype)
        model.variables[name] = tensor.reshape(shape).clone()

    for _ in range(cur.unpack("I")):
        alias, target = cur.string(), cur.string()
        if target not in model.variables:
            raise ValueError(f"{path}: alias {alias!r} points to missing variable {target!r}")
        if alias in model.variables or alias in model.aliases:
            raise ValueError(f"{path}: alias {alias!r} duplicates an existing name")
        model.aliases[alias] = target

    if cur.pos != len(cur.data):
        raise ValueError(f"{path}: {len(cur.data) - cur.pos} trailing bytes after the aliases")
    return model
