"""Chinese and English for the console: gettext catalogs (Babel) read from the package, per-request language.

Message ids are English; `locale/zh/LC_MESSAGES/messages.po` holds the Chinese. The catalogs are
package data and are compiled in memory when first used, so an installed wheel needs no build step.
`python -m cx.hub.i18n` extracts the messages of the templates and the code and merges them into the
catalogs (new ones untranslated, to be filled in).
"""

from __future__ import annotations

import contextvars
import functools
import io
from importlib import resources

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

LANGUAGES = {"zh": "中文", "en": "English"}
DEFAULT = "zh"
_current: contextvars.ContextVar[str] = contextvars.ContextVar("cx_language", default=DEFAULT)


@functools.cache
def catalog(lang: str) -> NullTranslations:
    """The translations of a language (English is the message ids themselves)."""
    po = resources.files("cx.hub").joinpath("locale", lang, "LC_MESSAGES", "messages.po")
    if lang == "en" or not po.is_file():
        return NullTranslations()
    with po.open("rb") as f:
        parsed = read_po(f, locale=lang)
    buffer = io.BytesIO()
    write_mo(buffer, parsed)
    buffer.seek(0)
    return Translations(buffer)


def use(lang: str) -> contextvars.Token:
    return _current.set(lang if lang in LANGUAGES else DEFAULT)


def current() -> str:
    return _current.get()


def gettext(message: str) -> str:
    return catalog(_current.get()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return catalog(_current.get()).ngettext(singular, plural, n)


_ = gettext


def N_(message: str) -> str:
    """Marks a word for the catalogs that is translated later, where it is shown (e.g. a status)."""
    return message


def _update_catalogs() -> None:  # pragma: no cover - a maintainer's tool
    """Extract messages from the templates and the code and merge them into every catalog."""
    from pathlib import Path

    from babel.messages.catalog import Catalog
    from babel.messages.extract import extract_from_dir
    from babel.messages.pofile import write_po

    root = Path(__file__).parent
    found = Catalog()
    for filename, lineno, message, comments, context in extract_from_dir(str(root), METHODS, options_map=OPTIONS):
        found.add(message, None, [(filename, lineno)], auto_comments=comments, context=context)
    for lang in LANGUAGES:
        if lang == "en":
            continue
        path = root / "locale" / lang / "LC_MESSAGES" / "messages.po"
        with path.open("rb") as f:
            existing = read_po(f, locale=lang)
        existing.update(found, no_fuzzy_matching=True)
        with path.open("wb") as f:
            write_po(f, existing, width=120, omit_header=False, sort_output=True)
        missing = [m.id for m in existing if m.id and not m.string]
        print(f"{path}: {len(existing)} messages, {len(missing)} untranslated")
        for m in missing:
            print(f"  {m!r}")


# how messages are found: _() and ngettext() in the code, {{ _() }} and {% trans %} in the templates
METHODS = [("**.py", "python"), ("templates/**.html", "jinja2")]
OPTIONS = {"templates/**.html": {"extensions": "jinja2.ext.i18n"}}

if __name__ == "__main__":  # pragma: no cover
    _update_catalogs()

