"""Per-provider verification policy: which proofs a callback must carry, decided by the settings.

Pure: headers + raw bytes + clock in, a verified :class:`TaskEvent` or one :class:`RequestError` out.
The order is fixed: missing proof is refused (401) before the body is looked at; the body is then decoded
only as far as needed to find the signed task id; nothing in it is trusted until the signature matches.
"""

from __future__ import annotations

from collections.abc import Mapping

from receiver.errors import Rejected
from receiver.event import TaskEvent, Verification
from receiver.payload import decode_json_object
from receiver.providers import kie
from receiver.settings import Settings


def verify_kie(settings: Settings, headers: Mapping[str, str], body: bytes, *, now: float) -> TaskEvent:
    if settings.kie_hmac_keys:
        if not kie.has_signature(headers):
            raise Rejected(
                "missing X-Webhook-Timestamp / X-Webhook-Signature: this receiver requires signed kie.ai callbacks",
                reason="signature_missing",
            )
        decoded = decode_json_object(body)
        task_id = kie.task_id_of(decoded)
        kie.verify_signature(
            headers, task_id, settings.kie_hmac_keys, now=now, tolerance_s=settings.timestamp_tolerance_s
        )
        return kie.parse(decoded, verification=Verification.SIGNATURE)
    if settings.kie_allow_unsigned:
        return kie.parse(decode_json_object(body), verification=Verification.UNSIGNED)
    raise Rejected(
        "unsigned kie.ai callbacks are not accepted by this receiver (no webhook HMAC key is configured)",
        reason="unsigned_refused",
    )
