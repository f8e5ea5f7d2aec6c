"""Mining: exact paths against brute force and sentence-transformers, faiss against exact, bitext, dedupe."""

from __future__ import annotations

import numpy as np
import pytest

from embedforge import mine
from embedforge.errors import InputError
from embedforge.mine import dedupe, knn, mine_bitext, paraphrase_mining, paraphrase_mining_embeddings


def unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)


def clustered(n: int, d: int, n_clusters: int, seed: int, dup_frac: float = 0.05) -> np.ndarray:
    """Seeded unit vectors around random centres, with planted near-duplicates."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((n_clusters, d)))
    x = centres[rng.integers(0, n_clusters, n)] + rng.standard_normal((n, d)) / np.sqrt(d)
    m = int(dup_frac * n)
    src, dst = rng.integers(0, n, m), rng.choice(n, m, replace=False)
    x[dst] = x[src] + 0.02 * rng.standard_normal((m, d)) / np.sqrt(d)
    return unit(x)


def brute_topk_pairs(x: np.ndarray, k: int) -> dict[tuple[int, int], float]:
    """All-pairs reference: the union of each row's k most similar other rows."""
    s = unit(x).astype(np.float64) @ unit(x).T.astype(np.float64)
    np.fill_diagonal(s, -np.inf)
    pairs: dict[tuple[int, int], float] = {}
    for i in range(len(x)):
        for j in np.argsort(-s[i])[:k]:
            pairs[(min(i, int(j)), max(i, int(j)))] = float(s[i, j])
    return pairs


def as_dict(i: np.ndarray, j: np.ndarray, s: np.ndarray) -> dict[tuple[int, int], float]:
    return {(a, b): c for a, b, c in zip(i.tolist(), j.tolist(), s.tolist(), strict=True)}


def check_contract(i: np.ndarray, j: np.ndarray, s: np.ndarray) -> None:
    assert i.dtype == np.int64 and j.dtype == np.int64 and s.dtype == np.float32
    assert (i < j).all()
    assert len(set(zip(i.tolist(), j.tolist(), strict=True))) == len(i)
    assert (np.diff(s) <= 0).all()


@pytest.mark.parametrize("k", [1, 5])
def test_topk_matches_brute_force(k: int) -> None:
    x = np.random.default_rng(1).standard_normal((300, 16)).astype(np.float32) * 3  # not normalised
    i, j, s = paraphrase_mining_embeddings(x, top_k=k, method="exact", chunk_size=37)
    check_contract(i, j, s)
    ref = brute_topk_pairs(x, k)
    got = as_dict(i, j, s)
    assert got.keys() == ref.keys()
    assert np.allclose([got[p] for p in ref], list(ref.values()), atol=1e-5)


def test_topk_matches_sentence_transformers() -> None:
    import torch
    from sentence_transformers.util import paraphrase_mining_embeddings as st_mining

    x = clustered(800, 24, 10, seed=2)
    ours = as_dict(*paraphrase_mining_embeddings(x, top_k=7, method="exact"))
    theirs = {(a, b): s for s, a, b in st_mining(torch.from_numpy(x), top_k=7, max_pairs=10**6)}
    assert ours.keys() == theirs.keys()
    assert np.allclose([ours[p] for p in theirs], list(theirs.values()), atol=1e-5)


def test_threshold_matches_brute_force_and_chunking() -> None:
    x = clustered(500, 16, 8, seed=3)
    xn = x.astype(np.float64)
    sims = xn @ xn.T
    a, b = np.nonzero(np.triu(sims >= 0.8, k=1))
    ref = {(int(p), int(q)): sims[p, q] for p, q in zip(a, b, strict=True)}
    for chunk in (None, 1, 64, 499, 1000):
        i, j, s = paraphrase_mining_embeddings(x, top_k=None, threshold=0.8, method="exact", chunk_size=chunk)
        check_contract(i, j, s)
        got = as_dict(i, j, s)
        assert got.keys() == ref.keys(), chunk
        assert np.allclose([got[p] for p in ref], list(ref.values()), atol=1e-5)


def test_topk_with_threshold_and_max_pairs() -> None:
    x = clustered(400, 16, 6, seed=4)
    all_i, all_j, all_s = paraphrase_mining_embeddings(x, top_k=5, method="exact")
    i, j, s = paraphrase_mining_embeddings(x, top_k=5, threshold=0.9, method="exact")
    keep = all_s >= 0.9
    assert as_dict(i, j, s) == as_dict(all_i[keep], all_j[keep], all_s[keep])
    i3, j3, s3 = paraphrase_mining_embeddings(x, top_k=5, max_pairs=25, method="exact")
    assert as_dict(i3, j3, s3) == as_dict(all_i[:25], all_j[:25], all_s[:25])


