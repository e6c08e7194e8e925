"""The audit-log sanitizer: what may be written about a call, a result or a query.

``sanitize(value, policy)`` turns any JSON-like value into one that is safe to store and to print:

- keys naming secrets (``password``, ``apiKey``, ``Set-Cookie``, ``client_secret``, card fields, …;
  matched case-insensitively after dropping ``-``, ``_``, spaces and dots, so ``api_key``,
  ``API-Key`` and ``apiKey`` are one key) have their whole value replaced by ``[REDACTED]``;
- keys naming personal data (``email``, ``phone``, …) have every scalar under them masked
  (``j***@example.com``, ``***4567``);
- text anywhere (values and keys) is scrubbed of secrets recognisable by their shape (JWTs, card
  numbers, IBANs, credentials in URLs, ``password=…``/``password is: …`` pairs, ``Cookie:`` values,
  bearer/basic and vendor tokens, PEM private keys, AWS keys; see :mod:`policies.audit.secret_shapes`),
  and a list of digits or digit groups that spells a card number becomes ``[REDACTED-CARD]``;
- control characters (CR, LF, tab, NUL, C1, U+2028/2029) become visible escapes (``\\n``), so a
  log line cannot be forged by a value;
- size caps hold: string length, items per list/dict, depth and total serialized bytes; what is
  cut is replaced by a marker that says so.

It is total: any input (non-str keys, cycles, huge ints, bytes, foreign objects, deep nesting)
yields a value ``orjson.dumps`` accepts, and it never raises. Applying it twice changes nothing
as long as no size cap was hit; a capped result re-sanitized stays within the caps and clean.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from itertools import islice
from typing import Any

import orjson
from pydantic import Field, PrivateAttr, field_validator

from policies.audit.secret_shapes import (
    REDACTED,
    REDACTED_CARD,
    digits_form_card,
    is_card,
    scrub_text,
)
from policies.common.config import PolicyModel

MAX_DEPTH_MARKER = "[max depth reached]"
SIZE_MARKER_KEY = "_truncated"
_MORE_KEY = "_moreKeys"
# Bytes kept back from the budget so the size marker itself always fits.
_MARKER_RESERVE = 64
# Text scanned beyond the length cap, so a secret straddling the cut is still recognised whole.
_SCAN_MARGIN = 8192


_KEY_DROP = str.maketrans("", "", " \t\r\n_-.")
_KEY_CACHE_SIZE = 4096


def normalise_key(key: str) -> str:
    """``API-Key``, ``api_key`` and ``apiKey`` → ``apikey`` (the form key lists are matched in)."""
    return key.translate(_KEY_DROP).lower()


_DEFAULT_SECRET_KEYS = """
    password passwd pwd pass passphrase secret token accesstoken refreshtoken idtoken clientsecret authorization
    proxyauthorization auth apikey xapikey key privkey cookie setcookie privatekey sessionkey sessionid
    cardnumber creditcard creditcardnumber ccnumber cvv cvc cvv2 cvc2 securitycode pan ssn
    socialsecuritynumber pin pincode userpin cardpin otp totp otpcode mfacode iban
"""
_DEFAULT_SECRET_FRAGMENTS = (
    "password passwd passphrase secret token apikey privatekey authorization credential cookie cardnumber "
    "creditcard sessionkey securitycode iban"
)
_DEFAULT_PERSONAL_KEYS = """
    email emailaddress phone phonenumber mobile dateofbirth dob birthdate address streetaddress postcode zipcode
