"""Rocchio feedback (``prf``) as a second stage: the re-scored order equals the formula computed by
hand from the first stage's own candidates and the collection's stored vectors, it fuses like any
re-ranker, it is reachable by name from search, the CLI and serve, and every misuse (a bad name,
/v1/rerank, no collection, --rerank-vectors) is refused with a clear message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedforge.cli import main
from embedforge.errors import InputError
from embedforge.rerank.feedback import RocchioFeedback, parse_feedback, rocchio_queries
from embedforge.rerank.model import load_bi_encoder_reranker, load_cross_encoder

DOCS = [{"id": f"d{i}", "text": t, "metadata": {"even": i % 2 == 0}} for i, t in enumerate([
    "cats purr softly", "rockets fly high", "bread rises slowly", "rivers flow down", "cats chase mice", "ovens bake bread",
    "mice hide from cats", "the river meets the sea",
])]
QUERIES = ["cats and mice", "bread in the oven", "where rivers go", "cats and mice"]  # a repeated query


@pytest.fixture(scope="module")
def coll(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_model: Any) -> Any:
    from embedforge.collection import Collection

    c = Collection.create(tmp_path_factory.mktemp("prf") / "docs", str(tiny_model_dir), model=tiny_model, index_spec="exact")
    c.add(DOCS)
    c.save()
    return Collection.open(c.path)


def reference(coll: Any, model: Any, mode: str, depth: int, k: int, beta: float,
              where: dict[str, Any] | None = None) -> list[list[tuple[str, float]]]:
    """The first stage, then by hand: q' = unit(q + beta * mean of its first k candidates' stored vectors), cosine."""
    first = coll.search(QUERIES, top_k=len(DOCS), mode=mode, model=model, where=where)
    qvec = coll.encode_queries(QUERIES, model)
    vectors = coll.vectors()
    rows = {h: i for i, h in enumerate(d["id"] for d in DOCS)}
    out = []
    for q, hits in zip(qvec, first, strict=True):
        top = [rows[h.id] for h in hits[:depth]]
        fb = q + beta * vectors[top[:k]].mean(axis=0)
        fb /= np.linalg.norm(fb)
        scores = vectors[top] @ fb
        order = np.argsort(-scores, kind="stable")
        out.append([(DOCS[top[j]]["id"], float(scores[j])) for j in order] + [(h.id, np.nan) for h in hits[depth:]])
    return out


@pytest.mark.parametrize(("mode", "depth", "k", "beta", "where"), [
    ("dense", 8, 1, 0.5, None), ("hybrid", 5, 3, 1.0, None), ("bm25", 6, 2, 2.0, None), ("hybrid", 3, 2, 0.5, {"even": True}),
])
def test_feedback_scores_are_rocchio_by_hand(coll: Any, tiny_model: Any, mode: str, depth: int, k: int, beta: float,
                                             where: dict[str, Any] | None) -> None:
    want = reference(coll, tiny_model, mode, depth, k, beta, where)
    got = coll.search(QUERIES, top_k=len(DOCS), mode=mode, model=tiny_model, rerank=RocchioFeedback(k, beta), rerank_top=depth,
                      where=where)
    for w, g in zip(want, got, strict=True):
        assert [h.id for h in g] == [i for i, _ in w]  # the re-scored top, then the first stage's order below it
        np.testing.assert_allclose([h.score for h in g[:depth]], [s for _, s in w[:depth]], atol=1e-5)
        assert all(h.score < g[depth - 1].score for h in g[depth:])
    assert [h.id for h in got[0]] == [h.id for h in got[3]]  # the same query twice: the same answer


def test_beta_zero_is_the_dense_first_stage(coll: Any, tiny_model: Any) -> None:
    dense = coll.search(QUERIES, top_k=len(DOCS), mode="dense", model=tiny_model)
    got = coll.search(QUERIES, top_k=len(DOCS), mode="dense", model=tiny_model, rerank=RocchioFeedback(3, 0.0), rerank_top=len(DOCS))
    for d, g in zip(dense, got, strict=True):
        assert [h.id for h in g] == [h.id for h in d]
        np.testing.assert_allclose([h.score for h in g], [h.score for h in d], atol=1e-5)


def test_fused_with_the_first_stage_by_name(coll: Any, tiny_model: Any) -> None:
    from embedforge.fusion import score_fuse

    first = coll.search(QUERIES[:1], top_k=len(DOCS), mode="hybrid", model=tiny_model)[0]
    alone = coll.search(QUERIES[:1], top_k=len(DOCS), mode="hybrid", model=tiny_model, rerank="prf", rerank_top=6)[0]
    fused = coll.search(QUERIES[:1], top_k=len(DOCS), mode="hybrid", model=tiny_model, rerank="prf", rerank_top=6,
                        rerank_weights=[0.7, 0.3])[0]
    by_id = {h.id: h.score for h in alone[:6]}
    runs = [{h.id: h.score for h in first[:6]}, {h.id: by_id[h.id] for h in first[:6]}]
    want = score_fuse(runs, [0.7, 0.3])
    assert [h.id for h in fused[:6]] == sorted(want, key=lambda i: -want[i])
    np.testing.assert_allclose([h.score for h in fused[:6]], sorted(want.values(), reverse=True), atol=1e-6)


def test_fused_with_a_model_re_ranker_in_one_list(coll: Any, tiny_model: Any, tiny_model_dir: Path) -> None:
    """prf beside an embedding-model re-ranker: each scores its own way, then the three are fused."""
    from embedforge.fusion import score_fuse

    model_ranker = load_cross_encoder(str(tiny_model_dir))
    first = coll.search(QUERIES[:2], top_k=len(DOCS), mode="hybrid", model=tiny_model)
    prf = coll.search(QUERIES[:2], top_k=len(DOCS), mode="hybrid", model=tiny_model, rerank="prf", rerank_top=6)
    cos = coll.search(QUERIES[:2], top_k=len(DOCS), mode="hybrid", model=tiny_model, rerank=model_ranker, rerank_top=6)
    both = coll.search(QUERIES[:2], top_k=len(DOCS), mode="hybrid", model=tiny_model, rerank=["prf", model_ranker], rerank_top=6,
                       rerank_weights=[0.5, 0.3, 0.2])
    for f, p, c, b in zip(first, prf, cos, both, strict=True):
        top = [h.id for h in f[:6]]
        runs = [{h.id: h.score for h in f[:6]}, {h.id: h.score for h in p[:6]}, {h.id: h.score for h in c[:6]}]
        want = score_fuse(runs, [0.5, 0.3, 0.2])
        assert sorted(want) == sorted(top)
        assert [h.id for h in b[:6]] == sorted(want, key=lambda i: -want[i])


def test_depth_below_k_is_refused(coll: Any, tiny_model: Any) -> None:
    with pytest.raises(InputError, match="must be at least 3"):
        coll.search(QUERIES[:1], top_k=5, mode="dense", model=tiny_model, rerank="prf:3,0.5", rerank_top=2)


def test_rocchio_queries_are_unit_and_follow_the_formula() -> None:
    q = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])  # a non-unit query is made unit first
    docs = [np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 3.0]]), np.zeros((0, 3))]
    got = rocchio_queries(q, docs, 0.5)
    want = np.array([1.0, 0.25, 0.25])
    np.testing.assert_allclose(got[0], want / np.linalg.norm(want), atol=1e-6)
    np.testing.assert_allclose(got[1], [0.0, 1.0, 0.0], atol=1e-6)  # no feedback: the query itself


def test_names_parse_and_bad_ones_say_what_is_expected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (parse_feedback("prf").k, parse_feedback("prf").beta) == (1, 0.5)  # type: ignore[union-attr]
    fb = parse_feedback("prf:3,1.5")
    assert fb is not None and (fb.k, fb.beta, fb.name) == (3, 1.5, "prf:3,1.5")
    assert parse_feedback("prefix") is None and parse_feedback("models/prf") is None
    assert isinstance(load_cross_encoder("prf:2,0.25"), RocchioFeedback)
    for bad, message in (("prf:x", "prf:K,BETA"), ("prf:1", "prf:K,BETA"), ("prf:0,1", "positive integer"),
                         ("prf:1.5,1", "positive integer"), ("prf:inf,1", "positive integer"), ("prf:2,-1", ">= 0"),
                         ("prf:2,nan", ">= 0")):
        with pytest.raises(InputError, match=message.replace("+", r"\+")):
            parse_feedback(bad)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prf").mkdir()  # a folder of that name is a model folder, not this
    assert parse_feedback("prf") is None


def test_it_scores_no_free_pairs_and_stores_nothing() -> None:
    with pytest.raises(InputError, match="cannot score free"):
        RocchioFeedback().predict([("q", "d")])
    with pytest.raises(InputError, match="nothing to store"):
        load_bi_encoder_reranker("prf")


def test_cli_search_with_prf(coll: Any, tiny_model: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "--collection", str(coll.path), "--query", QUERIES[0], "--mode", "hybrid", "--rerank", "prf",
                 "--rerank-weights", "0.7,0.3", "--top-k", "3"]) == 0
    out = capsys.readouterr()
    want = coll.search(QUERIES[:1], top_k=3, mode="hybrid", model=tiny_model, rerank="prf", rerank_weights=[0.7, 0.3])[0]
    positions = [out.out.find(h.id) for h in want]
    assert -1 not in positions and positions == sorted(positions), out.out
    assert "not recommended" not in out.err
    assert main(["search", "--collection", str(coll.path), "--query", "x", "--rerank", "prf:0,1"]) == 2
    assert "positive integer" in capsys.readouterr().err
    assert main(["search", "--collection", str(coll.path), "--query", "x", "--rerank", "prf", "--rerank-max-length", "64"]) == 2
    assert "prf reads no text" in capsys.readouterr().err


def test_serve_uses_it_for_search_and_refuses_it_elsewhere(coll: Any, tiny_model_dir: Path, tiny_model: Any) -> None:
    pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    from embedforge.serve import ServeConfig, create_app
    from embedforge.serve.server import running_server

    with pytest.raises(InputError, match="needs a collection"):
        ServeConfig(model=str(tiny_model_dir), reranker="prf")
    with pytest.raises(InputError, match="prf reads no text"):
        ServeConfig(model=str(tiny_model_dir), collection=str(coll.path), reranker="prf", rerank_max_length=64)
    config = ServeConfig(model=str(tiny_model_dir), collection=str(coll.path), reranker="prf", rerank_weights=(0.7, 0.3))
    with running_server(create_app(config, model=tiny_model)) as url, httpx.Client(base_url=url, timeout=60) as client:
        r = client.post("/v1/search", json={"query": QUERIES[:2], "top_k": 4, "mode": "hybrid", "rerank": True})
        assert r.status_code == 200, r.text
        refused = client.post("/v1/rerank", json={"query": "cats", "documents": ["a", "b"]})
        assert refused.status_code == 400 and "free documents" in refused.text
    want = coll.search(QUERIES[:2], top_k=4, mode="hybrid", model=tiny_model, rerank="prf", rerank_weights=[0.7, 0.3])
    for got, w in zip(r.json()["data"], want, strict=True):
        assert [h["id"] for h in got["hits"]] == [h.id for h in w]
        assert [h["score"] for h in got["hits"]] == pytest.approx([h.score for h in w], abs=1e-5)


def test_serve_cli_takes_prf_by_name(coll: Any, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("fastapi")
    import embedforge.serve.server as server

    started: list[Any] = []
    monkeypatch.setattr(server, "serve", lambda config, **kw: started.append(config))
    assert main(["serve", "--model", str(tiny_model_dir), "--collection", str(coll.path), "--reranker", "prf"]) == 0
    assert started and started[0].reranker == "prf"
    assert main(["serve", "--model", str(tiny_model_dir), "--reranker", "prf"]) == 2  # no collection: refused before starting
