"""Issue 16: token-budget batching, length sorting, the bounded queue (503 + Retry-After), several workers, thread defaults."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from embedforge.encode import encode  # noqa: E402
from embedforge.serve import ServeConfig, create_app  # noqa: E402
from embedforge.serve.batcher import MicroBatcher, QueueFull  # noqa: E402
from embedforge.serve.config import default_torch_threads, default_workers  # noqa: E402
from embedforge.serve.passes import joined, plan_passes  # noqa: E402
from embedforge.serve.pool import ReplicaPool, replicate  # noqa: E402
from embedforge.serve.server import running_server  # noqa: E402

TEXTS = [
    "The cat sat on the mat.",
    "Stock markets fell sharply on Monday, and again on Tuesday after the central bank spoke.",
    "x",
    "Neural networks learn representations of text. " * 12,  # long: its own pass under a small budget
    "A recipe for lemon cake with poppy seeds.",
]


def _fake_encode(texts: list[str]) -> np.ndarray:
    return np.array([[len(t), sum(map(ord, t)) % 997] for t in texts], dtype=np.float32).reshape(-1, 2)


class _Gate:
    """An encode function whose first call blocks until released; records every call's texts."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        if len(self.calls) == 1:
            self.entered.set()
            assert self.release.wait(10)
        return _fake_encode(texts)


# ---- passes ----


def test_plan_passes_keeps_the_budget_and_sorts_by_length() -> None:
    assert plan_passes([5, 3, 9], max_texts=4, max_tokens=100) == [[0, 1, 2]]  # fits: one pass, own order
    tokens = [10, 200, 12, 11, 190, 9]
    passes = plan_passes(tokens, max_texts=64, max_tokens=399)
    assert sorted(i for p in passes for i in p) == list(range(len(tokens)))
    for p in passes:
        assert len(p) * max(tokens[i] for i in p) <= 399 or len(p) == 1
    assert passes[0] == [5, 0, 3, 2]  # the short ones together, shortest first
    assert [1] in passes and [4] in passes  # each long one alone: two of them would be 2 x 200 > 399
    assert plan_passes([1000], max_texts=8, max_tokens=10) == [[0]]  # too long for any pass: alone


def test_joined_puts_rows_back_and_cancelling_it_cancels_the_pieces() -> None:
    from concurrent.futures import Future

    pieces: list[Future[np.ndarray]] = [Future(), Future()]
    whole = joined(pieces, [[2, 0], [1]], 3)
    pieces[1].set_result(np.array([[1.0]], dtype=np.float32))
    assert not whole.done()
    pieces[0].set_result(np.array([[2.0], [0.0]], dtype=np.float32))
    np.testing.assert_array_equal(whole.result(1), [[0.0], [1.0], [2.0]])
    waiting: list[Future[np.ndarray]] = [Future(), Future()]
    timed_out = joined(waiting, [[0], [1]], 2)
    assert timed_out.cancel()
    assert all(p.cancelled() for p in waiting)


# ---- the batcher ----


def test_token_budget_keeps_long_texts_out_of_the_short_ones_pass() -> None:
    gate = _Gate()
    batcher = MicroBatcher(gate, max_batch_size=64, max_batch_tokens=512, max_wait_ms=0)
    shorts = [[f"short {i}"] for i in range(6)]
    longs = [[f"LONG {i}"] for i in range(3)]
    try:
        first = batcher.submit(["warm-up"], tokens=[5])
        assert gate.entered.wait(10)
        # arrival order: short, long, short, long, ... (the old batcher put all nine in one padded pass)
        futures = []
        for i in range(6):
            futures.append((shorts[i], batcher.submit(shorts[i], tokens=[12])))
            if i < 3:
                futures.append((longs[i], batcher.submit(longs[i], tokens=[200])))
        gate.release.set()
        first.result(10)
        for texts, future in futures:
            np.testing.assert_array_equal(future.result(10), _fake_encode(texts))
    finally:
        batcher.close()
    passes = [sorted(call) for call in gate.calls[1:]]
    assert passes[0] == sorted(t[0] for t in shorts)  # the oldest (short) request and every other short one
    assert passes[1] == ["LONG 0", "LONG 1"]  # 2 x 200 tokens fit 512; a third would not
    assert passes[2] == ["LONG 2"]