"""


class RedactionPolicy(PolicyModel):
    """What to redact and how much to keep (section ``redaction`` of ``compliance.yaml``)."""

    secret_keys: frozenset[str] = Field(
        default=frozenset(_DEFAULT_SECRET_KEYS.split()),
        description="normalised keys whose value is always redacted",
    )
    secret_key_fragments: tuple[str, ...] = Field(
        default=tuple(_DEFAULT_SECRET_FRAGMENTS.split()),
        description="a normalised key containing any of these is a secret key (dbPassword, xAuthToken)",
    )
    personal_keys: frozenset[str] = Field(
        default=frozenset(_DEFAULT_PERSONAL_KEYS.split()),
        description="normalised keys whose scalar values are masked",
    )
    max_string_length: int = Field(default=2048, ge=32)
    max_key_length: int = Field(default=128, ge=32)
    max_items: int = Field(default=200, ge=2, description="per list or mapping")
    max_depth: int = Field(default=16, ge=1, le=200)
    max_total_bytes: int = Field(default=65536, ge=256, description="of the orjson-serialized result")

    @field_validator("secret_keys", "personal_keys", mode="after")
    @classmethod
    def _normalise_set(cls, v: frozenset[str]) -> frozenset[str]:
        return frozenset(normalise_key(k) for k in v)

    @field_validator("secret_key_fragments", mode="after")
    @classmethod
    def _normalise_tuple(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(normalise_key(k) for k in v if normalise_key(k))

    # Payloads repeat the same few keys; remembering their verdict saves most of the work. Bounded,
    # because keys are attacker-controlled.
    _verdicts: dict[str, tuple[bool, bool]] = PrivateAttr(default_factory=dict)

    def verdict_cache(self) -> dict[str, tuple[bool, bool]]:
        """The bounded memo of key verdicts (fetched once per sanitize call: private attributes of
        pydantic models are slow to reach)."""
        return self._verdicts

    def key_verdict(self, key: str, cache: dict[str, tuple[bool, bool]] | None = None) -> tuple[bool, bool]:
        """(is a secret key, is a personal-data key) for ``key``."""
        memo = self._verdicts if cache is None else cache
        hit = memo.get(key)
        if hit is None:
            n = normalise_key(key)
            hit = (
                n in self.secret_keys or any(f in n for f in self.secret_key_fragments),
                n in self.personal_keys,
            )
            if len(memo) >= _KEY_CACHE_SIZE:
                memo.clear()
            memo[key] = hit
        return hit

    def is_secret_key(self, key: str) -> bool:
        """True if a value under ``key`` must be redacted whole."""
        return self.key_verdict(key)[0]

    def is_personal_key(self, key: str) -> bool:
        """True if scalars under ``key`` are personal data to mask."""
        return self.key_verdict(key)[1]


# --- text -----------------------------------------------------------------------------------------

# Lone surrogates are escaped too: they are not valid UTF-8 and orjson refuses them.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def neutralise_controls(text: str) -> str:
    """CR/LF and every other control character → visible escape text (``\\n``, ``\\x1b``)."""

    def esc(m: re.Match[str]) -> str:
        c = m.group(0)
        if c in _ESCAPES:
            return _ESCAPES[c]
        return f"\\u{ord(c):04x}" if ord(c) > 0xFF else f"\\x{ord(c):02x}"

    return _CONTROL.sub(esc, text)


def _cap(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    marker = f"...[truncated {len(text) - limit} chars]"
    marker = f"...[truncated {len(text) - (limit - len(marker))} chars]"
    return text[: max(0, limit - len(marker))] + marker


def clean_text(text: str, limit: int) -> str:
    """Scrub, neutralise and cap one string (the order matters: secrets are found before a cut)."""
    scanned = text[: limit + _SCAN_MARGIN]
    dropped = len(text) - len(scanned)
    out = neutralise_controls(scrub_text(scanned))
    if dropped:
        # The true length is unknown after scrubbing; say how much was never looked at.
        marker = f"...[truncated, {dropped}+ chars]"
        return out[: max(0, limit - len(marker))] + marker
    return _cap(out, limit)


def mask_personal(text: str) -> str:
    """``jane@example.com`` → ``j***@example.com``; other values keep at most their last 2 chars."""
    if text.startswith("***"):
        return text
    local, at, domain = text.partition("@")
    if at and local and domain:
        return f"{local[0]}***@{domain}"
    return "***" + (text[-2:] if len(text) >= 8 else "")


# --- the walk -------------------------------------------------------------------------------------


class _Walk:
    """One sanitize call: the policy and the remaining byte budget of the serialized result."""

    def __init__(self, policy: RedactionPolicy) -> None:
        self.p = policy
        self.verdicts = policy.verdict_cache()
        self.budget = policy.max_total_bytes - _MARKER_RESERVE
        self.exhausted = False

    def charge(self, n: int) -> bool:
        """Spend ``n`` bytes; once one item does not fit, nothing more is added anywhere."""
        if self.exhausted or n > self.budget:
            self.exhausted = True
            return False
        self.budget -= n
        return True

    def text(self, s: str, personal: bool) -> str:
        limit = self.p.max_string_length
        out = clean_text(s, limit)
        return clean_text(mask_personal(out), limit) if personal else out

    def scalar(self, v: Any, personal: bool) -> Any:
        if v is None or isinstance(v, bool):
            return v
        if isinstance(v, int):
            if v.bit_length() > 4000:  # str() of a huge int raises; orjson refuses > 64 bits
                return "[integer too large]"
            if personal:
                return mask_personal(str(v))
            if v.bit_length() > 63:
                return self.text(str(v), personal)
            if 10**12 <= abs(v) < 10**19 and is_card(str(abs(v))):
                return REDACTED_CARD
            return v
        if isinstance(v, float):
            if personal:
                return "***"
            return v if math.isfinite(v) else str(v)
        if isinstance(v, str):
            return self.text(v, personal)
        if isinstance(v, bytes | bytearray | memoryview):
            raw = bytes(v[: self.p.max_string_length + _SCAN_MARGIN])
            return self.text(raw.decode("utf-8", "replace"), personal)
        try:
            s = str(v)
        except Exception:
            return f"[unrepresentable {type(v).__name__}]"
        return self.text(s, personal)

    def key(self, k: Any) -> tuple[str, str]:
        """(raw text for matching against key lists, cleaned text to store)."""
        try:
            raw = k if isinstance(k, str) else str(k)
        except Exception:
            raw = f"[unrepresentable {type(k).__name__}]"
        return raw, clean_text(raw, self.p.max_key_length)

    def value(self, v: Any, depth: int, personal: bool) -> Any:
        if isinstance(v, Mapping):
            return self.mapping(v, depth, personal)
        if isinstance(v, list | tuple | set | frozenset):
            if isinstance(v, list | tuple) and 2 <= len(v) <= 19 and digits_form_card(v):
                return REDACTED_CARD if self.charge(len(REDACTED_CARD) + 3) else None
            return self.sequence(v, depth, personal)
        out = self.scalar(v, personal)
        return out if self.charge(len(orjson.dumps(out)) + 1) else None

    def container_open(self, depth: int) -> bool | str | None:
        if depth >= self.p.max_depth:
            return MAX_DEPTH_MARKER if self.charge(len(MAX_DEPTH_MARKER) + 3) else None
        return self.charge(2)

    def mapping(self, m: Mapping[Any, Any], depth: int, personal: bool) -> Any:
        opened = self.container_open(depth)
        if opened is not True:
            return opened or None
        out: dict[str, Any] = {}
        limit = self.p.max_items
        n = len(m)
        for i, (k, v) in enumerate(islice(m.items(), limit)):
            if i == limit - 1 and n > limit:
                note = f"[{n - i} more keys]"
                if self.charge(len(note) + len(_MORE_KEY) + 6):
                    out[_MORE_KEY] = note
                break
            raw, key = self.key(k)
            if key in out:  # two raw keys cleaned to the same text: keep both
                key = clean_text(f"{key}~{i}", self.p.max_key_length)
            if not self.charge(len(orjson.dumps(key)) + 1):
                break
            secret, personal_key = self.p.key_verdict(raw, self.verdicts)
            if secret or (key != raw and self.p.key_verdict(key, self.verdicts)[0]):
                child: Any = REDACTED if self.charge(len(REDACTED) + 3) else None
            else:
                child = self.value(v, depth + 1, personal or personal_key)
            if self.exhausted and child is None:
                break
            out[key] = child
        return out

    def sequence(self, seq: Any, depth: int, personal: bool) -> Any:
        opened = self.container_open(depth)
        if opened is not True:
            return opened or None
        out: list[Any] = []
        limit = self.p.max_items
        n = len(seq)
        for i, v in enumerate(islice(seq, limit)):
            if i == limit - 1 and n > limit:
                note = f"[{n - i} more items]"
                if self.charge(len(note) + 3):
                    out.append(note)
                break
            child = self.value(v, depth + 1, personal)
            if self.exhausted and child is None:
                break
            out.append(child)
        return out


def sanitize(value: Any, policy: RedactionPolicy) -> Any:
    """Return a copy of ``value`` safe for the audit log (see the module docstring). Never raises."""
    walk = _Walk(policy)
    try:
        out = walk.value(value, 0, False)
    except RecursionError:
        return MAX_DEPTH_MARKER
    except Exception as exc:  # the sanitizer must never take the audit path down with it
        return f"[unsanitizable {type(exc).__name__}]"
    if walk.exhausted:
        marker = f"size cap {policy.max_total_bytes} bytes reached"
        if isinstance(out, dict):
            out[SIZE_MARKER_KEY] = marker
        elif isinstance(out, list):
            out.append(f"[{marker}]")
        elif out is None:
            out = f"[{marker}]"
    return out


__all__ = ["RedactionPolicy", "clean_text", "mask_personal", "neutralise_controls", "normalise_key", "sanitize"]
