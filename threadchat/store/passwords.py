"""Password hashing with scrypt (memory-hard), parameters stored with each hash.

Encoded form: ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>``. Because the cost parameters travel
with the hash, they can be raised later: old hashes still verify, and needs_rehash() tells the
caller to store a fresh hash after the next successful login.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

# Cost parameters for new hashes. n=2**14, r=8 needs 128*n*r = 16 MiB and ~50 ms of one core per
# hash: slow enough to make offline guessing expensive, cheap enough for interactive logins.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
# A fresh random salt per account defeats precomputed tables and hides equal passwords.
SALT_BYTES = 16
HASH_BYTES = 32
# Refuse to evaluate stored parameters needing more memory than this: a tampered or corrupt
# database must not make a login exhaust the server's memory.
MAX_SCRYPT_MEMORY = 256 * 1024 * 1024
# A password longer than this is refused outright: nobody types more, and it bounds the input a
# client can push into the KDF.
MAX_PASSWORD_BYTES = 1024

_SCHEME = "scrypt"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _derive(password: bytes, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    needed = 128 * n * r * p + 1024 * 1024
    if needed > MAX_SCRYPT_MEMORY:
        raise ValueError("scrypt parameters exceed the memory bound")
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=needed, dklen=length)


def _encode_password(password: str) -> bytes:
    raw = password.encode("utf-8")
    if len(raw) > MAX_PASSWORD_BYTES:
        raise ValueError(f"password longer than {MAX_PASSWORD_BYTES} bytes")
    return raw


def hash_password(password: str) -> str:
    """Return the encoded scrypt hash of `password` with a new random salt.

    Raises ValueError if the password is empty or longer than MAX_PASSWORD_BYTES.
    """
    if not password:
        raise ValueError("empty password")
    salt = os.urandom(SALT_BYTES)
    digest = _derive(_encode_password(password), salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, HASH_BYTES)
    return "$".join(
        (_SCHEME, str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest))
    )


def verify_password(password: str, encoded: str) -> bool:
    """True iff `password` matches `encoded`. Never raises for a malformed hash (returns False)."""
    try:
        scheme, n_s, r_s, p_s, salt_s, digest_s = encoded.split("$")
        if scheme != _SCHEME:
            return False
        salt = base64.b64decode(salt_s, validate=True)
        expected = base64.b64decode(digest_s, validate=True)
        actual = _derive(_encode_password(password), salt, int(n_s), int(r_s), int(p_s),
                         len(expected))  # fmt: skip
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def needs_rehash(encoded: str) -> bool:
    """True if `encoded` was made with other parameters than the current ones."""
    parts = encoded.split("$")
    return len(parts) != 6 or parts[:4] != [_SCHEME, str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P)]


# Verified against when an account does not exist, so that a login for an unknown name takes
# as long as one for a known name (no account enumeration by timing). Computed lazily.
_dummy_hash: str | None = None


def burn_time(password: str) -> None:
    """Spend the time of one verification; returns nothing (for unknown accounts)."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = hash_password("not a real password")
    verify_password(password, _dummy_hash)