def test_a_pass_is_sorted_by_length_and_rows_come_back_in_request_order() -> None:
    gate = _Gate()
    batcher = MicroBatcher(gate, max_batch_size=64, max_batch_tokens=10_000, max_wait_ms=0)
    try:
        first = batcher.submit(["w"], tokens=[3])
        assert gate.entered.wait(10)
        a = batcher.submit(["aa", "aaaaaa"], tokens=[4, 8])
        b = batcher.submit(["bbbbb", "b"], tokens=[7, 3])
        gate.release.set()
        first.result(10)
        np.testing.assert_array_equal(a.result(10), _fake_encode(["aa", "aaaaaa"]))
        np.testing.assert_array_equal(b.result(10), _fake_encode(["bbbbb", "b"]))
    finally:
        batcher.close()
    assert gate.calls[1] == ["aaaaaa", "bbbbb", "aa", "b"]  # longest first, as sentence-transformers sorts


def test_a_full_queue_raises_queue_full_and_a_lone_large_request_is_still_taken() -> None:
    gate = _Gate()
    batcher = MicroBatcher(gate, max_batch_size=8, max_queue=10, max_wait_ms=0)
    try:
        running = batcher.submit(["running"])  # taken by the worker: no longer queued
        assert gate.entered.wait(10)
        queued = [batcher.submit([f"q{i}", f"r{i}"]) for i in range(5)]  # 10 texts wait
        assert batcher.load >= 10
        with pytest.raises(QueueFull) as info:
            batcher.submit(["one too many"])
        assert info.value.queued == 10 and 1 <= info.value.retry_after_s <= 60
        with pytest.raises(QueueFull):
            batcher.merged("k", ["q"], lambda items: items)
        gate.release.set()
        running.result(10)
        for future in queued:
            future.result(10)
        big = batcher.embed([f"t{i}" for i in range(25)], timeout=10)  # more than max_queue, but nothing waits
        assert big.shape == (25, 2)
    finally:
        batcher.close()


def test_the_wait_ends_once_the_last_pass_clients_are_back() -> None:
    gate = _Gate()
    entered_at: list[float] = []

    def slow(texts: list[str]) -> np.ndarray:  # a pass takes 1 s, so the wait may last up to max_wait_ms = 1 s
        entered_at.append(time.monotonic())
        out = gate(texts)
        if len(gate.calls) > 1:
            time.sleep(1.0)
        return out

    batcher = MicroBatcher(slow, max_batch_size=64, max_wait_ms=1000)
    try:
        first = batcher.submit(["x"])
        assert gate.entered.wait(10)
        shared = [batcher.submit(["y"]), batcher.submit(["z"])]
        gate.release.set()
        for future in [first, *shared]:
            future.result(10)
        assert len(gate.calls[-1]) == 2  # the last pass merged two requests
        sent = time.monotonic()
        with ThreadPoolExecutor(2) as pool:  # two clients come back: no need to wait for a third
            list(pool.map(lambda t: batcher.embed([t], timeout=10), ["again 1", "again 2"]))
        assert len(gate.calls[-1]) == 2 and entered_at[-1] - sent < 0.5
    finally:
        batcher.close()


# ---- workers ----


def test_replicas_share_the_weights_but_not_the_tokenizer(tiny_model: Any) -> None:
    copy = replicate(tiny_model)
    for a, b in zip(tiny_model.parameters(), copy.parameters(), strict=True):
        assert a.data_ptr() == b.data_ptr()
    assert copy.tokenizer is not tiny_model.tokenizer
    np.testing.assert_allclose(encode(copy, TEXTS), encode(tiny_model, TEXTS), atol=1e-6)


def test_a_pool_spreads_concurrent_requests_over_its_workers() -> None:
    seen: dict[str, int] = {}
    lock = threading.Lock()

    def slow(texts: list[str]) -> np.ndarray:
        with lock:
            name = threading.current_thread().name
            seen[name] = seen.get(name, 0) + 1
        time.sleep(0.02)
        return _fake_encode(texts)

    pool = ReplicaPool([MicroBatcher(slow, name=f"w{k}", max_wait_ms=1) for k in range(3)])
    requests = [[f"request {i}", "x" * i] for i in range(60)]
    try:
        with ThreadPoolExecutor(24) as threads:
            results = list(threads.map(lambda t: pool.embed(t, timeout=10), requests))
        assert pool.call(lambda: threading.current_thread().name) == "w0"
    finally:
        pool.close()
    for texts, got in zip(requests, results, strict=True):
        np.testing.assert_array_equal(got, _fake_encode(texts))
    assert len(seen) >= 2, seen


