"""A fused second stage (``--rerank-weights``): the re-rankers' scores are min-max fused with the
first stage's over the re-scored candidates instead of replacing it; checked against the formula
computed by hand, the two limits (all weight on one side), the CLI and the errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import build_tiny_bert

from embedforge.cli import main
from embedforge.errors import InputError
from embedforge.rerank.model import MANIFEST_NAME, rerank_candidates


class TableCE:
    """A stand-in scorer: a fixed score per document text (a different order from the first stage)."""

    def __init__(self, seed: int) -> None:
        self.rng_scores = np.random.default_rng(seed).normal(size=100) * 5

    def predict(self, pairs: list[tuple[str, str]], **kwargs: Any) -> np.ndarray:
        return np.array([self.rng_scores[int(d.split()[1])] for _, d in pairs], dtype=np.float32)


TEXTS = [f"doc {i}" for i in range(100)]


def first_stage(n_queries: int, n: int, seed: int = 0) -> list[list[tuple[int, float]]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_queries):
        rows = rng.permutation(len(TEXTS))[:n]
        scores = np.sort(rng.uniform(0.2, 0.9, size=n))[::-1]
        out.append([(int(r), float(s)) for r, s in zip(rows, scores, strict=True)])
    return out


def minmax(x: np.ndarray) -> np.ndarray:
    return (x - x.min()) / (x.max() - x.min())


def test_fused_order_is_the_weighted_sum_of_min_max_scores() -> None:
    a, b = TableCE(1), TableCE(2)
    queries = ["q1", "q2", "q3"]
    cands = first_stage(len(queries), 12)
    w = (0.5, 0.3, 0.2)
    out = rerank_candidates([a, b], queries, cands, TEXTS.__getitem__, depth=8, weights=w)
    for before, after in zip(cands, out, strict=True):
        rows = np.array([r for r, _ in before[:8]])
        first = np.array([s for _, s in before[:8]])
        expected = w[0] * minmax(first) + w[1] * minmax(a.rng_scores[rows]) + w[2] * minmax(b.rng_scores[rows])
        order = np.argsort(-expected, kind="stable")
        assert [r for r, _ in after[:8]] == rows[order].tolist()
        np.testing.assert_allclose([s for _, s in after[:8]], expected[order], rtol=1e-5)
        assert [r for r, _ in after[8:]] == [r for r, _ in before[8:]]  # below the depth: first-stage order
        scores = [s for _, s in after]
        assert all(x >= y for x, y in zip(scores, scores[1:], strict=False))


def test_all_weight_on_one_side_gives_that_side_s_order() -> None:
    ce = TableCE(3)
    queries = ["q1", "q2"]
    cands = first_stage(len(queries), 10, seed=4)
    kept = rerank_candidates(ce, queries, cands, TEXTS.__getitem__, depth=10, weights=(1.0, 0.0))
    assert [[r for r, _ in c] for c in kept] == [[r for r, _ in c] for c in cands]
    replaced = rerank_candidates(ce, queries, cands, TEXTS.__getitem__, depth=10)
    fused = rerank_candidates(ce, queries, cands, TEXTS.__getitem__, depth=10, weights=(0.0, 2.0))
    assert [[r for r, _ in c] for c in fused] == [[r for r, _ in c] for c in replaced]


@pytest.mark.parametrize(("scorers", "weights", "message"), [
    (2, None, "need fusion weights"),
    (1, (0.5,), "expected 2"),
    (2, (0.5, 0.5), "expected 3"),
    (1, (0.5, -0.1), ">= 0"),
    (1, (0.0, 0.0), "not all 0"),
    (1, (float("nan"), 1.0), "finite"),
])
def test_bad_fusion_weights_are_refused(scorers: int, weights: Any, message: str) -> None:
    with pytest.raises(InputError, match=message):
        rerank_candidates([TableCE(i) for i in range(scorers)], ["q"], first_stage(1, 5), TEXTS.__getitem__, depth=5,
                          weights=weights)


@pytest.fixture(scope="module")
def collection_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_model: Any) -> Path:
    from embedforge.collection import Collection

    path = tmp_path_factory.mktemp("fused-coll") / "docs"
    coll = Collection.create(path, str(tiny_model_dir), model=tiny_model, index_spec="exact")
    coll.add([{"id": f"d{i}", "text": t} for i, t in enumerate(
        ["cats purr softly", "rockets fly high", "bread rises slowly", "rivers flow down", "cats chase mice", "ovens bake bread"])])
    coll.save()
    return path


@pytest.fixture(scope="module")
def two_ces(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("fused-ces")
    first = build_tiny_bert(base / "a", num_labels=1, seed=7)
    second = build_tiny_bert(base / "b", num_labels=1, seed=8)
    (second / MANIFEST_NAME).write_text(json.dumps({"format": "embedforge-reranker/1", "recommended": False,
                                                     "recommended_reason": "lost to the cosine (-0.1)"}))
    return first, second


def test_cli_fuses_two_rerankers_like_the_library(collection_dir: Path, two_ces: tuple[Path, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from sentence_transformers import CrossEncoder

    from embedforge.collection import Collection

    a, b = two_ces
    run = tmp_path / "run.tsv"
    assert main(["search", "--collection", str(collection_dir), "--query", "cats and bread", "--mode", "hybrid", "--top-k", "6",
                 "--rerank", str(a), "--rerank", str(b), "--rerank-weights", "0.5,0.3,0.2", "--rerank-depth", "5",
                 "--output", str(run)]) == 0
    err = capsys.readouterr().err
    assert "is not recommended on its own (lost to the cosine (-0.1)); here it is fused with weight 0.2" in err
    got = [line.split("\t")[1] for line in run.read_text().splitlines()]
    coll = Collection.open(collection_dir)
    ces = [CrossEncoder(str(p), num_labels=1, device="cpu") for p in (a, b)]
    hits = coll.search(["cats and bread"], top_k=6, mode="hybrid", rerank=ces, rerank_top=5, rerank_weights=[0.5, 0.3, 0.2])[0]
    assert got == [h.id for h in hits]
    plain = coll.search(["cats and bread"], top_k=6, mode="hybrid")[0]
    assert {h.id for h in hits[:5]} == {h.id for h in plain[:5]} and hits[5].id == plain[5].id


@pytest.mark.parametrize(("extra", "message"), [
    (["--rerank-weights", "0.5,0.5"], "--rerank-weights needs --rerank"),
    (["--rerank", "A", "--rerank", "B"], "need --rerank-weights"),
    (["--rerank", "A", "--rerank-weights", "0.5"], "expected 2"),
    (["--rerank", "A", "--rerank-weights", "half,half"], "comma-separated numbers"),
])
def test_cli_refuses_bad_weights_before_loading_anything(collection_dir: Path, two_ces: tuple[Path, Path], extra: list[str],
                                                         message: str, capsys: pytest.CaptureFixture[str]) -> None:
    extra = [str(two_ces[0]) if x == "A" else str(two_ces[1]) if x == "B" else x for x in extra]
    assert main(["search", "--collection", str(collection_dir), "--query", "cats", *extra]) == 2
    assert message in capsys.readouterr().err


def test_served_search_fuses_like_the_library(collection_dir: Path, two_ces: tuple[Path, Path], tiny_model_dir: Path,
                                              tiny_model: Any) -> None:
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    from sentence_transformers import CrossEncoder

    from embedforge.collection import Collection
    from embedforge.serve import ServeConfig, create_app
    from embedforge.serve.server import running_server

    a = two_ces[0]
    query = ["cats and bread"]
    config = ServeConfig(model=str(tiny_model_dir), collection=str(collection_dir), reranker=str(a), rerank_weights=(0.6, 0.4))
    with running_server(create_app(config, model=tiny_model)) as url, httpx.Client(base_url=url, timeout=60) as client:
        fused = client.post("/v1/search", json={"query": query, "top_k": 6, "mode": "hybrid", "rerank": True})
        assert fused.status_code == 200, fused.text
        assert client.get("/health").json()["rerank_weights"] == [0.6, 0.4]
    coll = Collection.open(collection_dir)
    ce = CrossEncoder(str(a), num_labels=1, device="cpu")
    want = coll.search(query, top_k=6, mode="hybrid", model=tiny_model, rerank=ce, rerank_weights=[0.6, 0.4])[0]
    hits = fused.json()["data"][0]["hits"]
    assert [h["id"] for h in hits] == [h.id for h in want]
    assert [h["score"] for h in hits] == pytest.approx([h.score for h in want], abs=1e-5)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"rerank_weights": (0.5, 0.5)}, "needs a reranker"),
    ({"reranker": "ce", "rerank_weights": (0.5, -1.0)}, ">= 0"),
    ({"reranker": "ce", "rerank_weights": (0.5, 0.2, 0.3)}, "expected 2"),
])
def test_serve_config_refuses_bad_weights(kwargs: dict[str, Any], message: str) -> None:
    from embedforge.serve import ServeConfig

    with pytest.raises(InputError, match=message):
        ServeConfig(model="minilm", **kwargs)


@pytest.mark.parametrize(("extra", "message"), [
    (["--rerank-weights", "0.5,0.5"], "--rerank-weights needs --reranker"),
    (["--reranker", "A", "--rerank-weights", "0.5,0.3,0.2"], "expected 2"),
    (["--reranker", "A", "--rerank-weights", "half,half"], "comma-separated numbers"),
    (["--reranker", "B", "--rerank-weights", "0.8,0.2"], "--force-reranker"),  # fused or not, the guardrail holds
])
def test_serve_cli_checks_weights_before_starting(two_ces: tuple[Path, Path], extra: list[str], message: str,
                                                  monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("fastapi")
    import embedforge.serve.server as server

    started: list[Any] = []
    monkeypatch.setattr(server, "serve", lambda config, **kwargs: started.append(config))
    extra = [str(two_ces[0]) if x == "A" else str(two_ces[1]) if x == "B" else x for x in extra]
    assert main(["serve", "--model", "minilm", *extra]) == 2
    assert message in capsys.readouterr().err and not started
    assert main(["serve", "--model", "minilm", "--reranker", str(two_ces[0]), "--rerank-weights", "0.8,0.2"]) == 0
    assert started and started[0].rerank_weights == (0.8, 0.2)


def test_served_search_re_scores_exactly_the_configured_depth(collection_dir: Path, two_ces: tuple[Path, Path],
                                                              tiny_model_dir: Path, tiny_model: Any) -> None:
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    from sentence_transformers import CrossEncoder

    from embedforge.collection import Collection
    from embedforge.serve import ServeConfig, create_app
    from embedforge.serve.server import running_server

    a = two_ces[0]
    query = ["cats and bread"]
    config = ServeConfig(model=str(tiny_model_dir), collection=str(collection_dir), reranker=str(a), rerank_depth=2)
    with running_server(create_app(config, model=tiny_model)) as url, httpx.Client(base_url=url, timeout=60) as client:
        got = client.post("/v1/search", json={"query": query, "top_k": 6, "mode": "hybrid", "rerank": True})
        assert got.status_code == 200, got.text
    coll = Collection.open(collection_dir)
    ce = CrossEncoder(str(a), num_labels=1, device="cpu")
    want = coll.search(query, top_k=6, mode="hybrid", model=tiny_model, rerank=ce, rerank_top=2)[0]
    plain = coll.search(query, top_k=6, mode="hybrid", model=tiny_model)[0]
    ids = [h["id"] for h in got.json()["data"][0]["hits"]]
    assert ids == [h.id for h in want]
    assert set(ids[:2]) == {h.id for h in plain[:2]} and ids[2:] == [h.id for h in plain[2:]]  # only the top 2 move
    with pytest.raises(InputError, match="rerank_depth must be >= 1"):
        ServeConfig(model="minilm", reranker=str(a), rerank_depth=0)


def test_served_search_fuses_several_rerankers_like_the_library(collection_dir: Path, two_ces: tuple[Path, Path],
                                                                 tiny_model_dir: Path, tiny_model: Any) -> None:
    """``serve --reranker A --reranker B --rerank-weights W0,WA,WB``: /v1/search fuses all three as the library does;
    /v1/rerank (no first stage to fuse with) keeps scoring with the first re-ranker."""
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    from sentence_transformers import CrossEncoder

    from embedforge.collection import Collection
    from embedforge.rerank.model import pair_scores
    from embedforge.serve import ServeConfig, create_app
    from embedforge.serve.server import running_server

    a, b = two_ces
    query = ["cats and bread"]
    config = ServeConfig(model=str(tiny_model_dir), collection=str(collection_dir), reranker=str(a), more_rerankers=(str(b),),
                         rerank_weights=(0.5, 0.3, 0.2), rerank_depth=5)
    docs = ["cats", "bread and butter", "a dog"]
    with running_server(create_app(config, model=tiny_model)) as url, httpx.Client(base_url=url, timeout=60) as client:
        fused = client.post("/v1/search", json={"query": query, "top_k": 6, "mode": "hybrid", "rerank": True})
        assert fused.status_code == 200, fused.text
        health = client.get("/health").json()
        reranked = client.post("/v1/rerank", json={"query": query[0], "documents": docs}).json()
    assert health["reranker"] == a.name and health["more_rerankers"] == [b.name] and health["rerank_weights"] == [0.5, 0.3, 0.2]
    coll = Collection.open(collection_dir)
    ces = [CrossEncoder(str(p), num_labels=1, device="cpu") for p in (a, b)]
    want = coll.search(query, top_k=6, mode="hybrid", model=tiny_model, rerank=ces, rerank_top=5, rerank_weights=[0.5, 0.3, 0.2])[0]
    hits = fused.json()["data"][0]["hits"]
    assert [h["id"] for h in hits] == [h.id for h in want]
    assert [h["score"] for h in hits] == pytest.approx([h.score for h in want], abs=1e-5)
    only_a = pair_scores(ces[0], [(query[0], d) for d in docs])
    assert {r["index"]: r["relevance_score"] for r in reranked["results"]} == pytest.approx(dict(enumerate(only_a.tolist())), abs=1e-5)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"more_rerankers": ("b",), "rerank_weights": (0.5, 0.3, 0.2)}, "need a reranker first"),
    ({"reranker": "a", "more_rerankers": ("b",)}, "2 re-rankers need fusion weights"),
    ({"reranker": "a", "more_rerankers": ("b",), "rerank_weights": (0.5, 0.5)}, "expected 3"),
    ({"reranker": "a", "more_rerankers": ("",), "rerank_weights": (0.5, 0.3, 0.2)}, "must not be empty"),
])
def test_serve_config_refuses_bad_extra_rerankers(kwargs: dict[str, Any], message: str) -> None:
    from embedforge.serve import ServeConfig

    with pytest.raises(InputError, match=message):
        ServeConfig(model="minilm", **kwargs)


def test_serve_cli_takes_several_rerankers_and_the_guardrail_holds_for_each(
        two_ces: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("fastapi")
    import embedforge.serve.server as server

    started: list[Any] = []
    monkeypatch.setattr(server, "serve", lambda config, **kwargs: started.append(config))
    a, b = (str(p) for p in two_ces)
    assert main(["serve", "--model", "minilm", "--reranker", a, "--reranker", b]) == 2
    assert "2 --reranker need --rerank-weights" in capsys.readouterr().err
    both = ["serve", "--model", "minilm", "--reranker", a, "--reranker", b, "--rerank-weights", "0.5,0.3,0.2"]
    assert main(both) == 2  # B, the second, was saved as not recommended
    assert "--force-reranker" in capsys.readouterr().err and not started
    assert main([*both, "--force-reranker"]) == 0
    assert started[0].reranker == a and started[0].more_rerankers == (b,) and started[0].rerank_weights == (0.5, 0.3, 0.2)
