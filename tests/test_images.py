"""Image collections with tiny random CLIP models: loading both layouts, indexing, the three searches, bad input."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA_DIR

PIL = pytest.importorskip("PIL")

from PIL import Image  # noqa: E402

from embedforge.collection import Collection  # noqa: E402
from embedforge.errors import InputError  # noqa: E402
from embedforge.images import (  # noqa: E402
    ImageIndexConfig,
    encode_images,
    index_images,
    load_image_model,
    open_image,
    search_by_image,
)

PHOTOS = DATA_DIR / "images" / "images"


def build_tiny_clip(path: Path, *, layout: str = "plain", seed: int = 0) -> Path:
    """A random transformers CLIPModel (16-dim shared space) with a byte-level CLIP tokenizer and a
    PIL image processor; ``layout="st"`` wraps it as sentence-transformers' CLIP layout
    (``modules.json`` -> ``0_CLIPModel/``, like sentence-transformers/clip-ViT-B-32)."""
    import torch
    from tokenizers import pre_tokenizers
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    target = path / "0_CLIPModel" if layout == "st" else path
    target.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab.update({c: i + 2 for i, c in enumerate(chars)})
    vocab.update({c + "</w>": i + 2 + len(chars) for i, c in enumerate(chars)})
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=64)
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 64, "bos_token_id": 0, "eos_token_id": 1,
                     "pad_token_id": 1},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
    )
    CLIPModel(config).save_pretrained(target)
    processor.save_pretrained(target)
    if layout == "st":
        modules = [{"idx": 0, "name": "0", "path": "0_CLIPModel", "type": "sentence_transformers.models.CLIPModel"}]
        (path / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "plain")


@pytest.fixture(scope="module")
def clip(clip_dir: Path):  # noqa: ANN201
    return load_image_model(clip_dir)


def make_folder(root: Path, n: int = 6, *, corrupt: bool = True) -> Path:
    """``n`` small random images in png / jpg / webp (one in a sub-folder), plus a corrupt file."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    (root / "sub").mkdir(exist_ok=True)
    suffixes = [".png", ".jpg", ".webp"]
    for i in range(n):
        pixels = (rng.random((20 + 3 * i, 30, 3)) * 255).astype(np.uint8)
        folder = root / "sub" if i == n - 1 else root
        Image.fromarray(pixels).save(folder / f"img{i}{suffixes[i % 3]}")
    if corrupt:
        (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "notes.txt").write_text("not an image", encoding="utf-8")
    return root


def exact_ranking(query: np.ndarray, vectors: np.ndarray, ids: list[str]) -> list[str]:
    scores = vectors @ query
    return [ids[i] for i in np.argsort(-scores, kind="stable")]


# ------------------------------------------------------------------ loading


def test_both_layouts_load_and_agree(tmp_path: Path) -> None:
    plain = load_image_model(build_tiny_clip(tmp_path / "plain", seed=3))
    st = load_image_model(build_tiny_clip(tmp_path / "st", layout="st", seed=3))
    image = Image.fromarray(np.full((40, 50, 3), 120, dtype=np.uint8))
    a, b = encode_images(plain, [image]), encode_images(st, [image])
    assert a.shape == (1, 16) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert plain.max_seq_length == 64
    assert encode_images(plain, []).shape == (0, 16)


def test_text_only_model_is_refused(tiny_hf_dir: Path) -> None:
    with pytest.raises(InputError, match="embeds texts only"):
        load_image_model(tiny_hf_dir)


def test_hub_id_offline_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="not in the local cache"):
        load_image_model("nobody-here/clip-that-does-not-exist")


