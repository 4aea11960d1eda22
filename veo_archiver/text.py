"""Values as text: what Redis replies (``bytes``, or ``str`` from a client that decodes) and JSON fields become
before anything compares, prints or stores them. The one home of that rule for the core, the receiver, the
workers and the command line.

- :func:`text`: ``bytes`` decoded as UTF-8 with undecodable bytes replaced (a reply never raises here),
  anything else through ``str()``;
- :func:`optional_text`: the same, except that ``None`` (a missing hash field, a missing JSON key) stays
  ``None`` instead of becoming ``"None"``.
"""

from __future__ import annotations


def text(value: object) -> str:
    """``bytes`` decoded as UTF-8 (invalid bytes replaced), anything else through ``str()``."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def optional_text(value: object) -> str | None:
    """:func:`text`, but ``None`` stays ``None``."""
    return None if value is None else text(value)
