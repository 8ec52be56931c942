"""Strict, bounded JSON reading and the one compact form the protocol writes."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .errors import ProtocolError, Reason

MAX_DEPTH = 16


class _Strict(Exception):
    def __init__(self, reason: Reason, detail: str):
        self.reason, self.detail = reason, detail


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise _Strict(Reason.DUPLICATE_KEY, f"duplicate key {dup!r}")
    return obj


def _constant(name: str) -> Any:
    raise _Strict(Reason.NON_FINITE_NUMBER, f"{name} is not allowed")


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400 overflows to Infinity, which no JSON writer can write back
        raise _Strict(Reason.NON_FINITE_NUMBER, f"{text[:40]} is out of range")
    return value


# U+0000 and a lone surrogate can only reach a decoded string through a \\u escape: a text without one needs
# no scan. With one, the escape itself says whether it may be one of them (\\u0000, \\uD800-\\uDFFF).
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
# json decodes a valid surrogate pair into one astral character, so a surrogate left in a string is lone
_BAD_CHARACTER = re.compile("[\x00\ud800-\udfff]")


def bad_character(value: Any) -> str | None:
    """The first string (key or value) holding U+0000 or a lone surrogate, escaped for messages; else None."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _BAD_CHARACTER.search(item):
                return escape_bad_characters(item[:80])
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def escape_bad_characters(text: str) -> str:
    """The text with U+0000 and lone surrogates written as \\u escapes: safe to store, log and sign."""
    return _BAD_CHARACTER.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def suspect(data: bytes) -> bool:
    """Whether a JSON text's bytes may decode to U+0000 or a lone surrogate (C-speed search; usually False)."""
    return b"\\u" in data and _SUSPECT_ESCAPE.search(data) is not None


def refuse_bad_characters(value: Any, what: str = "JSON") -> None:
    """Raise BAD_CHARACTER if a decoded value holds U+0000 or a lone surrogate (no store can keep either)."""
    found = bad_character(value)
    if found is not None:
        raise ProtocolError(Reason.BAD_CHARACTER, f"{what}: U+0000 or a lone surrogate in '{found}'")


_decoder = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_constant, parse_float=_float)


def depth(value: Any, limit: int) -> int:
    """Nesting depth of a decoded value, giving up (returning limit + 1) once past `limit`."""
    if isinstance(value, dict):
        children = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return 0
    if limit <= 0:
        return 1
    deepest = 0
    for child in children:
        if isinstance(child, (dict, list)):
            deepest = max(deepest, depth(child, limit - 1))
            if deepest >= limit:
                break
    return 1 + deepest


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH, what: str = "JSON") -> Any:
    """Decode one JSON text: UTF-8 only, no duplicate keys, no NaN/Infinity, no U+0000 or lone surrogates,
    bounded depth."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(Reason.NOT_UTF8, f"{what}: invalid UTF-8 at byte {exc.start}") from None
        openers = data.count(b"{") + data.count(b"[")
    else:
        text = data
        openers = text.count("{") + text.count("[")
    try:
        value = _decoder.decode(text)
    except _Strict as exc:
        raise ProtocolError(exc.reason, f"{what}: {exc.detail}") from None
    except json.JSONDecodeError as exc:
        raise ProtocolError(Reason.BAD_JSON, f"{what}: {exc.msg} at position {exc.pos}") from None
    except ValueError as exc:  # an integer longer than Python's int conversion limit (4300 digits)
        raise ProtocolError(Reason.BAD_JSON, f"{what}: {str(exc)[:80]}") from None
    except RecursionError:
        raise ProtocolError(Reason.TOO_DEEP, f"{what}: nested deeper than {max_depth}") from None
    # counting brackets (C speed) bounds the depth, so most lines skip the walk
    if openers > max_depth and depth(value, max_depth) > max_depth:
        raise ProtocolError(Reason.TOO_DEEP, f"{what}: nested deeper than {max_depth}")
    # a str may also carry a raw lone surrogate, which bytes cannot
    if suspect(data) if isinstance(data, bytes) else ("\\u" in text or _BAD_CHARACTER.search(text)):
        refuse_bad_characters(value, what)
    return value


def dumps(value: Any) -> bytes:
    """Compact, key-sorted, UTF-8 JSON: the form nodes write headers and record lines in."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def dumps_ascii(value: Any) -> bytes:
    """Like `dumps` but ASCII-escaped: for hashing decoded values, which may hold lone surrogates."""
    return json.dumps(value, ensure_ascii=True, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