def test_faiss_recall_against_exact_on_clustered_data() -> None:
    pytest.importorskip("faiss")
    x = clustered(6000, 32, 40, seed=5)
    ei, ej, es = paraphrase_mining_embeddings(x, top_k=10, method="exact")
    fi, fj, fs = paraphrase_mining_embeddings(x, top_k=10, method="faiss")
    check_contract(fi, fj, fs)
    exact_top = set(zip(ei[:2000].tolist(), ej[:2000].tolist(), strict=True))
    found = set(zip(fi.tolist(), fj.tolist(), strict=True))
    assert len(exact_top & found) / len(exact_top) >= 0.95
    assert len(set(zip(ei.tolist(), ej.tolist(), strict=True)) & found) / len(ei) >= 0.95
    # the range search (threshold mode) too; approximate scores are exact inner products
    ti, tj, ts = paraphrase_mining_embeddings(x, top_k=None, threshold=0.9, method="exact")
    ri, rj, rs = paraphrase_mining_embeddings(x, top_k=None, threshold=0.9, method="faiss")
    ref, got = as_dict(ti, tj, ts), as_dict(ri, rj, rs)
    assert len(ref) > 100 and len(ref.keys() & got.keys()) / len(ref) >= 0.95
    assert all(abs(got[p] - ref[p]) < 1e-4 for p in ref.keys() & got.keys())


def test_auto_switches_to_faiss_above_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("faiss")
    calls: list[int] = []
    real = mine._faiss_ivf
    monkeypatch.setattr(mine, "_faiss_ivf", lambda xb: calls.append(len(xb)) or real(xb))
    x = clustered(300, 8, 4, seed=6)
    paraphrase_mining_embeddings(x, top_k=3)
    assert calls == []
    monkeypatch.setattr(mine, "EXACT_LIMIT", 100)
    paraphrase_mining_embeddings(x, top_k=3)
    assert calls == [300]


