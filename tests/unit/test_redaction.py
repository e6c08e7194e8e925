"""The audit-log sanitizer (policies/audit/redaction.py): secrets never survive, caps hold, it never raises."""

from __future__ import annotations

import base64
import string
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.audit.redaction import RedactionPolicy, sanitize
from policies.audit.secret_shapes import REDACTED, REDACTED_CARD, luhn_ok, scrub_text
from policies.compliance.classification import load_compliance_policy

POLICY = load_compliance_policy().redaction
SMALL = RedactionPolicy(
    max_string_length=64, max_key_length=32, max_items=5, max_depth=4, max_total_bytes=1024
)
CONTROL = {chr(c) for c in range(0x20)} | {chr(c) for c in range(0x7F, 0xA0)} | {"\u2028", "\u2029"}


def walk_strings(v: Any) -> Iterator[str]:
    """Every key and string value in a sanitized tree."""
    if isinstance(v, dict):
        for k, x in v.items():
            yield k
            yield from walk_strings(x)
    elif isinstance(v, list):
        for x in v:
            yield from walk_strings(x)
    elif isinstance(v, str):
        yield v


def depth_of(v: Any) -> int:
    if isinstance(v, dict):
        return 1 + max((depth_of(x) for x in v.values()), default=0)
    if isinstance(v, list):
        return 1 + max((depth_of(x) for x in v), default=0)
    return 0


def assert_within_caps(out: Any, p: RedactionPolicy) -> None:
    assert len(orjson.dumps(out)) <= p.max_total_bytes
    assert depth_of(out) <= p.max_depth
    stack = [out]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            assert len(v) <= p.max_items
            assert all(len(k) <= p.max_key_length for k in v)
            stack.extend(v.values())
        elif isinstance(v, list):
            assert len(v) <= p.max_items
            stack.extend(v)
        elif isinstance(v, str):
            assert len(v) <= p.max_string_length


def with_luhn(body: str) -> str:
    """Append the check digit that makes ``body`` a Luhn-valid card number."""
    for d in "0123456789":
        if luhn_ok(body + d):
            return body + d
    raise AssertionError("unreachable")


# --- table tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "Password",
        "PASSWORD",
        "pass_word",
        "passwd",
        "db_password",
        "dbPassword",
        "newPassword",
        "token",
        "access_token",
        "accessToken",
        "refresh-token",
        "x-auth-token",
        "secret",
        "client_secret",
        "clientSecret",
        "Authorization",
        "apiKey",
        "api_key",
        "API-Key",
        "x-api-key",
        "cookie",
        "Set-Cookie",
        "private_key",
        "privateKey",
        "cardNumber",
        "credit_card",
        "cvv",
        "ssn",
        "SSN",
        "aws_credentials",
    ],
)
def test_secret_key_spellings_are_redacted(key: str) -> None:
    """Every spelling of a secret key (case, '-', '_', camelCase, prefixes) hides its whole value."""
    out = sanitize({"outer": {key: "Sx-value-123", "ok": "visible"}}, POLICY)
    assert out == {"outer": {key: REDACTED, "ok": "visible"}}


