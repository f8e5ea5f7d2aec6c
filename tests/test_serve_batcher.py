"""The micro-batcher and the server's pure helpers, without a model or a server."""

from __future__ import annotations

import base64
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("fastapi")

from embedforge.serve.batcher import MicroBatcher  # noqa: E402
from embedforge.serve.middleware import check_api_key  # noqa: E402
from embedforge.serve.pool import DirectEncoder  # noqa: E402
from embedforge.serve.service import served_names, to_base64, truncate_dimensions  # noqa: E402


def _fake_encode(texts: list[str]) -> np.ndarray:
    """Row i = [len(text), hash-ish of text]: each text's own, recognisable vector."""
    return np.array([[len(t), sum(map(ord, t)) % 997] for t in texts], dtype=np.float32).reshape(-1, 2)


class _GatedEncode:
    """Blocks its first call until released, recording every call's texts."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.threads: set[str] = set()

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        self.threads.add(threading.current_thread().name)
        if len(self.calls) == 1:
            self.entered.set()
            assert self.release.wait(10)
        return _fake_encode(texts)


def test_queued_requests_share_one_call_and_get_their_own_rows() -> None:
    gate = _GatedEncode()
    batches: list[tuple[int, int]] = []
    batcher = MicroBatcher(gate, max_batch_size=64, max_wait_ms=0, on_batch=lambda t, r: batches.append((t, r)))
    try:
        first = batcher.submit(["warm-up"])
        assert gate.entered.wait(10)  # the worker is busy: everything below queues up
        requests = [[f"text {i}"] * (1 + i % 3) + [f"other {i}"] for i in range(10)]
        futures = [batcher.submit(texts) for texts in requests]
        gate.release.set()
        first.result(10)
        for texts, future in zip(requests, futures, strict=True):
            np.testing.assert_array_equal(future.result(10), _fake_encode(texts))
    finally:
        batcher.close()
    assert len(gate.calls) == 2  # the warm-up, then all ten queued requests in one call
    assert batches[-1] == (sum(map(len, requests)), 10)
    assert gate.threads == {"embedforge-batcher"}


def test_max_batch_size_is_respected_and_a_large_request_is_split_into_passes() -> None:
    gate = _GatedEncode()
    batcher = MicroBatcher(gate, max_batch_size=4, max_wait_ms=0)
    large = [f"z{i}" * (1 + i) for i in range(9)]
    try:
        first = batcher.submit(["a"])
        assert gate.entered.wait(10)
        futures = [batcher.submit(["x", "y"]) for _ in range(3)] + [batcher.submit(large)]
        gate.release.set()
        first.result(10)
        for future in futures:
            future.result(10)
    finally:
        batcher.close()
    sizes = [len(call) for call in gate.calls]
    # the 9-text request: passes of 4, 4 and 1 queued like any others; the 1 joins the last "x y" request
    assert sizes == [1, 4, 3, 4, 4]
    np.testing.assert_array_equal(futures[-1].result(), _fake_encode(large))  # its rows back in its order


def test_a_lone_request_waits_only_after_a_shared_batch() -> None:
    import time

    light = MicroBatcher(_fake_encode, max_wait_ms=500)
    try:
        start = time.monotonic()
        light.embed(["lone"], timeout=10)  # light load: no one to wait for
        assert time.monotonic() - start < 0.4
    finally:
        light.close()
    gate = _GatedEncode()

    def slow(texts: list[str]) -> np.ndarray:  # a pass takes 0.6 s: a wait of 0.5 s is worth it
        out = gate(texts)
        if len(gate.calls) > 1:
            time.sleep(0.6)
        return out

    batcher = MicroBatcher(slow, max_batch_size=64, max_wait_ms=500)
    try:
        first = batcher.submit(["x"])
        assert gate.entered.wait(10)
        shared = [batcher.submit(["y"]), batcher.submit(["z"])]  # queued meanwhile: one shared call
        gate.release.set()
        for future in [first, *shared]:
            future.result(10)
        assert [len(call) for call in gate.calls] == [1, 2]
        start = time.monotonic()
        batcher.embed(["after"], timeout=10)  # the last call was shared: this one waits for company
        assert time.monotonic() - start >= 0.45 + 0.6
    finally:
        batcher.close()
    fast = MicroBatcher(_fake_encode, max_batch_size=64, max_wait_ms=500)
    try:
        with ThreadPoolExecutor(8) as pool:  # shared calls that take microseconds
            list(pool.map(lambda t: fast.embed([t], timeout=10), [f"t{i}" for i in range(64)]))
        start = time.monotonic()
        fast.embed(["after"], timeout=10)  # no wait longer than the last call took
        assert time.monotonic() - start < 0.4
    finally:
        fast.close()


def test_concurrent_threads_each_get_their_own_vectors() -> None:
    batcher = MicroBatcher(_fake_encode, max_batch_size=16, max_wait_ms=20)
    texts = [[f"request {i} " + "w" * i, f"second {i}"] for i in range(40)]
    try:
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda t: batcher.embed(t, timeout=10), texts))
    finally:
        batcher.close()
    for sent, got in zip(texts, results, strict=True):
        np.testing.assert_array_equal(got, _fake_encode(sent))


def test_a_failing_request_does_not_fail_the_ones_batched_with_it() -> None:
    gate = _GatedEncode()

    def encode(texts: list[str]) -> np.ndarray:
        if "poison" in texts:
            raise ValueError("bad text")
        return gate(texts)

    batcher = MicroBatcher(encode, max_batch_size=64, max_wait_ms=0)
    try:
        first = batcher.submit(["warm-up"])
        assert gate.entered.wait(10)
        good = batcher.submit(["fine"])
        bad = batcher.submit(["poison"])
        gate.release.set()
        first.result(10)
        np.testing.assert_array_equal(good.result(10), _fake_encode(["fine"]))
        with pytest.raises(ValueError, match="bad text"):
            bad.result(10)
    finally:
        batcher.close()


def test_call_runs_on_the_worker_and_close_rejects_new_work() -> None:
    batcher = MicroBatcher(_fake_encode)
    assert batcher.call(lambda: threading.current_thread().name) == "embedforge-batcher"
    with pytest.raises(ZeroDivisionError):
        batcher.call(lambda: 1 / 0)
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(["late"])


def test_direct_encoder_has_the_same_interface() -> None:
    seen: list[tuple[int, int]] = []
    direct = DirectEncoder(_fake_encode, on_batch=lambda t, r: seen.append((t, r)))
    np.testing.assert_array_equal(direct.embed(["a", "bb"]), _fake_encode(["a", "bb"]))
    assert direct.call(lambda: 7) == 7
    assert seen == [(2, 1)]
    direct.close()


def test_truncate_dimensions_renormalises() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(5, 16)).astype(np.float32)
    out = truncate_dimensions(vectors, 4)
    assert out.shape == (5, 4) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(out, vectors[:, :4] / np.linalg.norm(vectors[:, :4], axis=1, keepdims=True), rtol=1e-6)


def test_base64_is_little_endian_float32() -> None:
    vector = np.array([1.0, -2.5, 3.25], dtype=np.float32)
    decoded = np.frombuffer(base64.b64decode(to_base64(vector)), dtype="<f4")
    np.testing.assert_array_equal(decoded, vector)


def test_served_names(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model_id, names = served_names("minilm", ["text-embedding-3-small"])
    assert model_id == "minilm"
    assert {"minilm", "sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2", "text-embedding-3-small"} <= names
    (tmp_path / "my-model").mkdir()
    model_id, names = served_names(str(tmp_path / "my-model"))
    assert model_id == "my-model" and str(tmp_path / "my-model") in names
    assert served_names("org/name")[1] >= {"org/name", "name"}


def test_api_key_check() -> None:
    keys = [b"secret-1", b"secret-2"]
    assert check_api_key("Bearer secret-2", keys)
    assert check_api_key("bearer secret-1", keys)
    assert not check_api_key("Bearer secret-3", keys)
    assert not check_api_key("Basic secret-1", keys)
    assert not check_api_key("", keys)
    assert not check_api_key(None, keys)
    assert check_api_key("Basic " + base64.b64encode(b"anyone:secret-2").decode(), keys)  # a browser's login
    assert check_api_key("Basic " + base64.b64encode(b":secret-1").decode(), keys)
    assert not check_api_key("Basic " + base64.b64encode(b"secret-1").decode(), keys)  # no ':': no password
    assert not check_api_key("Basic " + base64.b64encode(b"secret-1:x").decode(), keys)
    assert not check_api_key("Basic %%%", keys)


class _GatedMerge:
    """A merge function (items -> one result per item) that blocks its first call until released."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail_on = fail_on

    def __call__(self, items: list[str]) -> list[str]:
        self.calls.append(list(items))
        if len(self.calls) == 1:
            self.entered.set()
            assert self.release.wait(10)
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"bad item {self.fail_on}")
        return [item.upper() for item in items]


