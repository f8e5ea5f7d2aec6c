"""Reading translations from .po files: which entries count, and Django's strings as aligned pairs."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedforge.errors import InputError

pytest.importorskip("polib")

PO = '''msgid ""
msgstr ""
"Content-Type: text/plain; charset=UTF-8\\n"

msgid "Enter a valid date."
msgstr "Geben Sie ein gültiges Datum ein."

#, fuzzy
msgid "This is only a guess."
msgstr "Das ist nur geraten."

msgid "Not translated yet."
msgstr ""

msgid "One item"
msgid_plural "Many items"
msgstr[0] "Ein Eintrag"
msgstr[1] "Viele Einträge"

#~ msgid "An old string."
#~ msgstr "Ein alter Text."

msgid "Save and continue editing"
msgstr "Sichern und weiter bearbeiten"
'''


def test_read_po_keeps_only_plain_translated_entries(tmp_path: Path):
    from embedforge.multilingual.django_po import read_po

    path = tmp_path / "django.po"
    path.write_text(PO, encoding="utf-8")
    assert read_po(path) == [
        ("Enter a valid date.", "Geben Sie ein gültiges Datum ein."),
        ("Save and continue editing", "Sichern und weiter bearbeiten"),
    ]


def test_django_parallel_is_one_to_one_and_real():
    pytest.importorskip("django")
    from embedforge.multilingual.django_po import django_parallel

    pairs = django_parallel("de")
    english, german = [a for a, _ in pairs], [b for _, b in pairs]
    assert 300 <= len(pairs) <= 400  # 325 in Django 5.x
    assert len(set(english)) == len(english) and len(set(german)) == len(german)
    assert all(len(e.split()) >= 3 for e in english) and english == sorted(english)
    assert "Datum" in dict(pairs)["Enter a valid date."]  # "Bitte ein gültiges Datum eingeben." in Django 5
    assert len(django_parallel("de", min_words=1)) > len(pairs)


def test_unknown_language_is_one_clear_error():
    pytest.importorskip("django")
    from embedforge.multilingual.django_po import django_parallel

    with pytest.raises(InputError, match="unknown language code 'xx'"):
        django_parallel("xx")