@pytest.mark.parametrize(
    ("text", "gone", "kept"),
    [
        ("Authorization: Bearer abcDEF123._-~+/xyz==", "abcDEF123", "Authorization: Bearer [REDACTED]"),
        ("basic dXNlcjpwYXNz", "dXNlcjpwYXNz", "basic [REDACTED]"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig_Value-1 end", "eyJzdWIiOiIxIn0", "end"),
        ("cut eyJhbGciOiJIUzI1NiJ9.eyJzdWIi", "eyJzdWIi", "cut"),
        ("db postgres://app:S3cr@t/pw@db.local:5432/main ok", "S3cr@t/pw", "postgres://[REDACTED]@db.local"),
        ("redis://:hunter2hunter@cache:6379", "hunter2hunter", "redis://[REDACTED]@cache"),
        ("Server=db;Password=Sup3rS3cret;User Id=x", "Sup3rS3cret", "Server=db;Password=[REDACTED]"),
        ('{"client_secret": "zz9zz9zz9"}', "zz9zz9zz9", "client_secret"),
        ("url ?token=abcdef0123&x=1", "abcdef0123", "&x=1"),
        ("card 4111 1111 1111 1111 exp", "1111 1111", "card [REDACTED-CARD] exp"),
        ("card 4111-1111-1111-1111.", "4111", "[REDACTED-CARD]."),
        ("order 12 4111111111111111 99", "4111111111111111", "order 12 [REDACTED-CARD] 99"),
        ("amex 378282246310005", "378282246310005", REDACTED_CARD),
        ("key AKIAIOSFODNN7EXAMPLE here", "AKIAIOSFODNN7EXAMPLE", "here"),
        ("AKIAIOSFODNN7EXAMPLE,wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY,x", "bPxRfiCY", ",x"),
        ("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc ok", "4eC39HqLy", "stripe [REDACTED] ok"),
        ("gh ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 ok", "aBcDeFgH", "gh [REDACTED] ok"),
        ("slack xoxb-123456789012-abcdefABCDEF ok", "abcdefABCDEF", "slack [REDACTED] ok"),
        ("maps AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe ok", "SyDaGmWKa4", "maps [REDACTED] ok"),
        ("Cookie: sid=s3ss10n; theme=dark\nnext", "s3ss10n", "Cookie: [REDACTED]"),
        ("the password is: hunter2 ok", "hunter2", "password is: [REDACTED] ok"),
        ("pin: 9876 and otp=123456", "9876", "otp=[REDACTED]"),
        ("pay to DE89 3704 0044 0532 0130 00 now", "0532", "pay to [REDACTED] now"),
        ("card 4111.1111.1111.1111 and 4111/1111/1111/1111", "1111", "card [REDACTED-CARD] and [REDACTED-CARD]"),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY----- tail",
            "MIIEowIBAAKCAQEA",
            "tail",
        ),
        (
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk (truncated",
            "b3BlbnNzaC1rZXk",
            "[REDACTED-PRIVATE-KEY]",
        ),
    ],
)
def test_shaped_secrets_in_text(text: str, gone: str, kept: str) -> None:
    """Secrets recognisable by shape are removed from free text, and the text around them stays."""
    out = sanitize({"note": text}, POLICY)["note"]
    assert gone not in out
    assert kept in out


@pytest.mark.parametrize(
    "text",
    [
        "order 4111111111111112 total",
        "id 1234567890123",
        "uuid 123e4567-e89b-12d3-a456-426614174000",
        "ts 2024-12-15T10:30:00Z",
        "https://example.com/path@v2",
        "mailto user@example.com",
        "a secretary called",
        "the token expired",
        "ts=1732963200.123456 and 17329632001234.5",
        "sha1 2fd4e1c67a2d28fced849ee1bb76e7391b93eb12",
        "on 2024/12/15 at 10.30.00",
        "spin: 3, monkey: yes",
        "DE12 not an iban",
    ],
)
def test_lookalikes_are_left_alone(text: str) -> None:
    """Non-Luhn numbers, UUIDs, timestamps and URLs without passwords are not redacted."""
    assert sanitize(text, POLICY) == text


def test_card_number_as_digit_array() -> None:
    """A card number sent as an array of digits or digit groups is redacted; other small lists stay."""
    out = sanitize({"a": [4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], "b": [4111, 1111, 1111, 1111],
                    "c": ["4111", "1111", "1111", "1111"], "d": [1, 2, 3], "e": [4111, 1111, 1111, 1112]}, POLICY)
    assert out == {"a": REDACTED_CARD, "b": REDACTED_CARD, "c": REDACTED_CARD, "d": [1, 2, 3],
                   "e": [4111, 1111, 1111, 1112]}


def test_card_number_as_integer() -> None:
    """A card number sent as a JSON number is redacted; an ordinary large id is not."""
    assert sanitize({"n": 4111111111111111, "id": 4111111111111112}, POLICY) == {
        "n": REDACTED_CARD,
        "id": 4111111111111112,
    }


def test_personal_data_masked() -> None:
    """Personal keys are masked, nested values under them too, and masking is stable."""
    out = sanitize(
        {
            "Email": "jane.doe@example.com",
            "phone_number": "+1 555 123 4567",
            "address": {"street": "1 Main Street", "zip": 90210},
        },
        POLICY,
    )
    assert out == {
        "Email": "j***@example.com",
        "phone_number": "***67",
        "address": {"street": "***et", "zip": "***"},
    }
    assert sanitize(out, POLICY) == out


def test_control_characters_escaped_in_values_and_keys() -> None:
    """CR/LF and other controls become visible escapes in keys and values; nothing raw remains."""
    out = sanitize({"a\r\nFAKE: entry": "x\ny\tz\x00\x1b[31m\u2028"}, POLICY)
    assert out == {"a\\r\\nFAKE: entry": "x\\ny\\tz\\x00\\x1b[31m\\u2028"}
    assert sanitize(out, POLICY) == out


def test_total_on_awkward_inputs() -> None:
    """Non-str keys, huge ints, NaN, bytes, surrogates, sets, cycles and foreign objects all serialize."""
    cyc: dict[str, Any] = {}
    cyc["self"] = cyc

    class Boom:
        def __str__(self) -> str:
            raise RuntimeError("no")

    value = {
        1: "one",
        None: "none",
        (1, 2): "tuple",
        2.5: float("nan"),
        "big": 2**100,
        "huge": 10**5000,
        "bytes": b"pw\nline",
        "sur": "\ud800",
        "set": {3},
        "cyc": cyc,
        "obj": Boom(),
        Boom(): 1,
        "inf": float("inf"),
    }
    out = sanitize(value, POLICY)
    orjson.dumps(out)
    assert out["1"] == "one" and out["None"] == "none" and out["(1, 2)"] == "tuple"
    assert out["huge"] == "[integer too large]" and out["bytes"] == "pw\\nline"
    assert out["obj"] == "[unrepresentable Boom]"


def test_caps_and_markers() -> None:
    """Long strings, long lists, wide dicts, deep nesting and total size are cut, with markers."""
    assert sanitize("x" * 100, SMALL).endswith("chars]") and len(sanitize("x" * 100, SMALL)) == 64
    assert sanitize(list(range(10)), SMALL) == [0, 1, 2, 3, "[6 more items]"]
    wide = sanitize({f"k{i}": i for i in range(10)}, SMALL)
    assert len(wide) == 5 and wide["_moreKeys"] == "[6 more keys]"
    deep: Any = "leaf"
    for _ in range(100_000):
        deep = [deep]
    assert depth_of(sanitize(deep, SMALL)) == 4
    big = sanitize([["y" * 60] * 4] * 4, SMALL)
    assert_within_caps(big, SMALL)
    assert big[-1].startswith("[size cap")


def test_huge_string_is_fast() -> None:
    """A 20 MB string and a 200 kB digit soup are handled in well under a second each."""
    for text in ("a" * 20_000_000, "1 " * 100_000, "a://" * 50_000, "eyJ" * 50_000):
        t0 = time.perf_counter()
        out = sanitize({"t": text}, POLICY)
        assert time.perf_counter() - t0 < 1.0
        assert len(out["t"]) <= POLICY.max_string_length


def test_scrub_text_is_idempotent_on_markers() -> None:
    """Redaction markers themselves are not redacted again (sanitize can run twice)."""
    text = "postgres://[REDACTED]@h password=[REDACTED] Bearer [REDACTED] [REDACTED-CARD] [REDACTED-JWT]"
    assert scrub_text(text) == text


# --- property tests -------------------------------------------------------------------------------

ALNUM = string.ascii_letters + string.digits
# Surrounding text has no digits and numbers stay short, while every planted secret holds a digit
# and is long: a secret can only appear in the output if it leaked, never by coincidence.
TEXT = string.ascii_letters + " .,!?\r\n\t"
BENIGN_KEYS = st.sampled_from(["name", "data", "items", "meta", "value", "params", "result", "x", "list"])
SECRET_KEYS = st.sampled_from(
    [
        "password",
        "Password",
        "db_password",
        "userPassword",
        "PASSWD",
        "apiKey",
        "api_key",
        "X-Api-Key",
        "access_token",
        "refreshToken",
        "client_secret",
        "Authorization",
        "Set-Cookie",
        "private_key",
        "cardNumber",
        "ssn",
        "cvv",
        "auth",
        "passphrase",
        "pin",
        "PIN",
        "userPin",
        "otp",
        "cvc2",
        "securityCode",
        "sessionKey",
        "key",
        "iban",
    ]
)
VENDOR_PREFIXES = ["sk_live_", "sk_test_", "rk_live_", "whsec_", "ghp_", "gho_", "ghs_", "github_pat_", "xoxb-",
                   "xoxp-", "AIza", "glpat-"]
KV_NAMES = ["password", "Password", "pwd", "token", "api_key", "secret", "passphrase", "auth", "pin", "otp",
            "cvc2", "securityCode", "sessionKey", "key", "iban"]
KV_SEPARATORS = ["=", ": ", " is: ", " is ", '": "']


def iban(country: str, bban: str) -> str:
    """A valid IBAN (ISO 13616 check digits) for ``bban``."""
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{country}{98 - int(numeric) % 97:02d}{bban}"
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.integers(-4000, 4000).map(lambda i: i / 4),
    st.text(TEXT, max_size=30),
)
noise = st.recursive(
    scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(BENIGN_KEYS, c, max_size=4), max_leaves=15
)


