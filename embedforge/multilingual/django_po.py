"""Real translations for evaluation: the UI strings of Django's ``.po`` files, read with polib.

Django ships the same English messages translated into ~100 languages (``django/conf/locale`` and
each ``contrib`` app's ``locale``). :func:`django_parallel` turns one language into aligned
``(english, translation)`` pairs that are one-to-one, so nearest-neighbour retrieval and bitext
mining have exactly one right answer per string. Nothing is copied: the files are read from the
installed ``django`` package.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from embedforge.errors import InputError

__all__ = ["INSTALL_HINT", "django_languages", "django_parallel", "django_po_files", "read_po"]

INSTALL_HINT = "pip install polib django"


def _polib():  # type: ignore[no-untyped-def]
    try:
        import polib
    except ImportError as err:
        raise InputError(f"reading .po files needs polib: {INSTALL_HINT}") from err
    return polib


def _django_root() -> Path:
    try:
        import django
    except ImportError as err:
        raise InputError(f"Django's translations need the django package: {INSTALL_HINT}") from err
    return Path(django.__file__).parent


def read_po(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """``(msgid, msgstr)`` of every translated entry: not fuzzy, not obsolete, not plural, not empty."""
    polib = _polib()
    file = Path(path)
    try:
        po = polib.pofile(str(file))
    except (OSError, ValueError) as err:  # polib raises IOError / ValueError on unreadable syntax
        raise InputError(f"cannot read .po file: {err}", file) from err
    return [
        (e.msgid, e.msgstr)
        for e in po
        if e.translated() and not e.obsolete and not e.msgid_plural and "fuzzy" not in e.flags
        and e.msgid.strip() and e.msgstr.strip()
    ]


def django_po_files(lang: str) -> list[Path]:
    """Every ``.po`` file of one language in the installed Django (core and contrib apps), sorted."""
    root = _django_root()
    files = sorted(root.glob(f"**/locale/{lang}/LC_MESSAGES/*.po"))
    if not files:
        some = ", ".join(django_languages()[:12])
        raise InputError(f"unknown language code {lang!r} for Django's translations (e.g. {some}, ...)")
    return files


def django_languages() -> list[str]:
    """Language codes with a core translation in the installed Django (``de``, ``pt_BR``, ...)."""
    return sorted(p.name for p in (_django_root() / "conf" / "locale").iterdir() if (p / "LC_MESSAGES").is_dir())


def django_parallel(lang: str, *, min_words: int = 3) -> list[tuple[str, str]]:
    """Aligned ``(english, translation)`` pairs of one language, one-to-one, sorted by the English.

    Keeps English strings of at least ``min_words`` words (shorter ones — "Yes", "Save" — are
    ambiguous without context) whose translation is the same in every file, and drops any
    translation shared by two English strings. ~325-340 pairs per major language (Django 5).
    """
    found: dict[str, set[str]] = {}
    for file in django_po_files(lang):
        for msgid, msgstr in read_po(file):
            if len(msgid.split()) >= min_words:
                found.setdefault(msgid, set()).add(msgstr)
    single = {en: next(iter(tr)) for en, tr in found.items() if len(tr) == 1}
    uses = Counter(single.values())
    return sorted((en, tr) for en, tr in single.items() if uses[tr] == 1)
