"""Structured JSON logs: one object per line, carrying provider / task id / job id when known.

``LOG_FORMAT`` (``json`` or ``text``) decides; unset, a terminal gets human-readable text lines (the same
fields, as ``name=value`` after the message) and anything else (a file, a pipe, a log collector) JSON lines.

Fields come from a log call's ``extra`` and, for everything logged while a job or a callback is being
handled (including RQ's, httpx's and uvicorn's own lines), from :func:`log_context`.

Secrets never reach a log line: headers are not logged, and as a last line of defence the formatter
masks values of secret-looking field names and scrubs messages, field values and tracebacks of bearer
tokens, callback-URL tokens, Standard Webhooks secrets and secret-looking query parameters (signed CDN
URLs: ``X-Amz-Signature``, ``token``, ``sig``…). A field is masked by its name, a message by its content: an
archive key (``key=kie/<task>/0.mp4``) is a path, not a secret, and is shown.

Terminal colour is presentation, not content: the ANSI sequences RQ puts into its messages when stdout is a
terminal are removed (uvicorn's ``color_message`` duplicate is dropped). Routine RQ maintenance lines are
logged at DEBUG (:data:`ROUTINE_RQ`).
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import re
import sys
import time
from typing import Any, TextIO

import orjson

from veo_archiver.clock import iso
from veo_archiver.errors import ConfigError
from veo_archiver.redact import TOKEN_PATTERN

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_DROPPED = frozenset({"color_message"})
_SECRET_WORDS = ("token", "secret", "signature", "authorization", "password", "key", "cookie")
_NOT_SECRET = frozenset({"task_id", "job_id", "key", "manifest_key", "callback_key"})  # ``key``: archive keys

#: a query parameter or ``name=value`` pair whose name contains one of these is a secret: signed CDN URLs
#: (``X-Amz-Signature``, ``X-Goog-Credential``, CloudFront ``Policy``/``Key-Pair-Id``, Akamai ``hdnts``, ``hmac``),
#: API keys, our own ``token``. The one list: tests/core/test_logs_scrubbing.py checks each word against it.
SECRET_QUERY_WORDS = (
    "token",
    "signature",
    "sig",
    "secret",
    "key",
    "credential",
    "password",
    "auth",
    "hdnts",
    "hmac",
    "policy",
)

_SCRUBBERS = (
    # Authorization: Bearer <t>, Basic <t>
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 ***"),
    # credentials in a URL: scheme://user:password@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@?#]+@"), r"\1***@"),
    # secret-looking query parameters and key=value pairs: token=…, X-Amz-Signature=…, api_key=…, hdnts=…
    (
        re.compile(
            r"(?i)((?:^|[?&;\s\"'])[A-Za-z0-9_.-]*(?:" + "|".join(SECRET_QUERY_WORDS) + r")"
            r"[A-Za-z0-9_.-]*=)[^&\s\"'#;,]+"
        ),
        r"\1***",
    ),
    # our callback-URL tokens, wherever they appear (v1.<provider>.<expiry>.<mac>)
    (TOKEN_PATTERN, r"\1***"),
    # Standard Webhooks secrets
    (re.compile(r"\b(whsec|whpk|whsk)_[A-Za-z0-9+/=_-]+"), r"\1_***"),
)

#: an ANSI escape sequence (CSI ``ESC [ … letter``, e.g. RQ's ``\x1b[32m``): colour, never content
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

#: RQ's messages (their format string) that say routine maintenance or a normal stop: DEBUG, not INFO or WARNING.
#: Every 20 s an idle worker cleans registries; a worker stopped between jobs (Ctrl-C, SIGTERM from `up`) finds
#: no work horse, which is the normal case, not a warning.
ROUTINE_RQ = frozenset(
    {
        "Worker %s: cleaning registries for queue: %s",
        "Warm shut down requested, no horse found",
    }
)

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("veo_log", default=None)


class log_context:
    """Add ``fields`` (``None`` values skipped) to every record logged inside the block (this task/thread).

    A class rather than a ``contextlib.contextmanager``: the receiver enters one per callback, and the
    generator machinery cost several times the work itself."""

    __slots__ = ("_fields", "_token")

    def __init__(self, **fields: Any) -> None:
        self._fields = fields

    def __enter__(self) -> None:
        outer = _context.get()
        fields = {k: v for k, v in self._fields.items() if v is not None}
        self._token = _context.set({**outer, **fields} if outer else fields)

    def __exit__(self, *exc: object) -> None:
        _context.reset(self._token)


#: every scrubber needs one of these to match: a string without any is returned as it is (the common case)
_MAYBE_SECRET = re.compile(r"(?i)\b(?:bearer|basic)\s|[=@]|v1\.|wh[sp]")
#: C0 and C1 controls, DEL, and the Unicode line and paragraph separators: a task id carrying one of them
#: must not start a forged line in a text log
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: what orjson leaves unescaped in a JSON line that a log reader might still split a line at
_RAW_BREAKS = re.compile("[\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    """``text`` with every control character written as an escape (``\\n``, ``\\x1b``): one log line stays one."""
    if text.isascii() and text.isprintable():  # the usual id: no ASCII control character (both checks in C)
        return text
    if _CONTROL.search(text) is None:
        return text
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def _maybe_secret(text: str) -> bool:
    """Whether ``_MAYBE_SECRET`` could match: for ASCII text, substring checks in C that every match of it
    passes (a superset: ``\\b`` and ``\\s`` are not checked), several times cheaper than the search on the
    short ids a callback's log line carries; other text goes to the pattern itself."""
    if not text.isascii():
        return _MAYBE_SECRET.search(text) is not None
    if "=" in text or "@" in text:
        return True
    low = text.lower()
    return "v1." in low or "whs" in low or "whp" in low or "bearer" in low or "basic" in low


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour sequences."""
    return _ANSI.sub("", text) if "\x1b" in text else text


class RoutineRQ(logging.Filter):
    """Demote :data:`ROUTINE_RQ` records to DEBUG, and drop them unless the root logger lets DEBUG through."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("rq.") or record.msg not in ROUTINE_RQ:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)