def token(min_size: int, alphabet: str = ALNUM) -> st.SearchStrategy[str]:
    return st.text(alphabet, min_size=min_size, max_size=min_size + 20)


@st.composite
def planted(draw: st.DrawFn) -> tuple[Any, list[str]]:
    """A value carrying one secret, and the substrings that must not survive sanitizing."""
    kind = draw(st.sampled_from(["key", "jwt", "card", "card_array", "url", "bearer", "pem", "kv", "vendor",
                                 "aws", "cookie", "iban"]))
    if kind == "key":
        secret = "Sx9" + draw(token(12))
        value: Any = draw(st.sampled_from([secret, [secret], {"inner": secret}]))
        return {draw(SECRET_KEYS): value}, [secret]
    if kind == "jwt":
        parts = ["9" + draw(token(10, ALNUM + "-_")) for _ in range(2)]
        secret = f"eyJ{parts[0]}.{parts[1]}.{draw(token(0, ALNUM + '-_'))}"
        return secret, [parts[0], parts[1]]
    if kind == "card":
        digits = with_luhn(
            draw(st.sampled_from(["4", "5", "37", "6011"]))
            + draw(st.text(string.digits, min_size=12, max_size=14))
        )
        sep = draw(st.sampled_from(["", " ", "-", ".", "/"]))
        shown = sep.join(digits[i : i + 4] for i in range(0, len(digits), 4))
        return shown, [digits, shown, digits[4:12]]
    if kind == "card_array":
        digits = with_luhn("4" + draw(st.text(string.digits, min_size=14, max_size=14)))
        groups = [digits[i : i + 4] for i in range(0, 16, 4)]
        arr: list[Any] = draw(st.sampled_from([
            [int(d) for d in digits], groups, [int(g) if g[0] != "0" else g for g in groups]]))
        return arr, [orjson.dumps(arr).decode()]
    if kind == "vendor":
        secret = draw(st.sampled_from(VENDOR_PREFIXES)) + "Vx9" + draw(token(36, ALNUM))
        return secret, [secret[-30:]]
    if kind == "aws":
        secret = "wJ9" + draw(st.text(ALNUM + "/+", min_size=37, max_size=37))
        return secret, [secret]
    if kind == "cookie":
        secret = "Ck9" + draw(token(12))
        header = draw(st.sampled_from(["Cookie", "cookie", "Set-Cookie", "COOKIE"]))
        return f"{header}: sid={secret}; theme=dark", [secret]
    if kind == "iban":
        country, length = draw(st.sampled_from([("DE", 18), ("GB", 18), ("FR", 23), ("NL", 14)]))
        bban = (("NWBK" if country == "GB" else "ABNA") if country in ("GB", "NL") else "") + draw(
            st.text(string.digits, min_size=length - (4 if country in ("GB", "NL") else 0),
                    max_size=length - (4 if country in ("GB", "NL") else 0)))
        compact = iban(country, bban)
        shown = draw(st.sampled_from([compact, " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))]))
        return shown, [compact[4:], shown[4:]]
    if kind == "url":
        pw = "Pw9" + draw(token(10, ALNUM + "!@#%^*/:"))
        scheme = draw(st.sampled_from(["postgres", "postgresql", "mongodb+srv", "redis", "amqps", "https"]))
        return f"{scheme}://{draw(st.sampled_from(['app', 'u', '']))}:{pw}@db-host.example:5432/db", [pw]
    if kind == "bearer":
        t = "9" + draw(token(20, ALNUM + "._~+/-="))
        return f"{draw(st.sampled_from(['Bearer', 'bearer', 'BEARER']))} {t}", [t]
    if kind == "pem":
        body = [
            "MII9" + base64.b64encode(draw(st.binary(min_size=24, max_size=48))).decode() for _ in range(2)
        ]
        label = draw(st.sampled_from(["", "RSA ", "EC ", "OPENSSH ", "ENCRYPTED "]))
        pem = (
            f"-----BEGIN {label}PRIVATE KEY-----\n" + "\n".join(body) + f"\n-----END {label}PRIVATE KEY-----"
        )
        return pem, [b for b in body if len(b) >= 12]
    secret = "Kv9" + draw(token(10))
    return f"{draw(st.sampled_from(KV_NAMES))}{draw(st.sampled_from(KV_SEPARATORS))}{secret}", [secret]


@st.composite
def payloads(draw: st.DrawFn) -> tuple[Any, list[str]]:
    """Noise with secrets planted at random depths, some embedded in free text."""
    forbidden: list[str] = []
    items: list[Any] = []
    for _ in range(draw(st.integers(1, 4))):
        value, bad = draw(planted())
        forbidden += bad
        if isinstance(value, str) and draw(st.booleans()):
            value = f"{draw(st.text(TEXT, max_size=20))} {value} {draw(st.text(TEXT, max_size=20))}"
        for _ in range(draw(st.integers(0, 6))):
            value = [value] if draw(st.booleans()) else {draw(BENIGN_KEYS): value}
        items.append(value)
    return {"noise": draw(noise), "items": items, "more": draw(noise)}, forbidden


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(payloads())
def test_planted_secrets_never_survive(case: tuple[Any, list[str]]) -> None:
    """No planted secret (secret keys, JWTs, cards as text or digit arrays, URL passwords, bearer, vendor
    and AWS tokens, cookies, IBANs, PEM keys, ``name=``/``name is:`` pairs) reaches the output."""
    value, forbidden = case
    dumped = orjson.dumps(sanitize(value, POLICY)).decode()
    for bad in forbidden:
        assert bad not in dumped


@FAST
@given(payloads())
def test_small_caps_hold_and_stay_clean(case: tuple[Any, list[str]]) -> None:
    """With tight caps every limit holds, no control character survives, and no secret leaks."""
    value, forbidden = case
    out = sanitize(value, SMALL)
    assert_within_caps(out, SMALL)
    assert not any(ch in CONTROL for s in walk_strings(out) for ch in s)
    dumped = orjson.dumps(out).decode()
    assert not any(bad in dumped for bad in forbidden)


json_any = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(), st.binary(max_size=20)),
    lambda c: (
        st.lists(c, max_size=5)
        | st.dictionaries(st.one_of(st.text(max_size=10), st.integers()), c, max_size=5)
    ),
    max_leaves=30,
)


@FAST
@given(json_any)
def test_total_and_idempotent(value: Any) -> None:
    """Any JSON-like input sanitizes without raising, serializes, has no controls, and is a fixed point."""
    out = sanitize(value, POLICY)
    orjson.dumps(out)
    assert not any(ch in CONTROL for s in walk_strings(out) for ch in s)
    assert sanitize(out, POLICY) == out


def test_github_fine_grained_token_alone_is_scrubbed() -> None:
    """``github_pat_…`` holds no ``gh`` pair of letters: the cheap pre-check must still let it through
    to the vendor-token pass (a case hypothesis found)."""
    token = "github_pat_Vx9" + "0" * 34
    assert token not in orjson.dumps(sanitize({"items": [token]}, POLICY)).decode()
