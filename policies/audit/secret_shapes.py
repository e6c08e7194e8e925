"""Secrets recognisable by their shape in free text, for the audit-log sanitizer
(:mod:`policies.audit.redaction`): :func:`scrub_text` replaces each with a marker and keeps the text
around it.

Shapes: PEM private keys; JWTs; credentials in URLs (``scheme://user:pass@host``); ``bearer``/
``basic`` tokens; ``name=value`` / ``name: value`` / ``name is: value`` pairs whose name is a secret
(password, passphrase, secret, token, api/access/session key, security code, auth, pin, otp, cvc,
iban, key…); ``Cookie:``/``Set-Cookie:`` header values; vendor tokens (Stripe ``sk_live_…``,
GitHub ``ghp_…``/``github_pat_…``, Slack ``xoxb-…``, Google ``AIza…``, GitLab ``glpat-…``); AWS
access key ids and 40-character secret access keys; IBANs (mod-97 valid); Luhn-valid card numbers
written whole or in groups separated by spaces, ``-``, ``.`` or ``/``.

Cost: every pattern is precompiled, most are behind a cheap substring test, and none can
backtrack catastrophically (bounded repeats, possessive quantifiers, no nested unbounded groups).
"""

from __future__ import annotations

import re

REDACTED = "[REDACTED]"
REDACTED_CARD = "[REDACTED-CARD]"
REDACTED_JWT = "[REDACTED-JWT]"
REDACTED_KEY = "[REDACTED-PRIVATE-KEY]"

_PEM = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\Z)",
    re.DOTALL,
)
# The signature and payload parts are optional so a JWT cut by a length cap is still caught.
_JWT = re.compile(r"eyJ[A-Za-z0-9_\-]{5,}(?:\.[A-Za-z0-9_\-=]*){0,2}")
_BEARER = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=\-]{6,}")
# Greedy up to the last '@' of a whitespace-free run: passwords with '@' or '/' are common.
_URL_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.\-]{0,30}://)(\S{0,512})@")
# Long names match inside bigger words (dbPassword=, x_session_key:); short ones only on their own.
_KV_SECRET = re.compile(
    r"(?i)((?:password|passwd|passphrase|pwd|secret|token|api[_\-]?key|access[_\-]?key|client[_\-]?secret"
    r"|session[_\-]?(?:key|id)|security[_\-]?code|private[_\-]?key"
    r"|(?<![A-Za-z0-9])(?:auth|pin|otp|totp|cvc2?|cvv2?|iban|key))\b)"
    r"([\"']?\s*(?:[=:]|\bis\b\s*:?)\s*[\"']?)([^\"'\s;,&]+)"
)
_COOKIE = re.compile(r"(?i)\b((?:set-)?cookie)(\s*:\s*)([^\r\n]+)")
_VENDOR_TOKEN = re.compile(
    r"(?<![A-Za-z0-9])(?:(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{8,}|whsec_[0-9A-Za-z]{8,}"
    r"|gh[pousr]_[0-9A-Za-z]{20,}|github_pat_[0-9A-Za-z_]{20,}|xox[abposre]-[0-9A-Za-z\-]{8,}"
    r"|AIza[0-9A-Za-z_\-]{30,}|glpat-[0-9A-Za-z_\-]{20,})"
)
_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")
# A 40-character run of the base64 alphabet standing alone: an AWS secret access key if it mixes
# upper case, lower case and digits (a hex SHA-1 does not) — checked in _scrub_aws_secret.
_AWS_SECRET = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
_IBAN_HINT = re.compile(r"[A-Z]{2}\d{2}")
# A run of digit groups separated by single spaces, dashes, dots or slashes, not preceded by a
# letter. Possessive quantifiers and no trailing lookahead keep the scan linear on digit soups.
_DIGIT_RUN = re.compile(r"(?<![A-Za-z0-9])\d++(?:[ \-./]\d++)*+")
_SEPARATOR = re.compile(r"([ \-./])")
_THIRTEEN_DIGITS = re.compile(r"(?:\d[ \-./]?){12}\d")
_DIGIT = re.compile(r"\d")
# Every name _KV_SECRET knows holds one of these (lower case): texts without any skip that pass.
_KV_HINTS = ("pass", "pwd", "secret", "token", "key", "auth", "pin", "otp", "cvc", "cvv", "iban", "session",
             "security")


