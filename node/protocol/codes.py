"""Check characters of the unified social credit code (GB 32100) and organisation code (GB 11714)."""

from __future__ import annotations

import re
from functools import lru_cache

USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_VALUES = {c: i for i, c in enumerate(USCC_ALPHABET)}
USCC_WEIGHTS = [pow(3, i, 31) for i in range(17)]  # 1 3 9 27 19 26 16 17 20 29 25 13 8 24 10 30 28

ORG_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)


def org_code_check(first8: str) -> str | None:
    """The check character for eight organisation-code characters, or None if they are not 0-9/A-Z."""
    total = 0
    for ch, weight in zip(first8, ORG_WEIGHTS):
        value = ORG_ALPHABET.find(ch)
        if value < 0:
            return None
        total += value * weight
    check = 11 - total % 11
    return "X" if check == 10 else "0" if check == 11 else str(check)


@lru_cache(maxsize=4096)  # see uscc_problem
def org_code_problem(code: str) -> str | None:
    """Why `code` is not a valid 9-character organisation code, or None when it is."""
    if not isinstance(code, str) or len(code) != 9:
        return "length"
    expected = org_code_check(code[:8])
    if expected is None:
        return "charset"
    if code[8] != expected:
        return "check"
    return None


def uscc_check(first17: str) -> str | None:
    total = 0
    for ch, weight in zip(first17, USCC_WEIGHTS):
        value = USCC_VALUES.get(ch)
        if value is None:
            return None
        total += value * weight
    return USCC_ALPHABET[(31 - total % 31) % 31]


USCC_SHAPE = re.compile(r"[0-9A-HJ-NPQRTUWXY]{18}")


# the same codes recur in every batch (authorities, a subject's records sent together); a check costs ~3.5 us,
# a kept answer ~200 bytes with its key: 65,536 of them held 13 MiB once a million rows named 200,000 enterprises
@lru_cache(maxsize=4096)
def uscc_problem(code: str) -> str | None:
    """Why `code` is not a valid 18-character unified social credit code, or None when it is.

    The answer is one of: length, charset, region, check, org_check.
    """
    if not isinstance(code, str) or len(code) != 18:
        return "length"
    if not USCC_SHAPE.fullmatch(code):
        return "charset"
    if not code[2:8].isdigit():
        return "region"
    if uscc_check(code[:17]) != code[17]:
        return "check"
    if org_code_problem(code[8:17]) is not None:
        return "org_check"
    return None


def is_uscc(code: object) -> bool:
    return isinstance(code, str) and uscc_problem(code) is None


def is_org_code(code: object) -> bool:
    return isinstance(code, str) and org_code_problem(code) is None


def make_uscc(registration_dept: str, org_type: str, region: str, org8: str) -> str:
    """Assemble a valid code: 1 + 1 + 6 region digits + 8 org characters + their checks.

    Used by the sample data and the tests to produce codes that pass every check.
    """
    org9 = org8 + (org_code_check(org8) or "")
    body = f"{registration_dept}{org_type}{region}{org9}"
    check = uscc_check(body)
    if len(body) != 17 or check is None:
        raise ValueError(f"cannot make a credit code from {body!r}")
    return body + check