def test_default_threads_leave_a_core_and_are_shared_by_workers() -> None:
    assert default_torch_threads(1, cores=2) == 1
    assert default_torch_threads(1, cores=1) == 1
    assert default_torch_threads(1, cores=4) == 3
    assert default_torch_threads(1, cores=64) == 4
    assert default_torch_threads(4, cores=16) == 3
    assert default_torch_threads(8, cores=8) == 1
    assert ServeConfig(torch_threads=0).threads_per_worker() is None  # torch's own choice
    assert ServeConfig(torch_threads=3).threads_per_worker() == 3
    assert ServeConfig(workers=2).threads_per_worker() == default_torch_threads(2)


def test_default_workers_are_one_per_core_up_to_four() -> None:
    assert [default_workers(cores=n) for n in (1, 2, 3, 4, 16)] == [1, 2, 3, 4, 4]
    assert ServeConfig().workers == default_workers()  # what `embedforge serve` starts with no flags
    assert ServeConfig(workers=1).workers == 1
    assert ServeConfig().threads_per_worker() == default_torch_threads(default_workers())


# ---- over HTTP ----


@pytest.fixture(scope="module")
def two_workers(tiny_model: Any, tiny_model_dir: Path) -> Iterator[str]:
    config = ServeConfig(model=str(tiny_model_dir), workers=2, max_batch_tokens=256, max_wait_ms=10)
    with running_server(create_app(config, model=tiny_model)) as url:
        yield url


def test_openai_client_against_two_workers_and_a_small_budget(two_workers: str, tiny_model: Any, tiny_model_dir: Path) -> None:
    """The openai-client check of test_serve_api, against --workers 2 with long texts split into passes."""
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{two_workers}/v1", api_key="unused", max_retries=0, timeout=60)
    expected = encode(tiny_model, TEXTS)
    response = client.embeddings.create(model=tiny_model_dir.name, input=TEXTS, encoding_format="float")
    got = np.array([item.embedding for item in sorted(response.data, key=lambda d: d.index)], dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-5)

    def one(i: int) -> np.ndarray:
        text = TEXTS[i % len(TEXTS)] + f" ({i})"
        r = client.embeddings.create(model=tiny_model_dir.name, input=[text, "short"], encoding_format="float")
        return np.array([item.embedding for item in r.data], dtype=np.float32)

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(one, range(36)))
    for i, got_i in enumerate(results):
        np.testing.assert_allclose(got_i, encode(tiny_model, [TEXTS[i % len(TEXTS)] + f" ({i})", "short"]), atol=1e-5)


def test_a_full_queue_is_a_503_with_retry_after(tiny_model: Any, tiny_model_dir: Path) -> None:
    config = ServeConfig(model=str(tiny_model_dir), max_queue=4, max_wait_ms=0, workers=1)  # one worker to block
    app = create_app(config, model=tiny_model)
    release = threading.Event()
    with running_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        service = app.state.service
        blocker = threading.Thread(target=lambda: service.encoder.call(lambda: release.wait(20)))
        blocker.start()  # the worker is busy: what follows queues up
        try:
            with ThreadPoolExecutor(2) as pool:
                body = {"model": tiny_model_dir.name, "input": ["one", "two"]}
                waiting = [pool.submit(client.post, "/v1/embeddings", json=body) for _ in range(2)]  # 4 texts queue
                deadline = time.monotonic() + 10
                while service.encoder.load < 4 and time.monotonic() < deadline:
                    time.sleep(0.01)
                metrics = client.get("/metrics").text
                assert "embedforge_queued_texts 4.0" in metrics
                refused = client.post("/v1/embeddings", json={"model": tiny_model_dir.name, "input": "three"})
                assert refused.status_code == 503
                assert int(refused.headers["retry-after"]) >= 1
                error = refused.json()["error"]
                assert error["code"] == "overloaded" and error["type"] == "server_error" and "retry" in error["message"]
                release.set()
                for future in waiting:
                    assert future.result(30).status_code == 200
        finally:
            release.set()
            blocker.join(10)
        again = client.post("/v1/embeddings", json={"model": tiny_model_dir.name, "input": "three"})
        assert again.status_code == 200


