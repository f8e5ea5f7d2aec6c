"""Fault injection for collections (issue 14): what a collection promises, tried the hostile way.

Two writers at once, ``kill -9`` at random points of ``index`` and ``save``, a full disk, byte
flips and truncation in every file of a version, files that are not ours, a model directory
replaced after indexing, a read-only collection. Child processes are forked from the test
process (torch is already loaded there), so each starts in milliseconds; a "kill -9" is a real
``SIGKILL`` that the child sends itself at the n-th filesystem call of the run (mkdir, open for
writing, fsync, rename, unlink, ...), n drawn by a seeded generator among the calls counted in a
dry run.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedforge.collection import (
    MARKER,
    TMP_NAME,
    VERSION_NAME,
    Collection,
    manifest_checksum,
    verify_version,
)
from embedforge.encode import encode
from embedforge.errors import InputError
from embedforge.ingest import index_documents
from embedforge.lock import LOCK_FILE, CollectionLocked, holder, write_lock

pytestmark = pytest.mark.skipif(sys.platform == "win32" or "fork" not in mp.get_all_start_methods(), reason="needs fork and fcntl")

FORK = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
TOPICS = ["cats purr and chase mice", "rockets launch into orbit", "bread rises in the oven", "rivers flow to the sea"]
HAS_FAISS = True
try:
    import faiss  # noqa: F401
except ImportError:
    HAS_FAISS = False
SPEC = "HNSW16" if HAS_FAISS else "exact"  # HNSW keeps tombstones: index.faiss and index.deleted.npy


def make_docs(n: int, start: int = 0, tag: str = "d") -> list[dict[str, Any]]:
    return [
        {"id": f"{tag}{i}", "text": f"{TOPICS[i % 4]} ({tag} note {i})", "metadata": {"topic": i % 4}}
        for i in range(start, start + n)
    ]


def check_collection(path: Path, model: Any, *, expect: set[int] | None = None) -> Collection:
    """Open (every file verified), search in every mode, and compare every stored vector with a fresh encode."""
    coll = Collection.open(path)
    if expect is not None:
        assert len(coll) in expect
    if len(coll):
        for mode in ("dense", "bm25", "hybrid"):
            hits = coll.search(["cats purr", "rockets"], top_k=3, mode=mode, model=model)
            assert len(hits) == 2 and all(0 < len(h) <= 3 for h in hits)
            assert all(np.isfinite(x.score) and abs(x.score) < 1e3 for h in hits for x in h)
        fresh = encode(model, coll._texts, normalize=True, prompt=coll.manifest["document_prefix"] or None)
        cosine = np.sum(fresh * np.asarray(coll._vectors), axis=1)
        assert float(cosine.min()) > 0.999, "a stored vector is not the encoding of its own text"
    return coll


def versions_all_verify(root: Path, model: Any) -> None:
    """Every version directory left in ``root`` (current or not) opens, verifies and searches."""
    for vdir in sorted(p for p in (root.iterdir() if root.exists() else []) if VERSION_NAME.fullmatch(p.name) and (p / MARKER).is_file()):
        manifest = json.loads((vdir / "manifest.json").read_text(encoding="utf-8"))
        verify_version(vdir, manifest)
        coll = Collection._open_version(root, vdir)
        if len(coll):
            assert coll.search(["bread"], top_k=2, model=model)[0]


def no_leftovers(root: Path) -> None:
    names = sorted(p.name for p in root.iterdir())
    assert not [n for n in names if TMP_NAME.fullmatch(n) or n.startswith(".CURRENT.")], names
    assert len([n for n in names if VERSION_NAME.fullmatch(n)]) == 1, names
    assert ".staging" not in names


# ---------------------------------------------------------------- child processes


def _child_main(conn: Any, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    import torch

    torch.set_num_threads(1)
    try:
        conn.send(("ok", fn(*args)))
    except BaseException as err:  # report it; the parent asserts on it
        conn.send(("error", type(err).__name__, str(err)))
    conn.close()


def start_child(fn: Callable[..., Any], *args: Any) -> tuple[Any, Any]:
    assert FORK is not None
    parent, child = FORK.Pipe()
    proc = FORK.Process(target=_child_main, args=(child, fn, args))
    proc.start()
    child.close()
    return proc, parent


def run_child(fn: Callable[..., Any], *args: Any, timeout: float = 60) -> tuple[int | None, Any]:
    """Run ``fn(*args)`` in a forked child; (exit code, what it reported or None when it died first)."""
    proc, conn = start_child(fn, *args)
    result = None
    if conn.poll(timeout):
        with suppress(EOFError):  # it died without a word (killed)
            result = conn.recv()
    proc.join(timeout)
    if proc.exitcode is None:
        proc.kill()
        proc.join()
    return proc.exitcode, result


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _is_write_mode(mode: Any) -> bool:
    return isinstance(mode, str) and any(c in mode for c in "wax+")


@contextmanager
def fs_events(on_event: Callable[[str], None]) -> Iterator[None]:
    """Call ``on_event(name)`` before every filesystem change this process makes (and every fsync)."""
    real = {name: getattr(os, name) for name in ("mkdir", "replace", "rename", "unlink", "rmdir", "fsync", "open")}
    real_open = builtins.open

    def wrap(name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if name != "open" or (len(args) > 1 and args[1] & _WRITE_FLAGS) or kwargs.get("flags", 0) & _WRITE_FLAGS:
                on_event(name)
            return real[name](*args, **kwargs)

        return call

    def opener(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if _is_write_mode(mode) and not isinstance(file, int):
            on_event("open")
        return real_open(file, mode, *args, **kwargs)

    try:
        for name in real:
            setattr(os, name, wrap(name))
        builtins.open = io.open = opener  # type: ignore[assignment]
        yield
    finally:
        for name, fn in real.items():
            setattr(os, name, fn)
        builtins.open = io.open = real_open  # type: ignore[assignment]


class _Counter:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, name: str) -> None:
        self.n += 1


def _kill_at(n: int) -> Callable[[str], None]:
    seen = [0]

    def event(name: str) -> None:
        seen[0] += 1
        if seen[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)

    return event


def _fail_at(n: int, code: int) -> Callable[[str], None]:
    seen = [0]

    def event(name: str) -> None:
        seen[0] += 1
        if seen[0] == n:
            raise OSError(code, os.strerror(code))

    return event


def _index_run(root: Path, model_dir: Path, kill_at: int) -> int:
    """Index 24 documents (chunks of 8) into ``root``; SIGKILL at the ``kill_at``-th event (0: count them)."""
    counter = _Counter()
    with fs_events(counter if kill_at == 0 else _kill_at(kill_at)):
        index_documents(root, str(model_dir), make_docs(24, start=100), chunk_size=8, index_spec=SPEC, show_progress=False)
    return counter.n


def _save_run(root: Path, kill_at: int) -> int:
    """Open ``root``, delete two documents, add eight, save; SIGKILL at the ``kill_at``-th event of the save."""
    coll = Collection.open(root)
    coll.delete(["d1", "d2"])
    coll.add(make_docs(8, start=200))
    counter = _Counter()
    with fs_events(counter if kill_at == 0 else _kill_at(kill_at)):
        coll.save()
    return counter.n


_DRY_RUNS: dict[tuple[Any, ...], int] = {}


def _dry_run(key: tuple[Any, ...], fn: Callable[..., int], root: Path, tmp_path: Path, *args: Any) -> int:
    """How many filesystem events ``fn`` makes on a copy of ``root`` (counted once per scenario)."""
    if key not in _DRY_RUNS:
        dry = tmp_path / "dry"
        if root.exists():
            shutil.copytree(root, dry)
        code, result = run_child(fn, dry, *args, 0)
        assert code == 0 and result is not None and result[0] == "ok", result
        _DRY_RUNS[key] = int(result[1])
    return _DRY_RUNS[key]


# ---------------------------------------------------------------- one writer


def _slow_index(barrier: Any, root: Path, model_dir: Path, tag: str) -> tuple[int, float]:
    real = Collection.encode_docs

    def slow(self: Collection, *args: Any, **kwargs: Any) -> np.ndarray:
        time.sleep(0.4)  # the writer holds the lock long enough for the other to try
        return real(self, *args, **kwargs)

    Collection.encode_docs = slow  # type: ignore[method-assign]
    barrier.wait(30)
    start = time.monotonic()
    try:
        index_documents(root, str(model_dir), make_docs(12, tag=tag), chunk_size=4, show_progress=False)
    except CollectionLocked as err:
        raise CollectionLocked(f"{err.message} [after {time.monotonic() - start:.2f}s]") from None
    return os.getpid(), time.monotonic() - start


def _slow_add(barrier: Any, root: Path, tag: str) -> tuple[int, float]:
    coll = Collection.open(root)
    coll.model()
    barrier.wait(30)
    start = time.monotonic()
    try:
        coll.add(make_docs(6, tag=tag))
    except CollectionLocked as err:
        raise CollectionLocked(f"{err.message} [after {time.monotonic() - start:.2f}s]") from None
    time.sleep(1.0)  # holds the lock from the first change to the save
    coll.save()
    return os.getpid(), time.monotonic() - start


def _race(fn: Callable[..., Any], *args: Any) -> tuple[tuple[int, float], str]:
    """Start two children running ``fn(barrier, *args, tag)`` at once; (winner's result, loser's error)."""
    assert FORK is not None
    barrier = FORK.Barrier(2)
    children = [start_child(fn, barrier, *args, tag) for tag in ("a", "b")]
    results = []
    for proc, conn in children:
        assert conn.poll(90), "a writer hung"
        results.append(conn.recv())
        proc.join(30)
    oks = [r for r in results if r[0] == "ok"]
    errors = [r for r in results if r[0] == "error"]
    assert len(oks) == 1 and len(errors) == 1, f"exactly one writer must succeed: {results}"
    assert errors[0][1] == "CollectionLocked", errors[0]
    return oks[0][1], errors[0][2]


def test_two_index_processes_at_once_one_wins_the_other_fails_at_once(tmp_path: Path, tiny_model_dir: Path, tiny_model: Any) -> None:
    root = tmp_path / "c"
    (winner_pid, winner_s), message = _race(_slow_index, root, tiny_model_dir)
    assert f"pid {winner_pid} on host {socket.gethostname()}" in message and "one writer at a time" in message
    waited = float(message.rsplit("after ", 1)[1].rstrip("s]"))
    assert waited < winner_s, f"the second writer must fail at once, not wait for the first ({waited:.2f}s)"
    coll = check_collection(root, tiny_model, expect={12})
    assert len({doc_id[0] for doc_id in coll._ids}) == 1, "documents of both runs mixed"
    versions_all_verify(root, tiny_model)
    no_leftovers(root)


def test_two_add_save_processes_at_once(tmp_path: Path, tiny_model_dir: Path, tiny_model: Any) -> None:
    root = tmp_path / "c"
    index_documents(root, str(tiny_model_dir), make_docs(4), show_progress=False)
    (winner_pid, winner_s), message = _race(_slow_add, root)
    assert f"pid {winner_pid}" in message and socket.gethostname() in message
    assert float(message.rsplit("after ", 1)[1].rstrip("s]")) < winner_s, "the second writer waited"
    coll = check_collection(root, tiny_model, expect={10})
    assert len({doc_id[0] for doc_id in coll._ids if not doc_id.startswith("d")}) == 1
    # an object opened before another writer's save refuses to save over it
    stale = Collection.open(root)
    fresh = Collection.open(root)
    fresh.add(make_docs(1, start=50))
    fresh.save()
    with pytest.raises(InputError, match="changed by another writer"):
        stale.add(make_docs(1, start=60))
    assert len(Collection.open(root)) == 11


def _hold_lock(root: Path) -> None:
    with write_lock(root):
        time.sleep(120)


def test_stale_lock_of_a_killed_process_is_taken_over(tmp_path: Path, tiny_model_dir: Path, tiny_model: Any, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "c"
    index_documents(root, str(tiny_model_dir), make_docs(4), show_progress=False)
    proc, _ = start_child(_hold_lock, root)
    deadline = time.monotonic() + 30
    while holder(root).get("pid") != proc.pid:
        assert time.monotonic() < deadline, "the child never took the lock"
        time.sleep(0.02)
    with pytest.raises(CollectionLocked, match=f"pid {proc.pid} on host {socket.gethostname()}"):
        index_documents(root, str(tiny_model_dir), make_docs(2, start=10), show_progress=False)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    assert proc.exitcode == -signal.SIGKILL
    with caplog.at_level("WARNING", logger="embedforge.lock"):
        index_documents(root, str(tiny_model_dir), make_docs(2, start=10), show_progress=False)
    assert f"taking over the lock of pid {proc.pid}" in caplog.text
    assert holder(root) == {"released": True}
    check_collection(root, tiny_model, expect={6})


# ---------------------------------------------------------------- kill -9 and a full disk


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_kill_9_at_a_random_point_of_index(seed: int, tmp_path: Path, tiny_model_dir: Path, tiny_model: Any) -> None:
    fresh = seed % 2 == 0  # even seeds: the first index of a new directory; odd: an update
    root = tmp_path / "c"
    if not fresh:
        index_documents(root, str(tiny_model_dir), make_docs(8), index_spec=SPEC, show_progress=False)
    point = int(np.random.default_rng(seed).integers(1, _dry_run(("index", fresh), _index_run, root, tmp_path, tiny_model_dir) + 1))
    code, result = run_child(_index_run, root, tiny_model_dir, point)
    assert code == -signal.SIGKILL, f"the child was to be killed at event {point} of {result}"
    before = 0 if fresh else 8
    if (root / "CURRENT").exists():
        check_collection(root, tiny_model, expect={0, before, before + 24})
    versions_all_verify(root, tiny_model)
    coll = index_documents(root, str(tiny_model_dir), make_docs(24, start=100), chunk_size=8, index_spec=SPEC, show_progress=False)
    assert len(coll) == before + 24
    check_collection(root, tiny_model, expect={before + 24})
    no_leftovers(root)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kill_9_at_a_random_point_of_save(seed: int, tmp_path: Path, tiny_model_dir: Path, tiny_model: Any) -> None:
    root = tmp_path / "c"
    index_documents(root, str(tiny_model_dir), make_docs(16), index_spec=SPEC, show_progress=False)
    point = int(np.random.default_rng(100 + seed).integers(1, _dry_run(("save",), _save_run, root, tmp_path) + 1))
    code, result = run_child(_save_run, root, point)
    assert code == -signal.SIGKILL, f"the child was to be killed at event {point} of {result}"
    check_collection(root, tiny_model, expect={16, 22})
    versions_all_verify(root, tiny_model)
    coll = Collection.open(root)
    coll.add(make_docs(2, start=300))
    coll.save()
    check_collection(root, tiny_model, expect={18, 24})
    no_leftovers(root)


def test_what_a_kill_can_leave_before_the_first_version_is_resumed_and_cleaned(tmp_path: Path, tiny_model_dir: Path, tiny_model: Any) -> None:
    """The states between the points a seeded kill may hit: a lock file, an empty ``.v000001.tmp``
    (killed between mkdir and marker), a marked version without ``CURRENT``, a ``CURRENT`` temporary
    file, a half-removed old version. A rerun completes and removes them, and only them."""
    root = tmp_path / "c"
    root.mkdir()
    (root / LOCK_FILE).write_text('{"pid": 999999999, "host": "elsewhere"}\n')
    (root / ".v000001.tmp").mkdir()
    (root / "v000002").mkdir()
    (root / "v000002" / MARKER).write_text("{}\n")
    (root / "v000002" / "vectors.npy").write_bytes(b"half")
    (root / ".CURRENT.k2j3.tmp").write_text('{"format"')
    coll = index_documents(root, str(tiny_model_dir), make_docs(6), show_progress=False)
    assert len(coll) == 6
    no_leftovers(root)
    (root / ".v000001.tmp").mkdir()  # a removal killed half-way: marker still there
    (root / ".v000001.tmp" / MARKER).write_text("{}\n")
    (root / ".v000001.tmp" / "docs.jsonl").write_text("x\n")
    (root / ".v000009.tmp").mkdir()  # not ours: holds something and no marker
    (root / ".v000009.tmp" / "keep.txt").write_text("mine\n")
    index_documents(root, str(tiny_model_dir), make_docs(2, start=10), show_progress=False)
    assert not (root / ".v000001.tmp").exists() and (root / ".v000009.tmp" / "keep.txt").read_text() == "mine\n"
    check_collection(root, tiny_model, expect={8})


def test_a_full_disk_during_a_save_keeps_the_previous_version(tmp_path: Path, tiny_model_dir: Path, tiny_model: Any) -> None:
    """ENOSPC at seeded write points of a save (creating a file or directory, fsync): a clear error, the previous version intact."""
    root = tmp_path / "c"
    index_documents(root, str(tiny_model_dir), make_docs(12), index_spec=SPEC, show_progress=False)
    probe = tmp_path / "probe"
    shutil.copytree(root, probe)
    coll = Collection.open(probe)
    coll.add(make_docs(3, start=50))
    names: list[str] = []
    with fs_events(names.append):
        coll.save()
    writes = [i + 1 for i, name in enumerate(names) if name in ("open", "mkdir", "fsync")]
    failed = 0
    for point in np.random.default_rng(7).choice(writes, size=min(8, len(writes)), replace=False):
        coll = Collection.open(root)
        coll.add(make_docs(3, start=50))
        try:
            with fs_events(_fail_at(int(point), errno.ENOSPC)):
                coll.save()
        except InputError as err:
            assert "No space left on device" in str(err) and "is intact" in str(err), err
            failed += 1
            assert len(Collection.open(root)) == 12
        else:  # the write that failed came after the commit (an fsync of the directory): the save stands
            assert len(Collection.open(root)) == 15
            c = Collection.open(root)
            c.delete(["d50", "d51", "d52"])
            c.save()
    assert failed >= 4
    check_collection(root, tiny_model, expect={12})
    no_leftovers(root)


def test_a_full_disk_during_index_keeps_the_collection_and_a_rerun_completes(tmp_path: Path, tiny_model_dir: Path, tiny_model: Any) -> None:
    root = tmp_path / "c"
    index_documents(root, str(tiny_model_dir), make_docs(8), index_spec=SPEC, show_progress=False)
    probe = tmp_path / "probe"
    shutil.copytree(root, probe)
    names: list[str] = []
    with fs_events(names.append):
        index_documents(probe, str(tiny_model_dir), make_docs(24, start=100), chunk_size=8, index_spec=SPEC, show_progress=False)
    writes = [i + 1 for i, name in enumerate(names) if name in ("open", "mkdir", "fsync")]
    failed = 0
    for point in np.random.default_rng(11).choice(writes, size=min(4, len(writes)), replace=False):
        try:
            with fs_events(_fail_at(int(point), errno.ENOSPC)):
                index_documents(root, str(tiny_model_dir), make_docs(24, start=100), chunk_size=8, index_spec=SPEC, show_progress=False)
        except (InputError, OSError) as err:  # the CLI prints either as one line, exit 2
            assert "No space left on device" in str(err), err
            failed += 1
            assert len(Collection.open(root)) == 8
        else:
            break  # the write that failed came after the commit: done
    assert failed >= 1
    assert len(index_documents(root, str(tiny_model_dir), make_docs(24, start=100), chunk_size=8, index_spec=SPEC, show_progress=False)) == 32
    check_collection(root, tiny_model, expect={32})
    no_leftovers(root)


# ---------------------------------------------------------------- byte flips and truncation


@pytest.fixture(scope="module")
def damaged_base(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_model: Any) -> Path:
    """A collection whose version holds every file type: vectors, keys, docs, index + tombstones, bm25."""
    root = tmp_path_factory.mktemp("faults") / "base"
    coll = index_documents(root, str(tiny_model_dir), make_docs(30), index_spec=SPEC, show_progress=False)
    coll.delete(["d3", "d4"])
    coll.search(["cats"], mode="bm25", model=tiny_model)  # the BM25 index is saved with the version
    coll.save()
    return root


def _version(root: Path) -> Path:
    return root / json.loads((root / "CURRENT").read_text())["version"]


def _all_files(root: Path) -> list[str]:
    version = _version(root)
    return sorted(p.relative_to(version).as_posix() for p in version.rglob("*") if p.is_file())


def test_the_damage_base_has_every_file_type(damaged_base: Path) -> None:
    names = _all_files(damaged_base)
    for name in ("manifest.json", "vectors.npy", "keys.npy", "docs.jsonl", MARKER):
        assert name in names
    assert any(n.startswith("bm25/") for n in names)
    if HAS_FAISS:
        assert {"index/index.faiss", "index/index.deleted.npy"} <= set(names)


def _open_and_search(root: Path, model: Any) -> None:
    coll = Collection.open(root)
    for mode in ("dense", "bm25", "hybrid"):
        coll.search(["cats purr"], top_k=3, mode=mode, model=model)


DAMAGES = ["flip-first", "flip-middle", "flip-last", "truncate-half", "truncate-tail", "empty"]


def _damage(file: Path, how: str) -> None:
    data = bytearray(file.read_bytes())
    if how.startswith("flip"):
        at = {"flip-first": 0, "flip-middle": len(data) // 2, "flip-last": len(data) - 1}[how]
        data[at] ^= 0xFF
    elif how == "truncate-half":
        data = data[: len(data) // 2]
    elif how == "truncate-tail":
        data = data[:-2]  # one byte less may only drop a final newline
    else:
        data = bytearray()
    file.write_bytes(bytes(data))


def test_every_byte_flip_and_truncation_is_a_clear_error_naming_the_file(damaged_base: Path, tmp_path: Path, tiny_model: Any) -> None:
    _open_and_search(damaged_base, tiny_model)  # the undamaged base is fine
    cases = 0
    for name in _all_files(damaged_base):
        for how in DAMAGES:
            root = tmp_path / f"case{cases}"
            shutil.copytree(damaged_base, root)
            file = _version(root) / name
            _damage(file, how)
            with pytest.raises(InputError, match=".") as info:
                _open_and_search(root, tiny_model)
                pytest.fail(f"{name} {how}: no error")
            assert str(file) in str(info.value), f"{name} {how}: {info.value}"
            cases += 1
            shutil.rmtree(root)
    assert cases >= 6 * (7 if HAS_FAISS else 5)


@pytest.mark.parametrize("where", ["model", "count", "fingerprint", "crc32", "query_prefix", "index_spec"])
def test_a_changed_manifest_value_is_caught(where: str, damaged_base: Path, tmp_path: Path, tiny_model: Any) -> None:
    root = tmp_path / "c"
    shutil.copytree(damaged_base, root)
    file = _version(root) / "manifest.json"
    manifest = json.loads(file.read_text())
    if where == "crc32":
        manifest["files"]["vectors.npy"]["crc32"] ^= 1
    elif where == "fingerprint":
        manifest["fingerprint"][0][0] += 1e-6
    elif where in ("count",):
        manifest[where] += 1
    else:
        manifest[where] = manifest[where] + "x"
    file.write_text(json.dumps(manifest, indent=2))
    with pytest.raises(InputError, match="manifest.json: .*checksum"):
        _open_and_search(root, tiny_model)


def _rewrite_manifest(root: Path, edit: Callable[[dict[str, Any]], None], *, rechecksum: bool = True) -> Path:
    file = _version(root) / "manifest.json"
    manifest = json.loads(file.read_text())
    edit(manifest)
    if rechecksum and "checksum" in manifest:
        manifest["checksum"] = manifest_checksum(manifest)
    file.write_text(json.dumps(manifest, indent=2))
    return file


@pytest.mark.parametrize("key", ["files", "fingerprint", "count", "next_key", "dimension", "checksum"])
def test_a_manifest_missing_a_key_is_a_clear_error(key: str, damaged_base: Path, tmp_path: Path, tiny_model: Any) -> None:
    root = tmp_path / "c"
    shutil.copytree(damaged_base, root)
    file = _rewrite_manifest(root, lambda m: m.pop(key))
    with pytest.raises(InputError, match=f"manifest lacks {key}") as info:
        _open_and_search(root, tiny_model)
    assert str(file) in str(info.value)


def test_a_file_missing_from_the_table_or_added_is_a_clear_error(damaged_base: Path, tmp_path: Path, tiny_model: Any) -> None:
    name = "index/index.faiss" if HAS_FAISS else MARKER
    root = tmp_path / "a"
    shutil.copytree(damaged_base, root)
    _rewrite_manifest(root, lambda m: m["files"].pop(name))
    with pytest.raises(InputError, match="not in the manifest's checksummed file table") as info:
        _open_and_search(root, tiny_model)
    assert name in str(info.value)
    root = tmp_path / "b"
    shutil.copytree(damaged_base, root)
    (_version(root) / "extra.bin").write_bytes(b"\0" * 16)
    with pytest.raises(InputError, match="extra.bin: file not in the manifest"):
        _open_and_search(root, tiny_model)
    root = tmp_path / "c"
    shutil.copytree(damaged_base, root)
    (_version(root) / "vectors.npy").unlink()
    with pytest.raises(InputError, match="vectors.npy: missing or truncated"):
        _open_and_search(root, tiny_model)


@pytest.mark.skipif(not HAS_FAISS, reason="needs faiss")
@pytest.mark.parametrize("garbage", ["random-bytes", "2-d", "floats", "negative"])
def test_a_garbage_tombstone_file_with_a_consistent_table_is_a_clear_error(garbage: str, damaged_base: Path, tmp_path: Path, tiny_model: Any) -> None:
    """Even written with a matching checksum (a buggy writer, not a flipped bit): an error, no traceback."""
    from embedforge.collection import _file_table

    root = tmp_path / "c"
    shutil.copytree(damaged_base, root)
    file = _version(root) / "index" / "index.deleted.npy"
    if garbage == "random-bytes":
        file.write_bytes(np.random.default_rng(0).integers(0, 256, 200, dtype=np.uint8).tobytes())
    else:
        value = {"2-d": np.zeros((2, 2), np.int64), "floats": np.array([0.5, 1.5]), "negative": np.array([-5], np.int64)}[garbage]
        with open(file, "wb") as f:
            np.save(f, value)
    _rewrite_manifest(root, lambda m: m.update(files=_file_table(_version(root))))
    with pytest.raises(InputError, match="index"):
        _open_and_search(root, tiny_model)


@pytest.mark.parametrize("at", [0, 5, -3])
def test_a_flipped_pointer_is_a_clear_error(at: int, damaged_base: Path, tmp_path: Path, tiny_model: Any) -> None:
    root = tmp_path / "c"
    shutil.copytree(damaged_base, root)
    data = bytearray((root / "CURRENT").read_bytes())
    data[at] ^= 0xFF
    (root / "CURRENT").write_bytes(bytes(data))
    with pytest.raises(InputError, match="CURRENT: corrupt collection pointer"):
        _open_and_search(root, tiny_model)


# ---------------------------------------------------------------- what is not ours


def test_user_files_inside_a_collection_survive_index_and_save(tmp_path: Path, tiny_model_dir: Path, tiny_model: Any) -> None:
    root = tmp_path / "c"
    index_documents(root, str(tiny_model_dir), make_docs(4), show_progress=False)
    mine = {
        "v1_results/scores.csv": "a,b\n",
        "notes.txt": "keep me\n",
        "v000077/report.txt": "named like a version, but not ours\n",
        ".v000078.tmp/draft.txt": "named like a version being written, but not ours\n",
        "v2/x": "x\n",
    }
    for name, text in mine.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    index_documents(root, str(tiny_model_dir), make_docs(4, start=10), show_progress=False)
    coll = Collection.open(root)
    coll.delete(["d0"])
    coll.save()
    coll = Collection.open(root)
    coll.add(make_docs(1, start=20))
    coll.save()
    for name, text in mine.items():
        assert (root / name).read_text() == text, f"{name} was touched"
    check_collection(root, tiny_model, expect={8})


@pytest.mark.parametrize("how", ["index", "create"])
def test_a_non_empty_directory_that_is_no_collection_is_refused_and_untouched(how: str, tmp_path: Path, tiny_model_dir: Path, tiny_model: Any) -> None:
    root = tmp_path / "mine"
    (root / "v1").mkdir(parents=True)
    (root / "v1" / "data.csv").write_text("a\n")
    (root / "thesis.tex").write_text("\\begin{document}\n")
    before = sorted((p.relative_to(root).as_posix(), p.stat().st_mtime_ns) for p in root.rglob("*"))
    with pytest.raises(InputError, match="non-empty directory that is not a collection"):
        if how == "index":
            index_documents(root, str(tiny_model_dir), make_docs(2), show_progress=False)
        else:
            Collection.create(root, str(tiny_model_dir), model=tiny_model)
    assert sorted((p.relative_to(root).as_posix(), p.stat().st_mtime_ns) for p in root.rglob("*")) == before
    assert not (root / LOCK_FILE).exists()


# ---------------------------------------------------------------- a replaced model


def test_a_model_directory_replaced_after_indexing_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    from conftest import build_tiny_bert
    from sentence_transformers import SentenceTransformer, models

    from embedforge.models import save_model

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    root = tmp_path / "c"
    index_documents(root, str(model_dir), make_docs(6), show_progress=False)
    # same path, same architecture and dimension, other weights
    hf = build_tiny_bert(tmp_path / "other-hf", seed=5)
    transformer = models.Transformer(str(hf), max_seq_length=64)
    other = SentenceTransformer(modules=[transformer, models.Pooling(32, pooling_mode="mean"), models.Normalize()], device="cpu")
    shutil.rmtree(model_dir)
    save_model(other, model_dir, base_model="tiny-random-bert")
    with pytest.raises(InputError, match="different model"):
        Collection.open(root).search(["cats"])
    with pytest.raises(InputError, match="different model"):
        index_documents(root, str(model_dir), make_docs(2, start=10), show_progress=False)
    with pytest.raises(InputError, match="different model"):
        Collection.open(root).add(make_docs(2, start=10))
    assert len(Collection.open(root)) == 6


# ---------------------------------------------------------------- read-only


def _snapshot(root: Path) -> list[tuple[str, int, int]]:
    return sorted((p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in [root, *root.rglob("*")])


@contextmanager
def no_writes_under(root: Path) -> Iterator[list[str]]:
    """Fail every write under ``root`` with EROFS (root ignores chmod, so this is the read-only check that always works)."""
    tried: list[str] = []
    prefix = str(root.resolve())
    real = {name: getattr(os, name) for name in ("mkdir", "replace", "rename", "unlink", "rmdir", "open", "utime", "chmod")}
    real_open = builtins.open

    def under(path: Any) -> bool:
        try:
            return str(Path(os.fsdecode(path)).resolve()).startswith(prefix)
        except (TypeError, ValueError):
            return False

    def deny(what: str, path: Any) -> None:
        tried.append(f"{what} {path}")
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    def wrap(name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            writing = name != "open" or (len(args) > 1 and args[1] & _WRITE_FLAGS) or kwargs.get("flags", 0) & _WRITE_FLAGS
            if writing and args and not isinstance(args[0], int) and any(under(a) for a in args[:2] if isinstance(a, str | os.PathLike)):
                deny(name, args[0])
            return real[name](*args, **kwargs)

        return call

    def opener(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if _is_write_mode(mode) and not isinstance(file, int) and under(file):
            deny("open", file)
        return real_open(file, mode, *args, **kwargs)

    try:
        for name in real:
            setattr(os, name, wrap(name))
        builtins.open = io.open = opener  # type: ignore[assignment]
        yield tried
    finally:
        for name, fn in real.items():
            setattr(os, name, fn)
        builtins.open = io.open = real_open  # type: ignore[assignment]


@pytest.mark.parametrize("with_bm25", [True, False])
def test_a_read_only_collection_is_searched_in_every_mode_without_a_write(with_bm25: bool, damaged_base: Path, tmp_path: Path, tiny_model_dir: Path, tiny_model: Any) -> None:
    root = tmp_path / "ro"
    if with_bm25:
        shutil.copytree(damaged_base, root)
    else:  # no bm25/ saved: BM25 is built in memory, never cached into the collection
        index_documents(root, str(tiny_model_dir), make_docs(20), index_spec=SPEC, show_progress=False)
    before = _snapshot(root)
    paths = [root, *root.rglob("*")]
    modes = {p: p.stat().st_mode for p in paths}
    for p in paths:
        p.chmod(stat.S_IMODE(modes[p]) & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        with no_writes_under(root) as tried:
            coll = Collection.open(root)
            for mode in ("dense", "bm25", "hybrid"):
                hits = coll.search(["bread oven", "cats"], top_k=4, mode=mode, model=tiny_model)
                assert all(len(h) == 4 for h in hits)
            coll.search(["rivers"], top_k=2, mode="hybrid", where={"topic": 3}, model=tiny_model)
            Collection.open(root).search(["cats"], mode="bm25")  # the model loaded from the manifest
            with pytest.raises(InputError):  # a write is refused with a clear error
                coll.add(make_docs(1, start=900))
                coll.save()
        assert [t for t in tried if LOCK_FILE not in t and "CURRENT" not in t and "tmp" not in t] == [], tried
    finally:
        for p in sorted(paths, key=lambda p: -len(p.parts)):
            p.chmod(stat.S_IMODE(modes[p]))
    assert _snapshot(root) == before, "a search wrote into the collection"
