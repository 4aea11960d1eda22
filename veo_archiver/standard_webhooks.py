"""A verifier for Standard Webhooks signatures (https://www.standardwebhooks.com). Pure.

Headers ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` (any case; Svix's ``svix-`` names
are read when no ``webhook-signature`` is present). The signed content is ``{id}.{timestamp}.{body}`` over
the raw body bytes. The signature header is a space-separated list of ``<version>,<base64>`` entries
(several during a rotation); any entry verified by any configured secret or key is enough:

- ``v1``:  HMAC-SHA256 with a shared secret, configured as ``whsec_<base64>``;
- ``v1a``: ed25519, configured as the sender's public key ``whpk_<base64 of the raw 32 bytes>``.

Secret formats (checked once at startup by :func:`parse_secrets`, which raises :class:`ConfigError`):
an unprefixed secret is read as the base64 after ``whsec_``, as every reference library does, so
``whsec_X`` and ``X`` are the same key; it is never taken as raw text, which would silently sign
differently. Base64 padding may be omitted, surrounding whitespace is ignored, and a secret key must hold
at least 24 bytes (the spec's minimum). A ``whsk_`` private key is refused: the receiver only needs the
public half.

Unlike the reference library, every malformed input (missing comma, bad base64, unknown version, absurd
timestamp) ends in one :class:`Rejected` with a ``reason``, never ``ValueError``/``binascii.Error``, and the
clock is a parameter. Order: headers present, timestamp well formed and fresh, then signatures. Unknown
versions are skipped; when no entry is in a version we understand, the answer is ``signature_malformed``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from veo_archiver.errors import ConfigError, Rejected
from veo_archiver.payload import header_value, hmac_sha256

HEADER_PREFIXES = ("webhook-", "svix-")
#: each family's (id, timestamp, signature) header names
_HEADER_NAMES = {prefix: (f"{prefix}id", f"{prefix}timestamp", f"{prefix}signature") for prefix in HEADER_PREFIXES}
SECRET_PREFIX = "whsec_"  # noqa: S105 (a format marker, not a secret)
PUBLIC_KEY_PREFIX = "whpk_"
PRIVATE_KEY_PREFIX = "whsk_"
HMAC_VERSION = "v1"
ED25519_VERSION = "v1a"
MIN_SECRET_BYTES = 24
#: rotation needs two or three entries; the cap bounds the ed25519 work one request can ask for
MAX_SIGNATURES = 16

_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_HMAC_SIZE = hashlib.sha256().digest_size
_ED25519_KEY_SIZE = 32
_ED25519_SIG_SIZE = 64


@dataclass(frozen=True)
class Keyring:
    """Parsed verification secrets: HMAC keys for ``v1``, ed25519 public keys for ``v1a``."""

    hmac_keys: tuple[bytes, ...] = field(default=(), repr=False)
    public_keys: tuple[Ed25519PublicKey, ...] = field(default=(), repr=False)

    def __repr__(self) -> str:
        return f"Keyring({len(self.hmac_keys)} whsec_ secret(s), {len(self.public_keys)} whpk_ key(s))"


def _b64decode(text: str) -> bytes | None:
    """Standard base64 with optional padding; ``None`` for anything else."""
    if "=" not in text:
        text += "=" * (-len(text) % 4)
    if not text or len(text) % 4 or not _B64.fullmatch(text):
        return None
    try:  # base64.b64decode(validate=True) without its Python wrappers: the same strict decoding, in C
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        return None


def _hmac_key(secret: str) -> bytes:
    key = _b64decode(secret.strip().removeprefix(SECRET_PREFIX))
    if key is None:
        raise ConfigError("a v1 secret is not whsec_<base64>")
    if len(key) < MIN_SECRET_BYTES:
        raise ConfigError(f"a v1 secret holds {len(key)} bytes; the spec requires at least {MIN_SECRET_BYTES}")
    return key


def _public_key(secret: str) -> Ed25519PublicKey:
    raw = _b64decode(secret.strip().removeprefix(PUBLIC_KEY_PREFIX))
    if raw is None or len(raw) != _ED25519_KEY_SIZE:
        raise ConfigError("a v1a public key is not whpk_<base64 of 32 bytes>")
    return Ed25519PublicKey.from_public_bytes(raw)


def _private_key(private_key_whsk: str) -> Ed25519PrivateKey:
    raw = _b64decode(private_key_whsk.strip().removeprefix(PRIVATE_KEY_PREFIX))
    if raw is None or len(raw) != _ED25519_KEY_SIZE:
        raise ConfigError("a v1a private key is not whsk_<base64 of a 32-byte seed>")
    return Ed25519PrivateKey.from_private_bytes(raw)


def parse_secrets(secrets: Sequence[str]) -> Keyring:
    """Validate the operator's secrets once, at startup: :class:`ConfigError` names the first bad one."""
    if isinstance(secrets, str):  # a lone string would be read as one-character secrets
        raise ConfigError("Standard Webhooks secrets must be a list of strings, not one string")
    if not secrets:
        raise ConfigError("no Standard Webhooks secret configured (expected whsec_… or whpk_…)")
    hmac_keys: list[bytes] = []
    public_keys: list[Ed25519PublicKey] = []
    for position, secret in enumerate(secrets, 1):
        text = secret.strip()
        try:  # messages name the position and the kind, never any character of the secret
            if text.startswith(PRIVATE_KEY_PREFIX):
                raise ConfigError("a whsk_ private key: give the receiver the sender's whpk_ public key")
            if text.startswith(PUBLIC_KEY_PREFIX):
                public_keys.append(_public_key(text))
            else:
                hmac_keys.append(_hmac_key(text))
        except ConfigError as exc:
            raise ConfigError(f"Standard Webhooks secret #{position} of {len(secrets)}: {exc.message}") from None
    return Keyring(hmac_keys=tuple(hmac_keys), public_keys=tuple(public_keys))


