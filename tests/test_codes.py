"""Check characters of the unified social credit code (GB 32100) and organisation code (GB 11714)."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cx.protocol import codes

# -- independent reference, written from the data dictionary ---------------------------------

USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # no I, O, Z, S, V
USCC_WEIGHTS = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28]
ORG_ALPHABET = string.digits + string.ascii_uppercase
ORG_WEIGHTS = [3, 7, 9, 10, 5, 8, 4, 2]

VALID_USCC = ["91110000600037341L", "91110108551385082Q", "91430111MA4L41YT1U", "91350200776049653A"]
INVALID_USCC = "91350100M000100Y4Z"
LUOYANG_REGIONS = ["410300", "410302", "410306", "410322", "410381"]


def ref_uscc_check(first17: str) -> str:
    total = sum(USCC_ALPHABET.index(c) * w for c, w in zip(first17, USCC_WEIGHTS, strict=True))
    return USCC_ALPHABET[(31 - total % 31) % 31]


def ref_org_check(first8: str) -> str:
    total = sum(ORG_ALPHABET.index(c) * w for c, w in zip(first8, ORG_WEIGHTS, strict=True))
    check = 11 - total % 11
    return {10: "X", 11: "0"}.get(check, str(check))


def ref_uscc_valid(code: str) -> bool:
    return (
        len(code) == 18
        and all(c in USCC_ALPHABET for c in code)
        and code[2:8].isdigit()
        and ref_uscc_check(code[:17]) == code[17]
        and ref_org_check(code[8:16]) == code[16]
    )


def ref_make(prefix2: str, region: str, org8: str) -> str:
    body = prefix2 + region + org8 + ref_org_check(org8)
    return body + ref_uscc_check(body)


uscc_chars = st.sampled_from(USCC_ALPHABET)
# the organisation code inside a credit code uses only characters of the credit code alphabet
org8_in_uscc = st.text(alphabet=USCC_ALPHABET, min_size=8, max_size=8)
org8_any = st.text(alphabet=ORG_ALPHABET, min_size=8, max_size=8)
region6 = st.text(alphabet=string.digits, min_size=6, max_size=6)


# -- constants -----------------------------------------------------------------------------

def test_constants_match_the_data_dictionary():
    assert codes.USCC_ALPHABET == USCC_ALPHABET
    assert len(USCC_ALPHABET) == 31 and not set("IOZSV") & set(USCC_ALPHABET)
    assert list(codes.USCC_WEIGHTS) == USCC_WEIGHTS
    assert USCC_WEIGHTS == [pow(3, i, 31) for i in range(17)]
    assert list(codes.ORG_WEIGHTS) == ORG_WEIGHTS
    assert codes.ORG_ALPHABET == ORG_ALPHABET


# -- the data dictionary's examples ----------------------------------------------------------

@pytest.mark.parametrize("code", VALID_USCC)
def test_dictionary_valid_examples_pass(code):
    assert codes.uscc_problem(code) is None
    assert codes.is_uscc(code)
    assert ref_uscc_valid(code)  # the reference agrees, so it is a fair judge below
    assert codes.is_org_code(code[8:17])


def test_dictionary_invalid_example_fails():
    assert not codes.is_uscc(INVALID_USCC)
    assert codes.uscc_problem(INVALID_USCC) == "charset"  # Z is not in the alphabet
    assert not ref_uscc_valid(INVALID_USCC)


@pytest.mark.parametrize(
    ("code", "problem"),
    [
        ("", "length"),
        ("91110000600037341", "length"),
        ("91110000600037341LL", "length"),
        (None, "length"),
        (91110000600037341, "length"),
        ("91110000600037341l", "charset"),  # lower case
        ("9111000060003734IL", "charset"),
        ("91110000600037341 ", "charset"),
        ("911A0000600037341L", "region"),
        ("91110000600037341M", "check"),
    ],
)
def test_uscc_problems_are_named(code, problem):
    assert codes.uscc_problem(code) == problem
    assert not codes.is_uscc(code)


def test_uscc_with_wrong_embedded_org_check_is_org_check():
    # recompute the outer check so only the inner GB 11714 check is wrong
    body = "91410300MA4L41YT2"  # MA4L41YT's check is 1, not 2
    code = body + ref_uscc_check(body)
    assert codes.uscc_problem(code) == "org_check"


# -- generated codes -----------------------------------------------------------------------

@pytest.mark.parametrize("region", LUOYANG_REGIONS)
@pytest.mark.parametrize("org8", ["MA4L41YT", "00000000", "41030000", "YYYYYYYY", "12345678"])
def test_luoyang_codes_made_by_make_uscc_pass(region, org8):
    code = codes.make_uscc("9", "1", region, org8)
    assert code == ref_make("91", region, org8)
    assert code[2:8] == region
    assert codes.is_uscc(code)


@pytest.mark.parametrize("prefix", ["Y1", "N2", "A1", "5Y", "GG", "11", "Q9"])
def test_letters_in_the_first_positions_are_not_rejected(prefix):
    code = codes.make_uscc(prefix[0], prefix[1], "410300", "MA4L41YT")
    assert code.startswith(prefix)
    assert codes.uscc_problem(code) is None
    assert ref_uscc_valid(code)


@settings(max_examples=300, deadline=None)
@given(uscc_chars, uscc_chars, region6, org8_in_uscc)
def test_any_made_code_is_valid(dept, kind, region, org8):
    code = codes.make_uscc(dept, kind, region, org8)
    assert len(code) == 18
    assert code == ref_make(dept + kind, region, org8)
    assert codes.uscc_problem(code) is None
    assert codes.is_org_code(code[8:17])


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=USCC_ALPHABET, min_size=18, max_size=18))
def test_uscc_agrees_with_reference_on_random_codes(code):
    assert codes.is_uscc(code) == ref_uscc_valid(code)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=USCC_ALPHABET, min_size=17, max_size=17))
def test_uscc_with_reference_check_character(first17):
    code = first17 + ref_uscc_check(first17)
    expected = None if ref_uscc_valid(code) else ("region" if not first17[2:8].isdigit() else "org_check")
    assert codes.uscc_problem(code) == expected


def test_make_uscc_refuses_bad_parts():
    with pytest.raises(ValueError):
        codes.make_uscc("9", "1", "41030", "MA4L41YT")  # region too short
    with pytest.raises(ValueError):
        codes.make_uscc("9", "1", "410300", "MA4L41Yt")  # not an org code character


# -- every single-character corruption -------------------------------------------------------

CORRUPTION_BASES = VALID_USCC + [
    codes.make_uscc("Y", "1", "410381", "MA9XK3P0"),
    codes.make_uscc("9", "1", "410306", "40000000"),  # its org check is X
    codes.make_uscc("N", "2", "410322", "B0000000"),  # its org check is 0
]


@pytest.mark.parametrize("code", CORRUPTION_BASES)
def test_every_single_substitution_in_a_uscc_is_detected(code):
    assert codes.is_uscc(code)
    tried = 0
    for pos in range(18):
        for ch in USCC_ALPHABET:
            if ch == code[pos]:
                continue
            bad = code[:pos] + ch + code[pos + 1:]
            problem = codes.uscc_problem(bad)
            expected = "region" if 2 <= pos < 8 and not ch.isdigit() else "check"
            assert problem == expected, (bad, pos, ch)
            tried += 1
    assert tried == 18 * 30


@pytest.mark.parametrize("code", CORRUPTION_BASES[:3])
def test_characters_outside_the_alphabet_are_charset_errors(code):
    for pos in range(18):
        for ch in "IOZSVaz ．-":
            if ch == code[pos]:
                continue
            bad = code[:pos] + ch + code[pos + 1:]
            assert codes.uscc_problem(bad) == "charset", bad


ORG_BASES = ["MA4L41YT1", "600037341", "551385082", "776049653", "D2143569X", "40000000X", "B00000000"]


@pytest.mark.parametrize("code", ORG_BASES)
def test_every_single_substitution_in_an_org_code(code):
    """GB 11714 is a mod-11 check over values 0-35: a change by a multiple of 11 (0 <-> B,
    1 <-> C, A <-> L ...) in positions 1-8 is invisible to it by construction. Every other
    substitution, and every digit-for-digit one, is detected; the credit code's own mod-31
    check catches the rest when the org code sits inside a USCC."""
    assert codes.is_org_code(code), code
    undetectable = 0
    for pos in range(9):
        for ch in ORG_ALPHABET:
            if ch == code[pos]:
                continue
            bad = code[:pos] + ch + code[pos + 1:]
            blind_spot = pos < 8 and (ORG_ALPHABET.index(ch) - ORG_ALPHABET.index(code[pos])) % 11 == 0
            if blind_spot:
                undetectable += 1
                assert codes.is_org_code(bad)
            else:
                assert codes.org_code_problem(bad) == "check", bad
            if ch.isdigit() and code[pos].isdigit():
                assert not codes.is_org_code(bad), bad
    assert undetectable > 0


# -- organisation code check table -----------------------------------------------------------

@pytest.mark.parametrize(
    ("first8", "check"),
    [
        # the org codes inside the data dictionary's valid credit codes
        ("60003734", "1"),  # 6*3 + 3*5 + 7*8 + 3*4 + 4*2 = 109; 109 mod 11 = 10; 11 - 10 = 1
        ("55138508", "2"),  # sum 185, mod 11 = 9 -> 2
        ("MA4L41YT", "1"),  # M=22 A=10 L=21 Y=34 T=29: sum 604, mod 11 = 10 -> 1
        ("77604965", "3"),  # sum 250, mod 11 = 8 -> 3
        # result 10 is written X
        ("D2143569", "X"),  # D=13: sum 199, mod 11 = 1 -> 10 -> X
        ("40000000", "X"),  # 4*3 = 12, mod 11 = 1 -> X
        # result 11 is written 0
        ("00000000", "0"),  # sum 0 -> 11 -> 0
        ("B0000000", "0"),  # B=11: 33, mod 11 = 0 -> 0
        ("00000001", "9"),  # 1*2 = 2 -> 9
        ("10000000", "8"),  # 1*3 = 3 -> 8
        ("ZZZZZZZZ", "3"),  # 35 * 48 = 1680, mod 11 = 8 -> 3
    ],
)
def test_org_code_check_table(first8, check):
    assert codes.org_code_check(first8) == check
    assert ref_org_check(first8) == check
    assert codes.is_org_code(first8 + check)
    assert codes.org_code_problem(first8 + check) is None


@pytest.mark.parametrize("first8", ["ma4l41yt", "MA4L41Y-", "MA4L 1YT", "MA4L41Y\u0661"])
def test_org_code_check_refuses_other_characters(first8):
    assert codes.org_code_check(first8) is None
    assert codes.org_code_problem(first8 + "1") == "charset"


@pytest.mark.parametrize(("code", "problem"), [("", "length"), ("MA4L41YT", "length"),
                                               ("MA4L41YT10", "length"), (None, "length"),
                                               ("MA4L41YT2", "check"), ("MA4L41YTX", "check")])
def test_org_code_problems(code, problem):
    assert codes.org_code_problem(code) == problem


@settings(max_examples=300, deadline=None)
@given(org8_any)
def test_org_code_check_matches_reference(first8):
    assert codes.org_code_check(first8) == ref_org_check(first8)
    assert codes.is_org_code(first8 + ref_org_check(first8))
