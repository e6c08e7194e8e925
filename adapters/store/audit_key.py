"""The audit chain's HMAC key: a secret that is never stored in the database it protects.

Where it comes from, first found wins: ``SFA_OPS_AUDIT_KEY`` (the key itself, ≥ 32 characters),
the file named by ``--audit-key-file`` / ``SFA_OPS_AUDIT_KEY_FILE``, else ``var/audit.key``.
:func:`load_audit_key` with ``create=True`` (operate does this) generates the default file
(32 random bytes as hex, mode 0600) on first use; an explicitly named file must exist. Keep the
key out of the database's backups: whoever holds both can rewrite the chain undetected.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from adapters.store.base import StoreConfigError

__all__ = ["DEFAULT_KEY_FILE", "ENV_KEY", "ENV_KEY_FILE", "load_audit_key"]

ENV_KEY = "SFA_OPS_AUDIT_KEY"
ENV_KEY_FILE = "SFA_OPS_AUDIT_KEY_FILE"
DEFAULT_KEY_FILE = "var/audit.key"
_MIN_LEN = 32


def load_audit_key(path: str | None = None, *, env: Mapping[str, str] | None = None,
                   create: bool = False) -> tuple[bytes | None, str]:
    """(the key or None, where it came from). Raises StoreConfigError for a short key or a named
    file that is missing, unreadable or short."""
    env = os.environ if env is None else env
    direct = env.get(ENV_KEY)
    if direct:
        if len(direct) < _MIN_LEN:
            raise StoreConfigError(f"{ENV_KEY} must hold at least {_MIN_LEN} characters")
        return direct.encode(), ENV_KEY
    named = path or env.get(ENV_KEY_FILE)
    target = Path(named or DEFAULT_KEY_FILE)
    if not target.exists():
        if named:
            raise StoreConfigError(f"audit key file {str(target)!r} does not exist")
        if not create:
            return None, "none"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first: use theirs
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
    try:
        key = target.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreConfigError(f"audit key file {str(target)!r} cannot be read: {type(exc).__name__}") from exc
    if len(key) < _MIN_LEN:
        raise StoreConfigError(f"audit key file {str(target)!r} must hold at least {_MIN_LEN} characters")
    return key.encode(), str(target.resolve())
