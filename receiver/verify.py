"""Per-provider verification policy: which proofs a callback must carry, decided by the settings.

Pure: headers + query + raw bytes + clock in, a verified :class:`TaskEvent` or one :class:`RequestError`
out. Missing proof is refused (401) before the body is decoded whenever the proof lives outside the body;
the body is decoded only as far as needed to find a signed field; nothing in it is trusted until a proof
matched.

- kie.ai: its HMAC headers (when ``KIE_WEBHOOK_HMAC_KEYS`` is set) or our callback-URL token; unsigned only
  when the operator allows it.
- APIXO, useapi.net, EvoLink sign nothing: our callback-URL token (query ``token``; for useapi.net also
  ``replyRef``), unless the operator opened the provider (``OPEN_PROVIDERS``).
- Standard Webhooks sources: the spec's signature headers with the source's secrets.

Before any proof is checked, a proof header sent more than once is refused (400 ``duplicate_header``):
otherwise one value would be verified and another stored. After parsing, an event with more result URLs
than ``MAX_RESULT_URLS`` (``too_many_urls``) or a task id over
:data:`~veo_archiver.archive_keys.MAX_TASK_ID_CHARS` characters (``task_id_too_long``) is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from receiver import tokens
from veo_archiver import standard_webhooks
from veo_archiver.archive_keys import MAX_TASK_ID_CHARS
from veo_archiver.errors import ConfigError, InvalidPayload, Rejected
from veo_archiver.event import TaskEvent, Verification
from veo_archiver.payload import decode_json_object
from veo_archiver.providers import REGISTRY, kie, standard
from veo_archiver.providers.base import no_body_proof
from veo_archiver.settings import Settings
from veo_archiver.urls import check_url_count

#: kie.ai's proof headers: one value each, whatever the values
KIE_PROOF_HEADERS = (kie.TIMESTAMP_HEADER, kie.SIGNATURE_HEADER)
#: Standard Webhooks' (and Svix's) proof headers: repeats with different values are refused
STANDARD_PROOF_HEADERS = tuple(
    f"{prefix}{name}" for prefix in standard_webhooks.HEADER_PREFIXES for name in ("id", "timestamp", "signature")
)


def _values(headers: Mapping[str, str], names: tuple[str, ...]) -> dict[str, list[str]]:
    """Every value of each header in ``names`` (lower case), in the order of ``names``.

    Starlette's ``Headers`` and the receiver's ``RequestHeaders`` keep repeats (``getlist``); a plain mapping
    holds each key once, but keys differing only in case are the same header: one pass over its items
    collects every name at once.
    """
    getlist = getattr(headers, "getlist", None)
    if callable(getlist):
        return {name: list(getlist(name)) for name in names}
    found: dict[str, list[str]] = {name: [] for name in names}
    for key, value in headers.items():
        bucket = found.get(key.lower())
        if bucket is not None:
            bucket.append(value)
    return found


def require_single_values(headers: Mapping[str, str], names: tuple[str, ...], *, distinct_only: bool) -> None:
    """Refuse a request carrying one of ``names`` twice (``distinct_only``: twice with different values)."""
    for name, values in _values(headers, names).items():
        if len(set(values) if distinct_only else values) > 1:
            raise InvalidPayload(f"header {name} sent {len(values)} times: send it once", reason="duplicate_header")


def check_event(settings: Settings, event: TaskEvent) -> TaskEvent:
    """Limits on a parsed event that the provider modules leave to the settings."""
    if len(event.task_id) > MAX_TASK_ID_CHARS:
        raise InvalidPayload(
            f"task id of {len(event.task_id)} characters, more than {MAX_TASK_ID_CHARS}", reason="task_id_too_long"
        )
    check_url_count(event.result_urls, settings.max_result_urls)
    return event


def _require_token(settings: Settings, provider: str, token: str | None, *, now: float) -> None:
    if not settings.callback_signing_keys:
        raise Rejected(
            f"{provider} callbacks carry no signature and this receiver has no CALLBACK_SIGNING_KEYS to check a "
            "callback-URL token against",
            reason="unsigned_refused",
        )
    tokens.verify(token, provider, settings.callback_signing_keys, now=now)


def verify_kie(
    settings: Settings, headers: Mapping[str, str], body: bytes, *, now: float, query: Mapping[str, str] | None = None
) -> TaskEvent:
    require_single_values(headers, KIE_PROOF_HEADERS, distinct_only=False)
    token = (query or {}).get("token")
    if token:
        _require_token(settings, "kie", token, now=now)
        return kie.parse(decode_json_object(body), verification=Verification.TOKEN)
    if settings.kie_hmac_keys:
        timestamp, signature = kie.signature_headers(headers)  # read once, checked after the body is decoded
        if timestamp is None or signature is None:
            raise Rejected(
                "missing X-Webhook-Timestamp / X-Webhook-Signature: this receiver requires signed kie.ai callbacks",
                reason="signature_missing",
            )
        decoded = decode_json_object(body)
        task_id = kie.task_id_of(decoded)
        try:
            tolerance = settings.timestamp_tolerance_s
            kie.check_signature(timestamp, signature, task_id, settings.kie_hmac_keys, now=now, tolerance_s=tolerance)
        except Rejected as exc:  # a wrong key or a skewed clock refuses real tasks: name the one refused
            exc.claimed_task_id = task_id
            raise
        return kie.event_from(decoded, task_id, verification=Verification.SIGNATURE)
    if settings.kie_allow_unsigned:
        return kie.parse(decode_json_object(body), verification=Verification.UNSIGNED)
    raise Rejected(
        "unsigned kie.ai callbacks are not accepted by this receiver (no webhook HMAC key is configured)",
        reason="unsigned_refused",
    )


def verify_unsigned_provider(
    settings: Settings,
    provider: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    query: Mapping[str, str],
) -> TaskEvent:
    spec = REGISTRY[provider]
    token = query.get("token")
    if token:
        _require_token(settings, provider, token, now=now)
        return spec.parse(decode_json_object(body), verification=Verification.TOKEN)
    if spec.body_proof is not no_body_proof:  # the token may be echoed in the body (useapi.net's replyRef)
        decoded = decode_json_object(body)
        ref_token = tokens.token_from({}, spec.body_proof(decoded))
        if ref_token:
            _require_token(settings, provider, ref_token, now=now)
            return spec.parse(decoded, verification=Verification.TOKEN)
    if settings.providers[provider].open:
        return spec.parse(decode_json_object(body), verification=Verification.UNSIGNED)
    _require_token(settings, provider, None, now=now)
    raise AssertionError("unreachable: _require_token raises for a missing token")


def verify_provider(
    settings: Settings, provider: str, headers: Mapping[str, str], body: bytes, *, now: float, query: Mapping[str, str]
) -> TaskEvent:
    if provider == "kie":
        return check_event(settings, verify_kie(settings, headers, body, now=now, query=query))
    return check_event(settings, verify_unsigned_provider(settings, provider, headers, body, now=now, query=query))


def standard_keyrings(settings: Settings) -> dict[str, standard_webhooks.Keyring]:
    """Parse every source's secrets once, at startup: a bad secret is a ConfigError before any traffic."""
    for source in settings.standard_webhook_secrets:
        if not source.replace("-", "").replace("_", "").isalnum() or len(source) > 40 or not source.isascii():
            raise ConfigError(f"STANDARD_WEBHOOK_SECRETS source {source!r}: letters, digits, '-' and '_' (at most 40)")
    return {src: standard_webhooks.parse_secrets(secrets) for src, secrets in settings.standard_webhook_secrets.items()}


def verify_standard(
    settings: Settings,
    source: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    keyrings: Mapping[str, standard_webhooks.Keyring],
) -> TaskEvent:
    keyring = keyrings.get(source.lower())
    if keyring is None:
        raise Rejected(f"no Standard Webhooks secret is configured for source {source!r}", reason="unknown_source")
    require_single_values(headers, STANDARD_PROOF_HEADERS, distinct_only=True)
    webhook_id = standard_webhooks.verify(headers, body, keyring, now=now, tolerance_s=settings.timestamp_tolerance_s)
    decoded: dict[str, Any] = decode_json_object(body)
    event = standard.parse(decoded, source=source.lower(), webhook_id=webhook_id, verification=Verification.SIGNATURE)
    return check_event(settings, event)
