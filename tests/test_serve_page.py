"""The web page in headless Chromium (Debian's /usr/bin/chromium; skipped without it)."""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")

from embedforge.serve import ServeConfig, create_app  # noqa: E402
from embedforge.serve.server import running_server  # noqa: E402

CHROMIUM = os.environ.get("EMBEDFORGE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
DOCS = {
    "d1": "Glaciers retreat as summers grow warmer.",
    "d2": "A sourdough starter needs flour, water and patience.",
    "d3": "Sea ice in the Arctic shrinks every September.",
    "d4": "<b>markup</b> in a document stays text",
}

pytestmark = pytest.mark.skipif(
    not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)),
    reason=f"headless Chromium not found at {CHROMIUM} (Debian: apt-get install -y chromium)",
)


@dataclass
class WordHit:
    id: str
    score: float
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


class WordCollection:
    """A fake collection scoring documents by shared words; enough to drive the page."""

    manifest = {"model": "words"}

    def __len__(self) -> int:
        return len(DOCS)

    def search(self, queries: list[str], *, top_k: int = 10, mode: str = "dense", model: Any = None) -> list[list[WordHit]]:
        out = []
        for query in queries:
            words = set(query.lower().split())
            scored = [(len(words & set(t.lower().split())) / max(len(words), 1), i, t) for i, t in DOCS.items()]
            scored.sort(key=lambda s: -s[0])
            out.append([WordHit(i, s, t, {"source": "test"}) for s, i, t in scored[:top_k] if s > 0])
        return out


def _dump_dom(url: str, tmp_path: Path) -> str:
    """The DOM after the page's scripts ran (virtual time lets fetches finish before the dump)."""
    profile = tmp_path / "chromium-profile"
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        url,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.fixture(scope="module")
def page_server(tiny_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    coll_dir = tmp_path_factory.mktemp("page") / "my-collection"
    coll_dir.mkdir()
    (coll_dir / "map.html").write_text("<!doctype html><title>map</title><p id='the-map'>map</p>", encoding="utf-8")
    config = ServeConfig(model="tiny", collection=str(coll_dir))
    with running_server(create_app(config, model=tiny_model, collection=WordCollection())) as url:
        yield url


def test_page_renders_search_ui_and_results_from_the_url(page_server: str, tmp_path: Path) -> None:
    query = "sea ice summers"
    dom = _dump_dom(f"{page_server}/?q={urllib.parse.quote(query)}", tmp_path)
    assert 'id="search-form"' in dom and 'id="q"' in dom
    assert "collection my-collection: 4 documents" in dom
    assert 'data-id="d3"' in dom and 'data-id="d1"' in dom  # both matching documents are listed …
    assert dom.index('data-id="d3"') < dom.index('data-id="d1"')  # … best first
    assert 'data-id="d2"' not in dom
    assert html.escape(DOCS["d3"], quote=False) in dom
    assert "2 results for “sea ice summers”" in dom
    assert 'src="/map"' in dom  # the corpus map, since the collection has a map.html


def test_page_escapes_document_text(page_server: str, tmp_path: Path) -> None:
    dom = _dump_dom(f"{page_server}/?q=stays+text", tmp_path)
    assert 'data-id="d4"' in dom
    assert "&lt;b&gt;markup&lt;/b&gt;" in dom and "<b>markup</b>" not in dom


def test_page_needs_the_key_when_the_server_has_one(tiny_model: Any) -> None:
    # read over plain HTTP: headless Chromium shows an empty document for a 401 that asks for a login
    import httpx

    config = ServeConfig(model="tiny", api_keys=("page-key",))
    with running_server(create_app(config, model=tiny_model, collection=WordCollection())) as url:
        response = httpx.get(f"{url}/?q=sea+ice")
    refused = response.text
    assert response.status_code == 401 and response.headers.get("www-authenticate", "").startswith("Basic")
    assert "invalid_api_key" in refused and 'id="search-form"' not in refused


@pytest.mark.xfail(reason="open: with the login given in the URL (reader:KEY@host) headless Chromium loads the page "
                          "but its own /v1/search fetch is sent without the credentials; a login typed into the "
                          "browser's dialog is not reproduced here", strict=False)
def test_page_searches_with_the_browsers_login(tiny_model: Any, tmp_path: Path) -> None:
    config = ServeConfig(model="tiny", api_keys=("page-key",))
    with running_server(create_app(config, model=tiny_model, collection=WordCollection())) as url:
        host = url.removeprefix("http://")
        logged_in = _dump_dom(f"http://reader:page-key@{host}/?q=sea+ice", tmp_path)  # the browser's Basic login
    assert 'class="hit"' in logged_in, "the page's own search is sent with the browser's login"


def test_page_without_collection_says_so(tiny_model: Any, tmp_path: Path) -> None:
    with running_server(create_app(ServeConfig(model="tiny"), model=tiny_model)) as url:
        dom = _dump_dom(f"{url}/?q=anything", tmp_path)
    assert 'id="search-form"' in dom
    assert "This server has no collection to search" in dom
    assert 'class="hit"' not in dom


# ------------------------------------------------------------------ image collections


@pytest.fixture(scope="module")
def image_page_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A tiny random CLIP model serving an image collection of a small photo folder; yields (url, folder)."""
    pytest.importorskip("PIL")
    from test_images import build_tiny_clip, make_folder

    from embedforge.images import ImageIndexConfig, index_images, load_image_model

    base = tmp_path_factory.mktemp("page-images")
    clip_dir = build_tiny_clip(base / "clip")
    clip = load_image_model(clip_dir)
    photos = make_folder(base / "photos", corrupt=False)
    coll = base / "photo-collection"
    index_images(coll, str(clip_dir), photos, model=clip, config=ImageIndexConfig(index_spec="exact"))
    config = ServeConfig(model=str(clip_dir), collection=str(coll))
    with running_server(create_app(config, model=clip)) as url:
        yield url, photos


def test_page_shows_thumbnails_of_an_image_collection(image_page_server: tuple[str, Path], tmp_path: Path) -> None:
    url, _photos = image_page_server
    dom = _dump_dom(f"{url}/?q=a+red+square&k=3", tmp_path)
    assert "collection photo-collection: 6 documents" in dom
    assert dom.count('class="hit"') == 3
    # every hit shows its picture, fetched from /v1/thumbnails and decoded by the browser
    assert dom.count('class="hit-thumb"') == 3 and dom.count('data-state="loaded"') == 3, dom
    assert 'src="blob:' in dom
    assert 'id="image-label"' in dom and 'id="image-label" hidden' not in dom  # the upload control is offered


def test_page_without_images_offers_no_upload(page_server: str, tmp_path: Path) -> None:
    dom = _dump_dom(f"{page_server}/?q=sea+ice", tmp_path)
    assert 'class="hit"' in dom and 'class="hit-thumb"' not in dom
    assert 'id="image-label" hidden' in dom or 'hidden="" id="image-label"' in dom


class _DevTools:
    """Just enough of the Chrome DevTools protocol (over its WebSocket) to pick a file in a page's file input."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(self.ws.recv(timeout=60))
            if reply.get("id") == self.next_id:
                assert "error" not in reply, reply
                return reply.get("result", {})  # type: ignore[no-any-return]

    def evaluate(self, expression: str, session: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session)
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, session: str, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression, session)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {expression}: {self.evaluate('document.body.innerText', session)}")


