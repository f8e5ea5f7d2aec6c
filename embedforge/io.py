"""Atomic writes (a reader sees the old file or the new one, never half of either), and the checks of
user paths and texts every command runs before it does any work: :func:`check_output`,
:func:`check_text`, :func:`require_data_dir`."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedforge.errors import InputError

__all__ = [
    "atomic_dir",
    "replace_dir",
    "atomic_write",
    "write_json",
    "save_npy",
    "check_output",
    "check_text",
    "default_data_dir",
    "require_data_dir",
    "DATA_ENV",
    "MAX_TEXT_CHARS",
]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """Open a temporary file beside ``path``; on success fsync and rename it over ``path``.

    On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the permissions open() would
    try:
        with open(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=str)
        f.write("\n")


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """``np.save`` to ``path`` atomically (no ``.npy`` suffix is added)."""
    with atomic_write(path, "wb") as f:
        np.save(f, array)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``path``; on success it replaces ``path``.

    An existing ``path`` is moved aside first and deleted only after the new one is in place,
    so an interruption leaves either the old directory or the new one (plus a ``.old`` leftover).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the directory mkdir()'s permissions
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, path)


def replace_dir(staged: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Move the finished directory ``staged`` to ``path`` (same file system); an existing ``path`` is
    moved aside first and removed only after the new one is in place (see :func:`atomic_dir`)."""
    staged, path = Path(staged), Path(path)
    old = path.with_name(f".{path.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if path.exists():
        os.replace(path, old)
    os.replace(staged, path)
    shutil.rmtree(old, ignore_errors=True)


# --- user data: the data directory, text hygiene, output paths -------------------------------------

DATA_ENV = "EMBEDFORGE_DATA"  # environment variable naming the folder of evaluation data (sts/, ...)
DEV_DATA_DIR = "../shared/data"  # beside a development checkout; used only when it exists

# The longest text (in characters) any reader accepts, and the csv field-size limit (Python's
# default is 128 Ki characters). 1M characters is ~250k tokens, hundreds of times what any
# embedding model reads (the encoder truncates long before, see embedforge.encode); a longer
# "text" is almost always a broken file (an unclosed quote swallowing the rest of a csv).
MAX_TEXT_CHARS = 1_000_000

_SURROGATE = re.compile("[\ud800-\udfff]")


def default_data_dir() -> str | None:
    """``$EMBEDFORGE_DATA`` when set, else ``../shared/data`` when that folder exists, else ``None``."""
    env = os.environ.get(DATA_ENV)
    if env:
        return env
    return DEV_DATA_DIR if os.path.isdir(DEV_DATA_DIR) else None


def require_data_dir(value: str | os.PathLike[str] | None) -> Path:
    """``value`` or :func:`default_data_dir`; an :class:`InputError` naming ``$EMBEDFORGE_DATA`` when neither is set."""
    found = value if value else default_data_dir()
    if not found:
        raise InputError(f"no data directory: pass --data-dir DIR or set {DATA_ENV} to the folder holding sts/")
    return Path(found)


def check_text(text: str, where: str | os.PathLike[str] | None = None, line: int | None = None) -> str:
    """Return ``text`` if it can be stored and encoded; else raise :class:`InputError` at ``where[:line]``.

    Rejected: lone UTF-16 surrogates (``"\\ud800"`` from a JSON escape — the only Python text
    that cannot be written as UTF-8) and texts longer than :data:`MAX_TEXT_CHARS`. ``where`` is a
    file (with ``line``) or a field name such as ``"input[3]"`` for an HTTP 400.
    """
    if len(text) > MAX_TEXT_CHARS:
        raise InputError(f"text of {len(text):,} characters; the longest accepted is {MAX_TEXT_CHARS:,}", where, line)
    bad = _SURROGATE.search(text)
    if bad is not None:
        raise InputError(
            f"text holds a lone UTF-16 surrogate (U+{ord(bad.group()):04X} at character {bad.start() + 1}); "
            "expected valid Unicode", where, line,
        )
    return text


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output(
    path: str | os.PathLike[str],
    *,
    inputs: Sequence[str | os.PathLike[str] | None] = (),
    suffixes: Sequence[str] | None = None,
    directory: bool = False,
    option: str = "--output",
) -> Path:
    """Check an output path before any work is done; returns it as a :class:`Path`.

    Raises :class:`InputError` (one line, naming ``option`` and the path) when the output
    - has the wrong type: a directory where a file is expected (or the reverse with ``directory``),
      or a suffix not in ``suffixes`` (compared case-insensitively; ``None`` accepts any);
    - is one of ``inputs`` (same resolved path, or the same file through another name or a hard
      link), or with ``directory`` holds one of them (replacing it would delete the input);
    - cannot be written: its nearest existing ancestor is not a writable directory.
    ``None`` inputs are skipped. Nothing is created: writes happen later, atomically.
    """
    out = Path(path)
    if directory:
        if out.exists() and not out.is_dir():
            raise InputError(f"{option}: is a file; expected a directory", out)
    else:
        if out.is_dir():
            raise InputError(f"{option}: is a directory; expected a file path", out)
        if suffixes is not None and out.suffix.lower() not in suffixes:
            raise InputError(
                f"{option}: unsupported output type {out.suffix or '(none)'!r}; expected {' or '.join(suffixes)}", out
            )
    resolved = out.resolve()
    for item in inputs:
        if item is None or os.fspath(item) == "":
            continue
        source = Path(item)
        same = source.resolve() == resolved
        if not same and out.exists() and source.exists():
            same = os.path.samefile(out, source)
        if same:
            raise InputError(f"{option}: is also an input ({source}); writing it would destroy that input", out)
        if directory and source.exists() and resolved in source.resolve().parents:
            raise InputError(f"{option}: holds an input ({source}); replacing it would destroy that input", out)
    base = _nearest_existing(resolved.parent)
    if not base.is_dir():
        raise InputError(f"{option}: cannot be created: {base} is not a directory", out)
    if not os.access(base, os.W_OK | os.X_OK):
        raise InputError(f"{option}: cannot write here: {base} is not writable", out)
    return out