def luhn_ok(digits: str) -> bool:
    """The Luhn check every payment card number satisfies."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def is_card(digits: str) -> bool:
    """13–19 digits passing the Luhn check."""
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


def iban_ok(text: str) -> bool:
    """The ISO 13616 mod-97 check of an IBAN (spaces ignored)."""
    s = text.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    try:
        return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1
    except ValueError:
        return False


def _scrub_digit_run(m: re.Match[str]) -> str:
    run = m.group(0)
    glued = m.end() < len(m.string) and m.string[m.end()].isalnum()
    digits = re.sub(r"\D", "", run)
    if len(digits) < 13:
        return run
    parts = _SEPARATOR.split(run)
    values, seps = parts[0::2], parts[1::2]
    # Dots and slashes also write decimals and dates: only three or more groups make a card there.
    if not glued and is_card(digits) and (len(values) >= 3 or not any(s in "./" for s in seps)):
        return REDACTED_CARD
    # A longer run may hold a card among other numbers ("ref 12 4111 1111 1111 1111"): look for
    # consecutive groups that together form a valid card. A group glued to a letter is not one.
    usable = len(values) - 1 if glued else len(values)
    redact = [False] * len(values)
    for i in range(usable):
        n = 0
        for j in range(i, usable):
            n += len(values[j])
            if n > 19:
                break
            if j - i < 2 and any(s in "./" for s in seps[i:j]):
                continue
            if n >= 13 and is_card("".join(values[i : j + 1])):
                redact[i : j + 1] = [True] * (j + 1 - i)
    if not any(redact):
        return run
    out: list[str] = []
    for i, v in enumerate(values):
        if i > 0 and not (redact[i] and redact[i - 1]):
            out.append(seps[i - 1])
        if not redact[i]:
            out.append(v)
        elif i == 0 or not redact[i - 1]:
            out.append(REDACTED_CARD)
    return "".join(out)


def _scrub_userinfo(m: re.Match[str]) -> str:
    userinfo = m.group(2)
    # Only userinfo carrying a password is a secret; a bare "user@" is left (and already-redacted
    # text is left as it is, which keeps sanitize idempotent).
    if ":" not in userinfo or userinfo == REDACTED:
        return m.group(0)
    return f"{m.group(1)}{REDACTED}@"


def _scrub_aws_secret(m: re.Match[str]) -> str:
    s = m.group(0)
    if any(c.isupper() for c in s) and any(c.islower() for c in s) and any(c.isdigit() for c in s):
        return REDACTED
    return s


def _scrub_iban(m: re.Match[str]) -> str:
    return REDACTED if iban_ok(m.group(0)) else m.group(0)


def _kv(m: re.Match[str]) -> str:
    return f"{m.group(1)}{m.group(2)}{REDACTED}"


def scrub_text(text: str) -> str:
    """Remove secrets that can be recognised by their shape, wherever they sit in ``text``."""
    # Cheap substring tests first: most strings hold none of these and skip the regex passes.
    if "PRIVATE KEY" in text:
        text = _PEM.sub(REDACTED_KEY, text)
    if "eyJ" in text:
        text = _JWT.sub(REDACTED_JWT, text)
    if "://" in text:
        text = _URL_USERINFO.sub(_scrub_userinfo, text)
    if " " in text or "\t" in text or "\n" in text:
        text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    if ("ookie" in text or "OOKIE" in text) and ":" in text:
        text = _COOKIE.sub(_kv, text)
    has_digit = _DIGIT.search(text) is not None  # IBANs, AWS secrets and cards all hold digits
    if has_digit and _IBAN_HINT.search(text):  # before the pairs: "iban: DE89 3704 …" goes whole
        text = _IBAN.sub(_scrub_iban, text)
    if "=" in text or ":" in text or " is" in text or " IS" in text:
        low = text.lower()
        if any(h in low for h in _KV_HINTS):
            text = _KV_SECRET.sub(_kv, text)
    if ("_live_" in text or "_test_" in text or "whsec_" in text or "gh" in text or "github_pat_" in text
            or "xox" in text
            or "AIza" in text or "glpat-" in text):
        text = _VENDOR_TOKEN.sub(REDACTED, text)
    if "AKIA" in text or "ASIA" in text:
        text = _AWS_KEY_ID.sub(REDACTED, text)
    if has_digit and len(text) >= 40:
        text = _AWS_SECRET.sub(_scrub_aws_secret, text)
    if has_digit and _THIRTEEN_DIGITS.search(text):
        text = _DIGIT_RUN.sub(_scrub_digit_run, text)
    return text


def digits_form_card(items: list[object] | tuple[object, ...]) -> bool:
    """A card number sent as an array: 2–19 small non-negative integers or digit strings whose
    digits, joined, are a Luhn-valid 13–19 digit number (``[4111, 1111, 1111, 1111]``)."""
    if not 2 <= len(items) <= 19:
        return False
    parts: list[str] = []
    for x in items:
        if isinstance(x, bool):
            return False
        if isinstance(x, int):
            if not 0 <= x <= 9999:
                return False
            parts.append(str(x))
        elif isinstance(x, str):
            if not (1 <= len(x) <= 6 and x.isascii() and x.isdigit()):
                return False
            parts.append(x)
        else:
            return False
    return is_card("".join(parts))


__all__ = [
    "REDACTED", "REDACTED_CARD", "REDACTED_JWT", "REDACTED_KEY", "digits_form_card", "iban_ok", "is_card",
    "luhn_ok", "scrub_text",
]
