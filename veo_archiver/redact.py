"""Our callback-URL tokens are secrets: no stored copy of a callback may keep one.

A token (``v1.<provider>.<expiry>.<MAC>``, minted by :mod:`receiver.tokens`) verifies every callback for its
provider until its key is rotated out, so one read from the archive or from Redis would let anyone forge
callbacks. The receiver verifies with the token, then stores the delivery, the event and (through them) the
job, the archived ``callback-*.json`` and the manifest with every token's MAC replaced by ``***``, wherever
it arrived: the query (never stored), useapi.net's ``replyRef``, any header or body field. The logs scrub
the same pattern (:mod:`veo_archiver.logs`).
"""

from __future__ import annotations

import json
import re

from veo_archiver.event import TaskEvent

#: a callback-URL token: version, provider, expiry (Unix seconds, 0 = never), base64url MAC
TOKEN_PATTERN = re.compile(r"\b(v1\.[a-z0-9][a-z0-9_-]{0,31}\.[0-9]{1,12}\.)[A-Za-z0-9_-]{20,}")
REDACTED = "***"


def redact_tokens(text: str) -> str:
    """``text`` with the MAC of every callback-URL token replaced (the provider and expiry stay readable)."""
    if "v1." not in text:
        return text
    return TOKEN_PATTERN.sub(lambda m: m.group(1) + REDACTED, text)


def redact_bytes(body: bytes) -> bytes:
    """A raw body with its tokens redacted; bytes that are not UTF-8 are left alone (they never parsed)."""
    if b"v1." not in body:
        return body
    try:
        return redact_tokens(body.decode("utf-8")).encode("utf-8")
    except UnicodeDecodeError:
        return body


def redact_event(event: TaskEvent) -> TaskEvent:
    """The event as it will be stored: a token echoed in a field (useapi.net's ``replyRef`` lands in
    ``extra.reply_ref``) has its MAC replaced."""
    text = json.dumps(event.to_json())
    if "v1." not in text:
        return event
    redacted = redact_tokens(text)
    return event if redacted == text else TaskEvent.from_json(json.loads(redacted))