def test_open_image_honours_exif_and_downscales(tmp_path: Path) -> None:
    img = Image.fromarray(np.zeros((100, 300, 3), dtype=np.uint8))  # 300 wide, 100 high
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    img.save(tmp_path / "rotated.jpg", exif=exif)
    out = open_image(tmp_path / "rotated.jpg", max_side=60)
    assert out.size == (20, 60)  # displayed upright (100 x 300), then shrunk to a 60 px long side
    assert out.info["original_size"] == (100, 300)
    with pytest.raises(InputError, match="unreadable image"):
        (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
        open_image(tmp_path / "bad.png")


def test_decompression_bomb_is_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1,600 pixels: over the limit, under twice it (a warning)
    with pytest.raises(InputError, match="big.png: unreadable image .*DecompressionBomb"):
        open_image(tmp_path / "big.png")


# ------------------------------------------------------------------ indexing and searching


def test_index_folder_skips_corrupt_file_and_searches_match_exact_cosine(
    tmp_path: Path, clip_dir: Path, clip, caplog: pytest.LogCaptureFixture  # noqa: ANN001
) -> None:
    folder = make_folder(tmp_path / "photos")
    with caplog.at_level(logging.WARNING):
        coll = index_images(tmp_path / "coll", str(clip_dir), folder, model=clip, config=ImageIndexConfig(chunk_size=4))
    assert "broken.jpg" in caplog.text and "unreadable image" in caplog.text
    ids = sorted(h for h in coll._ids)
    assert ids == ["img0.png", "img1.jpg", "img2.webp", "img3.png", "img4.jpg", "sub/img5.webp"]
    assert coll.manifest["modality"] == "image"
    hit = coll.get("img1.jpg")
    assert hit.metadata == {"kind": "image", "path": str((folder / "img1.jpg").resolve()), "width": 30, "height": 23}
    assert not (tmp_path / "coll" / ".staging").exists()

    # exact references, computed here from the model directly
    paths = [folder / i for i in coll._ids]
    ref = encode_images(clip, [open_image(p) for p in paths])
    ids_in_order = list(coll._ids)
    # text -> image
    query = clip.encode(["a red square"], normalize_embeddings=True)[0]
    hits = coll.search(["a red square"], top_k=6, model=clip)[0]
    assert [h.id for h in hits] == exact_ranking(query, ref, ids_in_order)
    np.testing.assert_allclose([h.score for h in hits], np.sort(ref @ query)[::-1], atol=1e-5)
    # image -> image: the image itself first, with cosine 1
    hits = search_by_image(coll, [folder / "img2.webp"], top_k=3, model=clip)[0]
    assert hits[0].id == "img2.webp" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.id for h in hits] == exact_ranking(ref[ids_in_order.index("img2.webp")], ref, ids_in_order)[:3]

    # persistence: reopen (model loaded from the manifest) and search again, same answer
    again = Collection.open(tmp_path / "coll")
    assert again.manifest["modality"] == "image" and len(again) == 6
    assert [h.id for h in search_by_image(again, [folder / "img2.webp"], top_k=3)[0]] == [h.id for h in hits]
    assert [h.id for h in again.search(["a red square"], top_k=6)[0]] == exact_ranking(query, ref, ids_in_order)


