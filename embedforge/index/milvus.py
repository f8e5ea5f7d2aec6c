"""Milvus through pymilvus: Milvus Lite (a local ``.db`` file) or a Milvus server/cluster (a URI).

Spec grammar: ``milvus`` (a Milvus Lite file chosen by the owner, e.g. ``COLLECTION/milvus.db``),
``milvus:PATH.db`` (Milvus Lite at that path) or ``milvus:http://HOST:19530`` (a server), with
options ``;collection=NAME`` (default ``embedforge``), ``;index=TYPE`` (Milvus index type,
default ``AUTOINDEX``; Milvus Lite uses a flat index whatever is asked) and ``;token=USER:PASS``.

Same code, same tests for Lite and a server: only the URI differs. Milvus stores the vectors
itself, so the index is persistent; ``save`` flushes. Scores are inner products (metric ``IP``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from embedforge.errors import InputError
from embedforge.index.base import BaseIndex, empty_result

__all__ = ["MilvusIndex", "parse_milvus_spec"]

INSERT_BATCH = 5_000  # rows per insert request (keeps gRPC messages well under their 64 MB limit)
MAX_LIMIT = 16_384  # Milvus' largest top-k
MAX_FILTER_KEYS = 50_000  # larger subsets are filtered after an over-fetch instead of in the expression
DEFAULT_COLLECTION = "embedforge"
_OPTIONS = ("collection", "index", "token")


def parse_milvus_spec(spec: str) -> tuple[str | None, dict[str, str]]:
    """``"milvus[:URI][;opt=v...]"`` -> (URI or None, options)."""
    head, *rest = [p.strip() for p in spec.split(";")]
    if head != "milvus" and not head.startswith("milvus:"):
        raise InputError(f"not a milvus spec: {spec!r}")
    uri = head.removeprefix("milvus").removeprefix(":") or None
    options: dict[str, str] = {}
    for item in rest:
        name, sep, value = item.partition("=")
        if not sep or name not in _OPTIONS or not value:
            raise InputError(f"unknown milvus option {item!r} in {spec!r}; expected {', '.join(_OPTIONS)}=VALUE")
        options[name] = value
    return uri, options


def _client(uri: str, token: str | None) -> Any:
    try:
        from pymilvus import MilvusClient
    except ImportError as err:
        raise InputError("the milvus index needs pymilvus (and milvus-lite for a local file): pip install 'embedforge[search]'") from err
    is_file = "://" not in uri
    if is_file:
        Path(uri).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        try:
            import milvus_lite  # noqa: F401
        except ImportError as err:
            raise InputError(f"a local Milvus file ({uri}) needs milvus-lite: pip install milvus-lite") from err
    try:
        return MilvusClient(uri=str(Path(uri).expanduser().resolve()) if is_file else uri, token=token or "")
    except Exception as err:
        raise InputError(f"cannot connect to Milvus at {uri}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}") from None


class MilvusIndex(BaseIndex):
    """A Milvus collection of (id INT64 primary key, vector FLOAT_VECTOR(dim)) searched by inner product."""

    persistent = True

    def __init__(self, dim: int, spec: str = "milvus", *, default_uri: str | Path | None = None) -> None:
        super().__init__(dim, spec)
        uri, options = parse_milvus_spec(spec)
        if uri is None:
            if default_uri is None:
                raise InputError("spec 'milvus' needs a URI here: use milvus:PATH.db or milvus:http://HOST:19530")
            uri = str(default_uri)
        self.uri = uri
        self.name = options.get("collection", DEFAULT_COLLECTION)
        self._index_type = options.get("index", "AUTOINDEX")
        self._client = _client(uri, options.get("token"))
        if self._client.has_collection(self.name):
            info = self._client.describe_collection(self.name)
            dims = [f.get("params", {}).get("dim") for f in info.get("fields", []) if f.get("name") == "vector"]
            if dims and int(dims[0]) != self.dim:
                raise InputError(f"dimension mismatch: Milvus collection {self.name!r} at {uri} has dimension {dims[0]}, expected {self.dim}")
        else:
            self._create(self._index_type)

    @classmethod
    def from_spec(cls, spec: str, dim: int, *, default_uri: str | Path | None = None) -> MilvusIndex:
        return cls(dim, spec, default_uri=default_uri)

    def _create(self, index_type: str) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        index_params = self._client.prepare_index_params()
        index_params.add_index(field_name="vector", index_type=index_type, metric_type="IP")
        self._client.create_collection(
            self.name, schema=schema, index_params=index_params, consistency_level="Strong"
        )

    def __len__(self) -> int:
        res = self._client.query(self.name, filter="", output_fields=["count(*)"])
        return int(res[0]["count(*)"]) if res else 0

    def _add(self, vectors: np.ndarray, keys: np.ndarray) -> None:
        for start in range(0, keys.shape[0], INSERT_BATCH):
            rows = [
                {"id": int(key), "vector": vec}
                for key, vec in zip(keys[start : start + INSERT_BATCH].tolist(), vectors[start : start + INSERT_BATCH].tolist(), strict=True)
            ]
            self._client.insert(self.name, rows)

    def existing(self, keys: np.ndarray) -> np.ndarray:
        """Which of ``keys`` are stored (int64, sorted)."""
        found: list[int] = []
        keys = np.asarray(keys, dtype=np.int64)
        for start in range(0, keys.shape[0], MAX_FILTER_KEYS):
            chunk = keys[start : start + MAX_FILTER_KEYS].tolist()
            res = self._client.query(self.name, filter=f"id in {chunk}", output_fields=["id"])
            found.extend(int(r["id"]) for r in res)
        return np.unique(np.asarray(found, dtype=np.int64))

    def _remove(self, keys: np.ndarray) -> int:
        present = self.existing(keys)
        for start in range(0, present.shape[0], MAX_FILTER_KEYS):
            self._client.delete(self.name, ids=present[start : start + MAX_FILTER_KEYS].tolist())
        return int(present.shape[0])

    def _search(self, queries: np.ndarray, k: int, subset: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        n = queries.shape[0]
        out_s, out_k = empty_result(n, k)
        expr = ""
        limit = min(k, MAX_LIMIT)
        allowed = subset  # sorted, distinct (BaseIndex.search)
        if allowed is not None:
            if allowed.size <= MAX_FILTER_KEYS:
                expr = f"id in {allowed.tolist()}"
            else:
                limit = min(MAX_LIMIT, k * 10)  # over-fetch, filter below
        res = self._client.search(
            self.name, data=queries.tolist(), limit=limit, filter=expr, output_fields=[],
            search_params={"metric_type": "IP"},
        )
        for i, hits in enumerate(res):
            pairs = [(float(h["distance"]), int(h["id"])) for h in hits]
            if allowed is not None and not expr:
                pairs = [p for p in pairs if np.searchsorted(allowed, p[1]) < allowed.size and allowed[np.searchsorted(allowed, p[1])] == p[1]]
            pairs.sort(key=lambda p: (-p[0], p[1]))
            for j, (score, key) in enumerate(pairs[:k]):
                out_s[i, j], out_k[i, j] = score, key
        return out_s, out_k

    def save(self, path: Path) -> None:
        self._client.flush(self.name)

    def drop(self) -> None:
        """Delete the Milvus collection and create it empty again (used before a rebuild)."""
        if self._client.has_collection(self.name):
            self._client.drop_collection(self.name)
        self._create(self._index_type)

    def close(self) -> None:
        self._client.close()
