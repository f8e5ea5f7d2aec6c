"""The web page in headless Chromium (Debian's /usr/bin/chromium; skipped without it)."""

from __future__ import annotations

import html
import os
import shutil
import subprocess
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