def test_a_request_that_waits_too_long_is_a_503_timeout_and_leaves_the_queue(tiny_model: Any, tiny_model_dir: Path) -> None:
    config = ServeConfig(model=str(tiny_model_dir), request_timeout_s=0.3, max_wait_ms=0, workers=1)  # one worker to block
    app = create_app(config, model=tiny_model)
    release = threading.Event()
    with running_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        service = app.state.service
        blocker = threading.Thread(target=lambda: service.encoder.call(lambda: release.wait(20)))
        blocker.start()
        try:
            late = client.post("/v1/embeddings", json={"model": tiny_model_dir.name, "input": ["a", "b"]})
            assert late.status_code == 503 and late.json()["error"]["code"] == "timeout"
        finally:
            release.set()
            blocker.join(10)
        ok = client.post("/v1/embeddings", json={"model": tiny_model_dir.name, "input": TEXTS})
        assert ok.status_code == 200
        np.testing.assert_allclose(
            np.array([d["embedding"] for d in ok.json()["data"]], dtype=np.float32), encode(tiny_model, TEXTS), atol=1e-5
        )
        assert service.encoder.load == 0


def test_cli_flags_reach_the_config() -> None:
    from embedforge.cli import build_parser
    from embedforge.cli.serve import config_from_args

    args = build_parser().parse_args(
        ["serve", "--model", "m", "--workers", "3", "--max-batch-tokens", "1000", "--max-queue", "10", "--torch-threads", "0"]
    )
    config = config_from_args(args)
    assert (config.workers, config.max_batch_tokens, config.max_queue, config.torch_threads) == (3, 1000, 10, 0)
    assert config.threads_per_worker() is None
    default = config_from_args(build_parser().parse_args(["serve", "--model", "m"]))
    assert default.torch_threads is None and default.threads_per_worker() == default_torch_threads(default_workers())
    assert (default.workers, default.device, default.precision) == (default_workers(), "auto", "auto")


def test_two_workers_serve_an_onnx_int8_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A compressed model (``embedforge compress --quantize onnx-int8``): each replica runs the ONNX file."""
    pytest.importorskip("onnxruntime")
    compress_module = pytest.importorskip("embedforge.compress")
    from embedforge.models import load_model

    out = tmp_path / "int8"
    words = ("river", "robot", "castle", "garden", "engine", "winter", "forest")
    texts = [f"the {a} near the {b}" for a in words for b in words]  # 49 distinct
    compress_module.compress(str(tiny_model_dir), "texts", out, compress_module.CompressConfig(quantize="onnx-int8"), texts=texts)
    model = load_model(out)
    assert getattr(model, "onnx_file", None)  # the fast backend, not PyTorch
    expected = encode(model, TEXTS)
    config = ServeConfig(model=str(out), workers=2, max_batch_tokens=128)
    with running_server(create_app(config, model=model)) as url, httpx.Client(base_url=url, timeout=60) as client:

        def one(i: int) -> np.ndarray:
            r = client.post("/v1/embeddings", json={"model": "int8", "input": [TEXTS[i % len(TEXTS)]]})
            assert r.status_code == 200, r.text
            return np.array(r.json()["data"][0]["embedding"], dtype=np.float32)

        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(one, range(20)))
    for i, vector in enumerate(got):
        # int8 dynamic quantisation scales by batch: the same text in another batch differs in the 4th decimal
        np.testing.assert_allclose(vector, expected[i % len(TEXTS)], atol=1e-3)


def test_random_requests_with_timeouts_all_get_their_own_rows_and_the_queue_empties() -> None:
    """Seeded stress: random sizes and lengths, a small budget (so big requests split), some requests given up on."""
    import random

    def slowish(texts: list[str]) -> np.ndarray:
        time.sleep(0.001 * len(texts) ** 0.5)
        return _fake_encode(texts)

    batchers = [MicroBatcher(slowish, max_batch_size=16, max_batch_tokens=300, max_wait_ms=2, name=f"s{k}") for k in range(2)]
    pool = ReplicaPool(batchers)
    rng = random.Random(0)
    requests = []
    for i in range(120):
        n = rng.choice([1, 1, 2, 5, 40])
        texts = [f"r{i}t{j}" + "w" * rng.randint(0, 60) for j in range(n)]
        requests.append((texts, [len(t) // 3 + 2 for t in texts], rng.random() < 0.1))

    def send(request: tuple[list[str], list[int], bool]) -> bool:
        texts, tokens, impatient = request
        try:
            got = pool.embed(texts, timeout=0.0005 if impatient else 30, tokens=tokens)
        except TimeoutError:
            return impatient
        np.testing.assert_array_equal(got, _fake_encode(texts))
        return True

    try:
        with ThreadPoolExecutor(16) as threads:
            assert all(threads.map(send, requests))
        deadline = time.monotonic() + 10
        while any(b.load for b in batchers) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [b.load for b in batchers] == [0, 0]
    finally:
        pool.close()