def scrub(text: str) -> str:
    if not _maybe_secret(text):
        return text
    for pattern, replacement in _SCRUBBERS:
        text = pattern.sub(replacement, text)
    return text


@functools.lru_cache(maxsize=1024)
def _secret_name(name: str) -> bool:
    """Whether a field of this name holds a secret (decided once per name: the same few names come back on
    every line)."""
    lowered = name.lower()
    return lowered not in _NOT_SECRET and any(word in lowered for word in _SECRET_WORDS)


def _clean(name: str, value: Any) -> Any:
    if _secret_name(name):
        return "***"
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _clean(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(name, v) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return scrub(str(value))


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self.converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub(strip_ansi(record.getMessage())),
        }
        for name, value in (_context.get() or {}).items():
            out[name] = _clean(name, value)
        for name, value in record.__dict__.items():
            if name not in _STANDARD and name not in _DROPPED and not name.startswith("_"):
                out[name] = _clean(name, value)
        if record.exc_info:
            out["exc"] = scrub(self.formatException(record.exc_info))
        elif record.exc_text:
            out["exc"] = scrub(record.exc_text)
        try:  # orjson: a fifth of json.dumps's cost, on a line the receiver may write for every callback
            line = orjson.dumps(out, default=str).decode()
        except TypeError:  # what orjson refuses and json writes (a lone surrogate, an integer past 64 bits)
            return json.dumps(out, default=str)
        # orjson escapes C0 controls but writes DEL, C1 controls and U+2028/9 as they are, which some log
        # tools take for line breaks: such a line is written by json, which escapes everything not ASCII
        if line.isascii() and "\x7f" not in line:  # DEL is the one such character in ASCII
            return line
        return line if _RAW_BREAKS.search(line) is None else json.dumps(out, default=str)


class ScrubbingFormatter(logging.Formatter):
    """The text format, with the same fields as ``name=value`` and the same scrubbing of secrets. The message
    and the fields have their control characters escaped, so one record is one line (a traceback, ours, is
    the only thing printed below it)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(strip_ansi(super().formatMessage(record)))

    def format(self, record: logging.LogRecord) -> str:
        head, newline, rest = super().format(record).partition("\n")  # a traceback stays below the fields
        fields = {**(_context.get() or {})}
        for name, value in record.__dict__.items():
            if name not in _STANDARD and name not in _DROPPED and not name.startswith("_"):
                fields[name] = value
        # the message and the traceback are scrubbed by content; each field by its name (in _clean), so that
        # ``key=kie/t1/0.mp4`` (an archive key) is not masked as if it were a secret ``key=...`` pair
        line = scrub(head)
        if fields:
            line += "".join(f" {name}={escape_controls(str(_clean(name, value)))}" for name, value in fields.items())
        return f"{line}{newline}{scrub(rest)}"


def wants_json(log_format: str | None, stream: TextIO | None = None) -> bool:
    """JSON lines or text: ``log_format`` (``LOG_FORMAT``) decides when set; unset, text for a terminal."""
    value = (log_format or "").strip().lower()
    if value in ("json", "text"):
        return value == "json"
    if value:
        raise ConfigError(f"LOG_FORMAT={log_format!r}: expected json or text")
    stream = sys.stderr if stream is None else stream
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return True


def configure(level: str = "INFO", *, json_lines: bool | None = None) -> None:
    """Log to stderr; ``json_lines=None`` picks by :func:`wants_json` (``LOG_FORMAT`` is the caller's to pass)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RoutineRQ())
    if wants_json(None) if json_lines is None else json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(ScrubbingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request at INFO ("HTTP Request: GET <url> ..."): the service logs what it fetched and
    # stored itself, so those lines are noise (and carry signed URLs) unless DEBUG is asked for
    logging.getLogger("httpx").setLevel(logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING)
    # neither format shows where a call was made, nor its thread or process: the logging HOWTO's
    # "optimization" settings skip collecting them (a stack walk per record, ~10 us on the callback path)
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
