"""Images over HTTP with a tiny random CLIP model: /v1/embeddings and /v1/search with "modality": "image",
thumbnails of an image collection, and every bad input refused with a clear error and nothing written."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("PIL")
httpx = pytest.importorskip("httpx")

from PIL import Image  # noqa: E402
from test_images import build_tiny_clip, make_folder  # noqa: E402

from embedforge.collection import Collection  # noqa: E402
from embedforge.encode import encode  # noqa: E402
from embedforge.images import (  # noqa: E402
    ImageIndexConfig,
    encode_images,
    index_images,
    load_image_model,
    open_image,
    search_by_image,
)
from embedforge.serve import ServeConfig, create_app  # noqa: E402
from embedforge.serve import images as serve_images  # noqa: E402
from embedforge.serve.server import running_server  # noqa: E402

MIME = {".png": "image/png", ".jpg": "image/jpeg", ".webp": "image/webp"}
CAPTIONS = [
    {"id": "c0", "text": "a red square"},
    {"id": "c1", "text": "noise in green and blue"},
    {"id": "c2", "text": "a photo of the sea"},
]


def data_uri(path: Path) -> str:
    return f"data:{MIME[path.suffix]};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``roots``: (size, mtime_ns), to show a request wrote nothing."""
    out = {}
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                st = os.stat(os.path.join(dirpath, name))
                out[os.path.join(dirpath, name)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny CLIP model, a photo folder (the image root) with an EXIF-rotated JPEG, an image collection of it,
    a text collection embedded with the same model, and a photo outside the root."""
    base = tmp_path_factory.mktemp("serve-images")
    clip_dir = build_tiny_clip(base / "clip")
    clip = load_image_model(clip_dir)
    photos = make_folder(base / "photos", corrupt=False)
    (photos / "notes.txt").unlink()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    pixels = (np.random.default_rng(1).random((24, 40, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(photos / "rotated.jpg", exif=exif)
    outside = base / "outside.png"
    Image.fromarray(np.full((16, 16, 3), 200, dtype=np.uint8)).save(outside)
    images_coll = base / "image-coll"
    index_images(images_coll, str(clip_dir), photos, model=clip, config=ImageIndexConfig(index_spec="exact"))
    (photos / "link-out.png").symlink_to(outside)  # after indexing: a symlink inside the root to a file outside it
    text_coll = base / "text-coll"
    coll = Collection.create(text_coll, str(clip_dir), model=clip, index_spec="exact")
    coll.add(CAPTIONS)
    coll.save()
    return {"base": base, "clip_dir": clip_dir, "clip": clip, "photos": photos, "outside": outside,
            "images_coll": images_coll, "text_coll": text_coll}


Serve = Callable[..., AbstractContextManager[str]]


@pytest.fixture(scope="module")
def serve(world: dict[str, Any]) -> Serve:
    """``serve(**config)``: a running server of the tiny CLIP model (its image collection and root by default)."""

    def start(**changes: Any) -> AbstractContextManager[str]:
        options: dict[str, Any] = {"model": str(world["clip_dir"]), "collection": str(world["images_coll"]),
                                   "image_root": str(world["photos"])}
        options.update(changes)
        model = options.pop("model_object", world["clip"])
        return running_server(create_app(ServeConfig(**options), model=model))

    return start


@pytest.fixture(scope="module")
def server(serve: Serve) -> Iterator[str]:
    with serve() as url:
        yield url


def embed(url: str, items: Any, **extra: Any) -> httpx.Response:
    body = {"model": "clip", "input": items, "modality": "image", **extra}
    return httpx.post(f"{url}/v1/embeddings", json=body, timeout=60)


def vectors(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float32)


def local(world: dict[str, Any], *paths: Path) -> np.ndarray:
    return encode_images(world["clip"], [open_image(p) for p in paths])


# ------------------------------------------------------------------ /v1/embeddings


def test_data_uris_embed_as_local_encode_images(server: str, world: dict[str, Any]) -> None:
    photos = world["photos"]
    paths = [photos / "img0.png", photos / "img1.jpg", photos / "img2.webp", photos / "rotated.jpg"]
    response = embed(server, [data_uri(p) for p in paths])
    got = vectors(response)
    assert got.shape == (4, 16)
    np.testing.assert_allclose(got, local(world, *paths), atol=1e-5)  # EXIF rotation and downscale as local reading
    assert response.json()["usage"] == {"prompt_tokens": 0, "total_tokens": 0}
    one = vectors(embed(server, data_uri(paths[3])))  # a single string, not a list
    np.testing.assert_allclose(one, local(world, paths[3]), atol=1e-5)
    packed = embed(server, [data_uri(paths[0])], encoding_format="base64", dimensions=8).json()["data"][0]["embedding"]
    want = local(world, paths[0])[0, :8]
    np.testing.assert_allclose(np.frombuffer(base64.b64decode(packed), dtype="<f4"), want / np.linalg.norm(want), atol=1e-5)


def test_paths_under_the_image_root_embed_as_local(server: str, world: dict[str, Any]) -> None:
    photos = world["photos"]
    items = ["img0.png", str(photos / "img1.jpg"), "sub/img5.webp", "./sub/../img2.webp"]
    expected = local(world, photos / "img0.png", photos / "img1.jpg", photos / "sub" / "img5.webp", photos / "img2.webp")
    np.testing.assert_allclose(vectors(embed(server, items)), expected, atol=1e-5)


def test_strings_are_texts_without_the_modality_field(server: str, world: dict[str, Any]) -> None:
    """Without ``"modality": "image"`` every string is a text — also one that sentence-transformers would
    load as an image (a data URI, an image URL, the path of an existing image file): never fetched or read."""
    photo = world["photos"] / "img0.png"
    plain = ["img0.png", "a text that mentions data:image/png;base64,AAAA in passing",
             data_uri(photo), str(photo), "https://example.com/cat.png"]
    response = httpx.post(f"{server}/v1/embeddings", json={"model": "clip", "input": plain}, timeout=60)
    got = vectors(response)
    np.testing.assert_allclose(got, encode(world["clip"], plain, normalize=True), atol=1e-5)
    as_texts = world["clip"].encode([{"text": t} for t in plain], normalize_embeddings=True)  # forced to text
    np.testing.assert_allclose(got, as_texts, atol=1e-5)
    assert not np.allclose(got[3], local(world, photo)[0], atol=1e-3)  # the path was not read as the image
    assert response.json()["usage"]["prompt_tokens"] > 0
    search = httpx.post(f"{server}/v1/search", json={"query": str(photo)}, timeout=60)
    assert search.status_code == 200, search.text


def _error(response: httpx.Response, status: int, code: str, param: str | None = None) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["type"] == "invalid_request_error", error
    if param is not None:
        assert error["param"] == param, error
    return str(error["message"])


def test_bad_image_inputs_are_clear_errors_and_write_nothing(server: str, serve: Serve, world: dict[str, Any],
                                                             tiny_model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    photos, good = world["photos"], data_uri(world["photos"] / "img0.png")
    png = (photos / "img0.png").read_bytes()
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    b64 = lambda data: base64.b64encode(data).decode("ascii")  # noqa: E731
    before = snapshot(world["base"])
    cases = [
        ("data:image/png;base64,@@not base64@@", "invalid_image", "malformed"),
        ("data:image/png;base64," + b64(b"hello, not a picture"), "invalid_image", "not a PNG, JPEG or WebP"),
        ("data:image/png;base64," + b64(png[: len(png) // 2]), "invalid_image", "corrupt image"),
        ("data:image/png;base64," + b64(gif.getvalue()), "invalid_image", "not a PNG, JPEG or WebP"),
        ("data:text/plain;base64," + b64(png), "invalid_image", "not an image data URI"),
        ("https://example.com/cat.png", "invalid_image", "does not fetch URLs"),
        ("../outside.png", "image_path_not_allowed", "outside the server's image root"),
        (str(world["outside"]), "image_path_not_allowed", "outside"),
        ("link-out.png", "image_path_not_allowed", "outside"),  # a symlink inside, its file outside
        ("/etc/passwd", "image_path_not_allowed", "outside"),
        ("no-such.png", "image_not_found", "no such image file"),
        ("sub", "image_not_found", "not a file"),
        ("", "empty_input", "empty"),
    ]
    for item, code, words in cases:
        message = _error(embed(server, [good, item]), 400, code, "input[1]")
        assert words in message, (item, message)
        search = httpx.post(f"{server}/v1/search", json={"query": item, "modality": "image"}, timeout=60)
        _error(search, 400, code, "query")
    _error(embed(server, [[1, 2, 3]]), 422, "invalid_type", "input")  # token ids are no image
    _error(httpx.post(f"{server}/v1/embeddings", json={"model": "clip", "input": "x", "modality": "audio"}), 422,
           "invalid_type", "modality")
    with serve(image_root=None) as no_root:  # paths need --image-root; data URIs still work
        assert "--image-root" in _error(embed(no_root, "img0.png"), 400, "image_path_not_allowed", "input")
        assert vectors(embed(no_root, good)).shape == (1, 16)
    with serve(max_image_bytes=len(png) - 1, max_images=2) as small:
        _error(embed(small, good), 400, "image_too_large", "input")
        _error(embed(small, "img0.png"), 400, "image_too_large", "input")
        _error(embed(small, ["img1.jpg"] * 3), 400, "too_many_inputs", "input")
    monkeypatch.setattr(serve_images, "MAX_IMAGE_PIXELS", 100)  # a canvas over the pixel limit: refused before decoding
    assert "pixels" in _error(embed(server, good), 400, "image_too_large", "input")
    monkeypatch.undo()
    with serve(model=str(world["clip_dir"]), model_object=tiny_model, collection=None) as text_only:
        assert "embeds texts only" in _error(embed(text_only, good), 400, "images_not_supported", "modality")
        health = httpx.get(f"{text_only}/health").json()
        assert health["images"] is False
    assert snapshot(world["base"]) == before


# ------------------------------------------------------------------ /v1/search


def test_search_by_image_in_an_image_collection(server: str, world: dict[str, Any]) -> None:
    photos = world["photos"]
    queries = [data_uri(photos / "img2.webp"), "sub/img5.webp"]
    response = httpx.post(f"{server}/v1/search", json={"query": queries, "modality": "image", "top_k": 3}, timeout=60)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    expected = search_by_image(Collection.open(world["images_coll"]), [photos / "img2.webp", photos / "sub" / "img5.webp"],
                               top_k=3, model=world["clip"])
    for result, hits in zip(data, expected, strict=True):
        assert [h["id"] for h in result["hits"]] == [h.id for h in hits]
        np.testing.assert_allclose([h["score"] for h in result["hits"]], [h.score for h in hits], atol=1e-5)
    assert data[0]["hits"][0]["id"] == "img2.webp" and data[1]["hits"][0]["id"] == "sub/img5.webp"  # itself first
    meta = data[0]["hits"][0]["metadata"]
    assert meta["kind"] == "image" and meta["path"] == str((photos / "img2.webp").resolve())
    assert (meta["width"], meta["height"]) == Image.open(photos / "img2.webp").size
    assert data[0]["query"].startswith("data:image/webp;base64,… (") and len(data[0]["query"]) < 60
    assert data[1]["query"] == "sub/img5.webp"
    rotated = httpx.post(f"{server}/v1/search", json={"query": "rotated.jpg", "modality": "image", "top_k": 1}).json()
    assert (rotated["data"][0]["hits"][0]["metadata"]["width"], rotated["data"][0]["hits"][0]["metadata"]["height"]) == (24, 40)
    text = httpx.post(f"{server}/v1/search", json={"query": "a red square", "top_k": 2}, timeout=60)  # text -> image
    assert text.status_code == 200 and len(text.json()["data"][0]["hits"]) == 2
    for body, param in (({"mode": "bm25"}, "mode"), ({"rerank": True}, "rerank"), ({"fusion": "rrf"}, "fusion")):
        bad = httpx.post(f"{server}/v1/search", json={"query": "img0.png", "modality": "image", **body})
        assert "dense" in _error(bad, 400, "invalid_search", param)
    health = httpx.get(f"{server}/health").json()
    assert health["images"] is True


def test_search_by_image_over_a_text_collection_of_the_same_model(serve: Serve, world: dict[str, Any]) -> None:
    photo = world["photos"] / "img1.jpg"
    with serve(collection=str(world["text_coll"]), image_root=None) as url:
        response = httpx.post(f"{url}/v1/search", json={"query": data_uri(photo), "modality": "image", "top_k": 3})
        health = httpx.get(f"{url}/health").json()
        thumb = httpx.get(f"{url}/v1/thumbnails/c0")  # a text collection has no images to show
    assert response.status_code == 200, response.text
    expected = search_by_image(Collection.open(world["text_coll"]), [photo], top_k=3, model=world["clip"])[0]
    hits = response.json()["data"][0]["hits"]
    assert [h["id"] for h in hits] == [h.id for h in expected] and len(hits) == 3
    np.testing.assert_allclose([h["score"] for h in hits], [h.score for h in expected], atol=1e-5)
    assert health["images"] is True and health["collection"]["size"] == len(CAPTIONS)
    _error(thumb, 404, "image_not_found")


# ------------------------------------------------------------------ thumbnails


def test_thumbnails_only_for_the_collections_own_images(server: str, world: dict[str, Any]) -> None:
    photos = world["photos"]
    with httpx.Client(base_url=server, timeout=60) as client:
        for doc_id in ("img0.png", "sub/img5.webp", "rotated.jpg"):
            response = client.get(f"/v1/thumbnails/{doc_id}")
            assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg", doc_id
            thumb = Image.open(io.BytesIO(response.content))
            assert thumb.format == "JPEG" and max(thumb.size) <= serve_images.THUMBNAIL_SIDE
        assert Image.open(io.BytesIO(client.get("/v1/thumbnails/rotated.jpg").content)).size == (24, 40)
        refused = [
            "no-such.png",
            "sub%2F..%2F..%2Foutside.png",
            "%2E%2E/outside.png",
            str(world["outside"]).lstrip("/"),
            "/" + str(world["outside"]),
            str((photos / "img0.png").resolve()),  # a registered file, but by path rather than id
            "link-out.png",  # in the root, but never indexed
            "etc/passwd",
        ]
        for doc_id in refused:
            response = client.get(f"/v1/thumbnails/{doc_id}")
            assert response.status_code == 404, (doc_id, response.text)
            assert response.json()["error"]["code"] in ("image_not_found", "not_found"), doc_id


def test_thumbnails_need_the_key(serve: Serve) -> None:
    with serve(api_keys=("k1",)) as url:
        assert httpx.get(f"{url}/v1/thumbnails/img0.png").status_code == 401
        ok = httpx.get(f"{url}/v1/thumbnails/img0.png", headers={"Authorization": "Bearer k1"})
    assert ok.status_code == 200


def test_cli_options(world: dict[str, Any], tmp_path: Path) -> None:
    from embedforge.cli import build_parser
    from embedforge.cli.serve import config_from_args
    from embedforge.errors import InputError

    args = build_parser().parse_args(["serve", "--model", "m", "--image-root", str(world["photos"]),
                                      "--max-images", "5", "--max-image-bytes", "1000"])
    config = config_from_args(args)
    assert (config.image_root, config.max_images, config.max_image_bytes) == (str(world["photos"]), 5, 1000)
    defaults = config_from_args(build_parser().parse_args(["serve", "--model", "m"]))
    assert defaults.image_root is None and defaults.max_images == ServeConfig().max_images
    missing = build_parser().parse_args(["serve", "--model", "m", "--image-root", str(tmp_path / "nope")])
    with pytest.raises(InputError, match="--image-root"):
        missing.func(missing)
    with pytest.raises(InputError):
        ServeConfig(max_images=0)