def _signed_content(msg_id: str, timestamp: int | str, body: bytes) -> bytes:
    return f"{msg_id}.{timestamp}.".encode("utf-8", "surrogatepass") + body


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` HMAC signature a sender puts in ``webhook-signature`` (tests, simulator)."""
    mac = hmac.new(_hmac_key(secret), _signed_content(msg_id, timestamp, body), hashlib.sha256).digest()
    return f"{HMAC_VERSION},{base64.b64encode(mac).decode('ascii')}"


def sign_ed25519(private_key_whsk: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1a,<base64>`` ed25519 signature of a sender holding ``whsk_<base64 seed>``."""
    signature = _private_key(private_key_whsk).sign(_signed_content(msg_id, timestamp, body))
    return f"{ED25519_VERSION},{base64.b64encode(signature).decode('ascii')}"


def generate_ed25519_keypair() -> tuple[str, str]:
    """A fresh ``(whsk_…, whpk_…)`` pair: the seed for the sender, the public key for the receiver."""
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes_raw()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return (
        PRIVATE_KEY_PREFIX + base64.b64encode(seed).decode("ascii"),
        PUBLIC_KEY_PREFIX + base64.b64encode(public).decode("ascii"),
    )


def _headers(headers: Mapping[str, str]) -> tuple[str, str, str, str]:
    """``(prefix, id, timestamp, signatures)``, one family: ``webhook-`` unless only ``svix-`` is there."""
    prefix = HEADER_PREFIXES[0]
    for candidate in HEADER_PREFIXES:
        if header_value(headers, _HEADER_NAMES[candidate][2]) is not None:
            prefix = candidate
            break
    names = _HEADER_NAMES[prefix]
    msg_id = (header_value(headers, names[0]) or "").strip()
    timestamp = (header_value(headers, names[1]) or "").strip()
    signatures = (header_value(headers, names[2]) or "").strip()
    if not (msg_id and timestamp and signatures):
        missing = [name for name, value in zip(names, (msg_id, timestamp, signatures), strict=True) if not value]
        raise Rejected(f"missing Standard Webhooks header(s): {', '.join(missing)}", reason="signature_missing")
    return prefix, msg_id, timestamp, signatures


def _check_fresh(prefix: str, ts_text: str, now: float, tolerance_s: int) -> None:
    """The timestamp header is Unix seconds within ``tolerance_s`` of ``now``, or :class:`Rejected`."""
    if not _TIMESTAMP.fullmatch(ts_text):
        raise Rejected(f"{prefix}timestamp is not a Unix time in seconds", reason="timestamp_malformed")
    ts = int(ts_text)
    if ts < now - tolerance_s:
        raise Rejected(f"stale timestamp: {now - ts:.0f} s old (tolerance {tolerance_s} s)", reason="timestamp_stale")
    if ts > now + tolerance_s:
        raise Rejected(
            f"timestamp {ts - now:.0f} s in the future (tolerance {tolerance_s} s)",
            reason="timestamp_future",
        )


def _signatures(prefix: str, signature_header: str) -> tuple[list[bytes], list[bytes]]:
    """The well-formed ``v1`` (HMAC) and ``v1a`` (Ed25519) signatures of the header; :class:`Rejected` if none."""
    entries = signature_header.split()
    if len(entries) > MAX_SIGNATURES:
        raise Rejected(
            f"{prefix}signature holds {len(entries)} entries (at most {MAX_SIGNATURES} are read)",
            reason="signature_malformed",
        )
    hmac_sigs: list[bytes] = []
    ed25519_sigs: list[bytes] = []
    for entry in entries:
        version, comma, encoded = entry.partition(",")
        if not comma:
            continue
        raw = _b64decode(encoded)
        if version == HMAC_VERSION and raw is not None and len(raw) == _HMAC_SIZE:
            hmac_sigs.append(raw)
        elif version == ED25519_VERSION and raw is not None and len(raw) == _ED25519_SIG_SIZE:
            ed25519_sigs.append(raw)
    if not hmac_sigs and not ed25519_sigs:
        raise Rejected(
            f"{prefix}signature has no well-formed {HMAC_VERSION} or {ED25519_VERSION} entry",
            reason="signature_malformed",
        )
    return hmac_sigs, ed25519_sigs


def verify(
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[str] | Keyring,
    *,
    now: float,
    tolerance_s: int = 300,
) -> str:
    """Return the verified ``webhook-id`` (the sender's idempotency key), or raise :class:`Rejected`.

    ``secrets`` is best a :class:`Keyring` from :func:`parse_secrets` at startup; raw strings are parsed
    here and a bad one raises :class:`ConfigError`.
    """
    if not math.isfinite(now):  # a NaN clock would pass every freshness comparison: fail closed
        raise ConfigError(f"the clock gave a non-finite time: {now}")
    keyring = secrets if isinstance(secrets, Keyring) else parse_secrets(secrets)
    prefix, msg_id, ts_text, signature_header = _headers(headers)

    _check_fresh(prefix, ts_text, now, tolerance_s)
    hmac_sigs, ed25519_sigs = _signatures(prefix, signature_header)

    content = _signed_content(msg_id, ts_text, body)
    matched = False
    # Every secret and every entry is tried, no early exit: timing tells nothing about which one matched.
    for key in keyring.hmac_keys:
        expected = hmac_sha256(key, content)
        for given in hmac_sigs:
            matched |= hmac.compare_digest(expected, given)
    for public_key in keyring.public_keys:
        for given in ed25519_sigs:
            try:
                public_key.verify(given, content)
            except InvalidSignature:
                continue
            matched = True
    if not matched:
        raise Rejected(
            f"no signature matches a configured secret (header: {len(hmac_sigs)} {HMAC_VERSION}, "
            f"{len(ed25519_sigs)} {ED25519_VERSION}; configured: {len(keyring.hmac_keys)} whsec_, "
            f"{len(keyring.public_keys)} whpk_)",
            reason="signature_mismatch",
        )
    return msg_id