def test_image_to_text_over_a_text_collection(tmp_path: Path, clip_dir: Path, clip) -> None:  # noqa: ANN001
    rows = [line.split("\t") for line in (DATA_DIR / "images" / "captions.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    docs = [{"id": name, "text": caption} for name, caption, *_ in rows]
    coll = Collection.create(tmp_path / "texts", str(clip_dir), model=clip)
    coll.add(docs)
    coll.save()
    query = PHOTOS / "astronaut.png"
    hits = search_by_image(Collection.open(tmp_path / "texts"), [query], top_k=5, model=clip)[0]
    q = encode_images(clip, [open_image(query)])[0]
    texts = clip.encode([d["text"] for d in docs], normalize_embeddings=True)
    assert [h.id for h in hits] == exact_ranking(q, texts, [d["id"] for d in docs])[:5]
    np.testing.assert_allclose(hits[0].score, float(np.max(texts @ q)), atol=1e-5)


def test_resume_reads_finished_chunks_back(tmp_path: Path, clip_dir: Path, clip, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    import embedforge.images.collection as imgcoll

    folder = make_folder(tmp_path / "photos", corrupt=False)
    calls: list[int] = []
    real = imgcoll._encode_chunk

    def failing(model, source, files, config):  # noqa: ANN001, ANN202
        calls.append(len(files))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(model, source, files, config)

    monkeypatch.setattr(imgcoll, "_encode_chunk", failing)
    with pytest.raises(KeyboardInterrupt):
        index_images(tmp_path / "coll", str(clip_dir), folder, model=clip, config=ImageIndexConfig(chunk_size=2))
    assert (tmp_path / "coll" / ".staging" / "images-checkpoint.json").is_file()
    calls.clear()
    monkeypatch.setattr(imgcoll, "_encode_chunk", lambda *a: (calls.append(len(a[2])), real(*a))[1])
    coll = index_images(tmp_path / "coll", str(clip_dir), folder, model=clip, config=ImageIndexConfig(chunk_size=2))
    assert calls == [2, 2] and len(coll) == 6  # the first chunk was read back, not re-encoded


# ------------------------------------------------------------------ bad input: clear errors, nothing left behind


def test_folder_without_images(tmp_path: Path, clip_dir: Path, clip) -> None:  # noqa: ANN001
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("x", encoding="utf-8")
    with pytest.raises(InputError, match="no images found"):
        index_images(tmp_path / "coll", str(clip_dir), tmp_path / "empty", model=clip)
    assert not (tmp_path / "coll").exists()


def test_folder_of_only_corrupt_images_leaves_nothing(tmp_path: Path, clip_dir: Path, clip) -> None:  # noqa: ANN001
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"nope")
    with pytest.raises(InputError, match="none of the 1 image files could be read"):
        index_images(tmp_path / "coll", str(clip_dir), tmp_path / "bad", model=clip)
    assert not (tmp_path / "coll").exists()


def test_text_only_collection_refuses_image_query(tmp_path: Path, tiny_hf_dir: Path) -> None:
    coll = Collection.create(tmp_path / "texts", str(tiny_hf_dir))
    coll.add([{"id": "a", "text": "hello"}])
    coll.save()
    with pytest.raises(InputError, match="embeds texts only"):
        search_by_image(Collection.open(tmp_path / "texts"), [PHOTOS / "astronaut.png"])


def test_mixed_collections_are_refused(tmp_path: Path, clip_dir: Path, clip) -> None:  # noqa: ANN001
    coll = Collection.create(tmp_path / "texts", str(clip_dir), model=clip)
    coll.add([{"id": "a", "text": "a caption"}])
    coll.save()
    before = sorted(p.name for p in (tmp_path / "texts").iterdir())
    with pytest.raises(InputError, match="texts and images are not mixed"):
        index_images(tmp_path / "texts", str(clip_dir), make_folder(tmp_path / "photos"), model=clip)
    assert sorted(p.name for p in (tmp_path / "texts").iterdir()) == before


def test_unreadable_query_image(tmp_path: Path, clip_dir: Path, clip) -> None:  # noqa: ANN001
    folder = make_folder(tmp_path / "photos", corrupt=False)
    coll = index_images(tmp_path / "coll", str(clip_dir), folder, model=clip)
    with pytest.raises(InputError, match="broken.png: unreadable image"):
        (tmp_path / "broken.png").write_bytes(b"xx")
        search_by_image(coll, [tmp_path / "broken.png"], model=clip)
    shutil.rmtree(tmp_path / "coll")


def test_library_add_refuses_texts_into_an_image_collection(tmp_path: Path, clip_dir: Path, clip) -> None:  # noqa: ANN001
    index_images(tmp_path / "coll", str(clip_dir), make_folder(tmp_path / "photos", corrupt=False), model=clip)
    files = {p: p.read_bytes() for p in sorted((tmp_path / "coll").rglob("*")) if p.is_file()}
    coll = Collection.open(tmp_path / "coll")
    with pytest.raises(InputError, match="is an image collection; texts and images are not mixed"):
        coll.add([{"id": "t1", "text": "a caption"}])
    with pytest.raises(InputError, match="is an image collection"):
        coll.upsert([{"id": "img0.png", "text": "img0.png"}])  # an image's id, but not an image: nothing deleted
    assert len(coll) == 6 and "img0.png" in coll
    assert {p: p.read_bytes() for p in sorted((tmp_path / "coll").rglob("*")) if p.is_file()} == files


def test_a_text_that_names_an_image_file_is_embedded_as_text(tmp_path: Path, clip) -> None:  # noqa: ANN001
    """sentence-transformers loads a string naming an existing image file (or a data URI, or an image
    URL) as the image; embedforge's ``encode`` never does: texts stay texts."""
    from embedforge.encode import encode
    from embedforge.images import encode_images, open_image

    folder = make_folder(tmp_path / "photos", corrupt=False)
    path = str(sorted(folder.iterdir())[0])
    as_text = encode(clip, [path, "a photo of a cat"])
    as_image = encode_images(clip, [open_image(path)])
    assert not np.allclose(as_text[0], as_image[0], atol=1e-3)  # not read from disk
    reference = clip.encode([{"text": path}, {"text": "a photo of a cat"}], normalize_embeddings=True)
    np.testing.assert_allclose(as_text, reference, atol=1e-6)