def _wait_queued(batcher: MicroBatcher, n: int) -> None:
    deadline = time.monotonic() + 10
    while batcher._queue.qsize() < n and time.monotonic() < deadline:
        time.sleep(0.005)


def test_merged_calls_with_one_key_share_one_call_and_keep_their_results() -> None:
    fn = _GatedMerge()
    batcher = MicroBatcher(_fake_encode, max_batch_size=64, max_wait_ms=50)
    try:
        with ThreadPoolExecutor(8) as pool:
            first = pool.submit(batcher.merged, "k", ["a0"], fn, 10)
            assert fn.entered.wait(10)  # the worker is busy: the next calls queue up together
            same = [pool.submit(batcher.merged, "k", [f"s{i}", f"t{i}"], fn, 10) for i in range(4)]
            other = pool.submit(batcher.merged, "other", ["o"], fn, 10)
            _wait_queued(batcher, 5)
            fn.release.set()
            assert first.result(10) == ["A0"]
            assert [f.result(10) for f in same] == [[f"S{i}", f"T{i}"] for i in range(4)]
            assert other.result(10) == ["O"]
        merged = [call for call in fn.calls if len(call) > 1]
        assert merged == [[item for i in range(4) for item in (f"s{i}", f"t{i}")]], fn.calls
        assert ["o"] in fn.calls  # another key: its own call
    finally:
        batcher.close()


def test_a_failing_merged_call_fails_only_its_own_request() -> None:
    fn = _GatedMerge(fail_on="bad")
    batcher = MicroBatcher(_fake_encode, max_batch_size=64, max_wait_ms=50)
    try:
        with ThreadPoolExecutor(4) as pool:
            first = pool.submit(batcher.merged, "k", ["a"], fn, 10)
            assert fn.entered.wait(10)
            good = pool.submit(batcher.merged, "k", ["b"], fn, 10)
            bad = pool.submit(batcher.merged, "k", ["bad"], fn, 10)
            _wait_queued(batcher, 2)
            fn.release.set()
            assert first.result(10) == ["A"] and good.result(10) == ["B"]
            with pytest.raises(ValueError, match="bad item"):
                bad.result(10)
    finally:
        batcher.close()
    direct = DirectEncoder(_fake_encode)
    assert direct.merged("k", ["x", "y"], lambda items: [i * 2 for i in items]) == ["xx", "yy"]