def test_page_searches_by_an_uploaded_image(image_page_server: tuple[str, Path], tmp_path: Path) -> None:
    sync_client = pytest.importorskip("websockets.sync.client")
    url, photos = image_page_server
    profile = tmp_path / "chromium-profile"
    browser = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and len(port_file.read_text().splitlines()) >= 2):
            assert time.monotonic() < deadline and browser.poll() is None, "Chromium did not start"
            time.sleep(0.1)
        port, path = port_file.read_text().splitlines()[:2]
        with sync_client.connect(f"ws://127.0.0.1:{port}{path}", max_size=None) as ws:
            tools = _DevTools(ws)
            target = tools.call("Target.createTarget", {"url": f"{url}/"})["targetId"]
            session = tools.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            tools.wait_for("document.getElementById('image-label') && !document.getElementById('image-label').hidden",
                           session)
            root = tools.call("DOM.getDocument", {}, session)["root"]["nodeId"]
            node = tools.call("DOM.querySelector", {"nodeId": root, "selector": "#image-file"}, session)["nodeId"]
            tools.call("DOM.setFileInputFiles", {"files": [str(photos / "img2.webp")], "nodeId": node}, session)
            status = tools.wait_for(
                "(t => t.includes('for the image') && t)(document.getElementById('status').textContent)", session)
            tools.wait_for("document.querySelectorAll('img.hit-thumb[data-state=loaded]').length === "
                           "document.querySelectorAll('li.hit').length", session)
            first = tools.evaluate("document.querySelector('li.hit').dataset.id", session)
            hits = tools.evaluate("document.querySelectorAll('li.hit').length", session)
    finally:
        browser.terminate()
        browser.wait(30)
    assert status == f"{hits} results for the image “img2.webp”"
    assert first == "img2.webp" and hits == 6  # the photo itself first (cosine 1), then the rest