def test_knn_contract_padding_and_self_exclusion() -> None:
    x = np.ones((4, 3), dtype=np.float32)  # identical rows: self must still be excluded by index
    scores, ids = knn(x, x, 5, exclude_self=True, method="exact")
    assert scores.shape == ids.shape == (4, 5) and ids.dtype == np.int64
    for row in range(4):
        assert row not in ids[row, :3].tolist() and sorted(ids[row, :3].tolist()) == sorted(set(range(4)) - {row})
    assert (ids[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()


def test_small_and_bad_inputs() -> None:
    for n in (0, 1):
        i, j, s = paraphrase_mining_embeddings(np.zeros((n, 4), np.float32) + 1, top_k=3)
        assert len(i) == len(j) == len(s) == 0
    i, j, _ = paraphrase_mining_embeddings(np.eye(3, dtype=np.float32), top_k=10)
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == {(0, 1), (0, 2), (1, 2)}
    bad = [
        dict(emb=np.zeros(5), top_k=1),
        dict(emb=np.array([[1.0, np.nan], [0.0, 1.0]]), top_k=1),
        dict(emb=np.eye(3), top_k=0),
        dict(emb=np.eye(3), top_k=None, threshold=None),
        dict(emb=np.eye(3), top_k=None, threshold=1.5),
        dict(emb=np.eye(3), top_k=1, method="hnsw"),
    ]
    for kwargs in bad:
        emb = kwargs.pop("emb")
        with pytest.raises(InputError):
            paraphrase_mining_embeddings(emb, **kwargs)  # type: ignore[arg-type]


def _bitext_data(noise: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """300 sources; their noisy copies as targets in a known permuted order, plus 75 hub targets
    (each the normalised sum of 4 sources: close to several sources at once)."""
    rng = np.random.default_rng(seed)
    n, d = 300, 64
    src = unit(rng.standard_normal((n, d)))
    perm = rng.permutation(n)
    tgt = np.empty_like(src)
    tgt[perm] = unit(src + noise * rng.standard_normal((n, d)) / np.sqrt(d))
    hubs = unit(src[rng.permutation(n).reshape(-1, 4)].sum(axis=1))
    return src, np.vstack([tgt, hubs]), perm, n


def test_bitext_recovers_known_alignment_and_discounts_hubs() -> None:
    src, tgt, perm, n = _bitext_data()
    s, t, m = mine_bitext(src, tgt, k=4, margin="ratio")
    assert len(set(s.tolist())) == len(s) and len(set(t.tolist())) == len(t)  # one-to-one
    assert (np.diff(m) <= 0).all()
    assert (perm[s] == t).all() and len(s) == n  # every source to its translation, no hub
    s_abs, t_abs, _ = mine_bitext(src, tgt, k=4, margin="absolute")
    assert (t_abs >= n).sum() >= 5  # plain cosine falls for the hubs


def test_bitext_margin_matches_formula() -> None:
    src, tgt, _, _ = _bitext_data(noise=1.3, seed=1)
    k = 4
    cos = src.astype(np.float64) @ tgt.T.astype(np.float64)  # (n_src, n_tgt)
    r_src = np.sort(cos, axis=1)[:, -k:].mean(axis=1)
    r_tgt = np.sort(cos, axis=0)[-k:, :].mean(axis=0)
    for margin in ("ratio", "distance", "absolute"):
        s, t, m = mine_bitext(src, tgt, k=k, margin=margin)  # type: ignore[arg-type]
        denom = (r_src[s] + r_tgt[t]) / 2
        c = cos[s, t]
        expected = {"ratio": c / denom, "distance": c - denom, "absolute": c}[margin]
        assert np.allclose(m, expected, atol=1e-4), margin
    _, _, m_all = mine_bitext(src, tgt, k=k)
    _, _, m_thr = mine_bitext(src, tgt, k=k, threshold=1.1)
    assert len(m_thr) == (m_all >= 1.1).sum() and (m_thr >= 1.1).all()


def test_bitext_with_tiny_model_on_texts(tiny_model) -> None:  # type: ignore[no-untyped-def]
    from embedforge.mine import bitext_mining

    src = ["the cat sat on the mat", "stock markets fell sharply", "a recipe for lemon cake",
           "the train leaves at noon", "rain is expected tomorrow", "she plays the violin"]
    order = [3, 0, 5, 1, 4, 2]
    tgt = [src[o] for o in order]  # the same sentences shuffled: identical texts must pair up
    s, t, _ = bitext_mining(tiny_model, src, tgt, k=2)
    assert {(a, b) for a, b in zip(s.tolist(), t.tolist(), strict=True)} == {(o, p) for p, o in enumerate(order)}
    with pytest.raises(InputError):
        mine_bitext(np.eye(3), np.eye(4), k=2)


def test_dedupe_groups_are_connected_components() -> None:
    rng = np.random.default_rng(7)
    base = unit(rng.standard_normal((10, 32)))
    chain = unit(np.stack([base[0], unit(base[0] + 0.25 * base[1]), unit(base[0] + 0.5 * base[1])]))
    emb = np.vstack([base, chain])  # rows 10..12 chain from row 0; a ≈ b ≈ c but a vs c lower
    texts = [f"text {i}" for i in range(len(emb))]
    texts[5] = texts[2]  # an identical string merges whatever the embeddings say
    sims = emb @ emb.T
    threshold = 0.95
    assert sims[10, 12] < threshold <= min(sims[10, 11], sims[11, 12])  # transitivity is needed
    kept, groups = dedupe(texts, emb, threshold)
    # brute-force union-find reference
    parent = list(range(len(emb)))

    def find(a: int) -> int:
        while parent[a] != a:
            a = parent[a]
        return a

    for a in range(len(emb)):
        for b in range(a + 1, len(emb)):
            if sims[a, b] >= threshold or texts[a] == texts[b]:
                parent[find(b)] = find(a)
    ref: dict[int, list[int]] = {}
    for a in range(len(emb)):
        ref.setdefault(find(a), []).append(a)
    ref_groups = sorted((g for g in ref.values() if len(g) > 1), key=lambda g: g[0])
    assert groups == ref_groups
    assert [2, 5] in groups and [0, 10, 11, 12] in groups
    assert kept.tolist() == sorted(g[0] for g in ref.values())
    with pytest.raises(InputError):
        dedupe(texts[:-1], emb, threshold)


def test_paraphrase_mining_wrapper_equals_core(tiny_model) -> None:  # type: ignore[no-untyped-def]
    from embedforge.encode import encode

    texts = [f"sentence number {i} about {w}" for i, w in enumerate(["cats", "dogs", "tax", "rain", "tax", "cats"])]
    got = paraphrase_mining(tiny_model, texts, top_k=2)
    want = paraphrase_mining_embeddings(encode(tiny_model, texts), top_k=2)
    for a, b in zip(got, want, strict=True):
        assert np.allclose(a, b, atol=1e-6)
