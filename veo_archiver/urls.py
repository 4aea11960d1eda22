"""Parse the URL lists providers send, in every form they have been documented to send them.

kie.ai alone documents four forms for ``resultUrls``: a JSON array, a JSON string holding an array
(``'["u"]'``), a bracketed non-JSON string (``'[u1, u2]'``) and a bare URL string. Pure functions.

Every URL in a list must also pass :func:`url_problem`: a URL the workers' HTTP client would refuse
(``httpx.InvalidURL``) is refused here, at the receiver, with 400 ``invalid_url``, instead of failing a job
later. The rules are stricter than httpx's (tests check that whatever passes here, httpx accepts) and need
no HTTP library: providers import this module and must stay free of I/O libraries.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from veo_archiver.errors import InvalidPayload
from veo_archiver.payload import loads_json

#: default of ``MAX_RESULT_URLS`` (Settings): Veo returns at most 4 videos per job
DEFAULT_MAX_RESULT_URLS = 20
#: what the parser itself accepts at most in one list, whatever the settings say (bounds the work a hostile
#: body can cause); the receiver applies ``Settings.max_result_urls`` (<= this) to the parsed event
URL_LIST_CEILING = 1000
#: longest result URL accepted. httpx refuses past 64 KiB; common servers refuse a request line past 8 KiB
#: (nginx's default large_client_header_buffers, Apache's LimitRequestLine), and signed CDN URLs are 1-2 KiB
MAX_URL_CHARS = 8192

# Every check is a C-level string method or one precompiled regex, never a per-character Python loop: this
# runs for every result URL of every callback on the receiver's hot path. A regex scan costs more than a
# string method, so the cheap test that rules a regex out comes first where there is one.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PORT = re.compile(r"[0-9]{1,5}")
_DIGITS_AND_DOTS = re.compile(r"[0-9.]+")
# four octets 0-255 written without leading zeros (0177 is octal to some resolvers)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED_DECIMAL = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
# letters, digits, hyphen (and underscore: DNS carries it, httpx accepts it, some CDNs use it), 1-63 chars;
# a name is dot-separated labels (labels hold no dot, so matching them cannot backtrack across labels)
_LABEL = r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)"  # not starting or ending with a hyphen
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_A_LABEL = re.compile(r"(?:^|\.)xn--", re.IGNORECASE)
# The usual result URL, told in one match from its start: http(s)://, a host name of valid labels with no
# xn-- label and a top label starting with a letter, an optional port of 1-5 digits, then the end of the
# authority. url_problem accepts it after checking the name's length and the port's range; anything else
# (a trailing dot included) goes through the step-by-step checks, which say what is wrong. The quantifiers
# are possessive: a label is never shortened to retry, so a hostile 8 KiB host costs one linear pass.
_PLAIN_LABEL = r"(?![xX][nN]--)(?!-)[A-Za-z0-9_-]{1,63}+(?<!-)"
_PLAIN_URL_START = re.compile(
    rf"[hH][tT][tT][pP][sS]?://(?P<name>(?:{_PLAIN_LABEL}\.)*+(?=[A-Za-z]){_PLAIN_LABEL})"
    r"(?::(?P<port>[0-9]{1,5}+)?)?(?![^/?#])"
)


def _host_problem(host: str) -> str | None:
    if not host:
        return "no host"
    if host.startswith("["):
        inner = host[1:-1] if host.endswith("]") else ""
        if not inner or "%" in inner:
            return f"not an IPv6 literal: {host[:80]!r}"
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            return f"not an IPv6 literal: {host[:80]!r}"
        return None
    if not host.isascii():
        return f"host is not ASCII: {host[:80]!r}"
    if _DIGITS_AND_DOTS.fullmatch(host):
        # dotted decimal only: 0177.0.0.1 (octal to some resolvers), 127.1 or 2130706433 are refused
        if not _DOTTED_DECIMAL.fullmatch(host):
            return f"not a dotted-decimal IPv4 address: {host[:80]!r}"
        return None
    name = host[:-1] if host.endswith(".") else host  # one trailing dot: a fully qualified name
    if len(name) > 253:
        return "host name longer than 253 characters"
    if not _HOST_NAME.fullmatch(name):
        return f"not a valid host name: {host[:80]!r}"
    # every top-level domain starts with a letter; 0x7f000001 is an address
    if not name[name.rfind(".") + 1].isalpha():
        return f"not a valid host name (numeric top label): {host[:80]!r}"
    if "--" in name and _A_LABEL.search(name):
        # checking an A-label needs IDNA 2008 tables (httpx decodes xn-- hosts with the idna package and
        # raises on a bad one); no video CDN uses an internationalised name
        return f"internationalised host names (xn--) are not accepted: {host[:80]!r}"
    return None


def url_problem(url: str) -> str | None:
    """Why ``url`` is not a result URL the workers can fetch, or ``None`` when it is.

    Accepted: ``http``/``https``, at most :data:`MAX_URL_CHARS` characters, no ASCII control character, no
    userinfo (credentials in a result URL are refused), a host that is a DNS name (ASCII labels of letters,
    digits, ``-``, ``_``; each <= 63, total <= 253; the top label starting with a letter; no internationalised
    ``xn--`` label, whose check would need IDNA 2008 tables), a dotted-decimal
    IPv4 address without leading zeros, or a bracketed IPv6 literal; a port, if any, 1-65535.
    """
    if len(url) > MAX_URL_CHARS:
        return f"URL longer than {MAX_URL_CHARS} characters"
    if not url.isprintable() and _CONTROL.search(url):  # every control character is unprintable
        return "control character in URL"
    plain = _PLAIN_URL_START.match(url)
    if plain and len(plain["name"]) <= 253 and (plain["port"] is None or 1 <= int(plain["port"]) <= 65535):
        return None
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return "not an http(s) URL"
    authority = _authority(rest)
    if "@" in authority:
        return "credentials (user@) in a result URL are refused"
    if authority.startswith("["):
        close = authority.find("]")
        host, port_part = (authority, "") if close < 0 else (authority[: close + 1], authority[close + 1 :])
        if port_part and not port_part.startswith(":"):
            return f"not an IPv6 literal: {authority[:80]!r}"
        has_port, port = bool(port_part), port_part[1:]
    else:
        host, colon, port = authority.partition(":")
        has_port = bool(colon)
    problem = _host_problem(host)
    if problem:
        return problem
    if has_port and port:  # "host:" with an empty port means the default port (RFC 3986)
        if not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
            return f"port out of range 1-65535: {port[:20]!r}"
    return None


def _authority(rest: str) -> str:
    """What follows ``scheme://`` up to the first ``/``, ``?`` or ``#``."""
    authority = rest.partition("/")[0]
    if "?" in authority:
        authority = authority.partition("?")[0]
    if "#" in authority:
        authority = authority.partition("#")[0]
    return authority


def check_url(url: str, *, field: str) -> str:
    """``url`` if :func:`url_problem` finds nothing, else :class:`InvalidPayload` (reason ``invalid_url``)."""
    problem = url_problem(url)
    if problem:
        raise InvalidPayload(f"{field}: {problem}: {url[:120]!r}", reason="invalid_url")
    return url


def is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def parse_url_list(value: Any, *, field: str) -> list[str]:
    """Return the http(s) URLs in ``value``, in order, without duplicates.

    ``None`` and ``""`` give ``[]``. Anything that is not a list or a string, and any element that is not an
    http(s) URL, raises :class:`InvalidPayload` naming ``field``: a result list we cannot read must not be
    mistaken for an empty one. An element :func:`url_problem` refuses raises it with reason ``invalid_url``;
    a list longer than :data:`URL_LIST_CEILING`, with reason ``too_many_urls``.
    """
    if value is None:
        return []
    items: list[Any]
    if isinstance(value, list):
        items = value
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text.startswith("["):
            try:
                decoded = loads_json(text)
            except (ValueError, RecursionError):
                if not text.endswith("]"):
                    raise InvalidPayload(f"{field}: unterminated list {text[:80]!r}") from None
                inner = text[1:-1]
                decoded = [part.strip().strip("\"'").strip() for part in inner.split(",")]
                decoded = [part for part in decoded if part]
            if not isinstance(decoded, list):
                raise InvalidPayload(f"{field}: expected a list of URLs")
            items = decoded
        else:
            items = [text]
    else:
        raise InvalidPayload(f"{field}: expected a list of URLs or a string, got {type(value).__name__}")
    if len(items) > URL_LIST_CEILING:
        raise InvalidPayload(f"{field}: {len(items)} URLs, more than {URL_LIST_CEILING}", reason="too_many_urls")
    urls: list[str] = []
    seen: set[str] = set()
    for item in items:
        url = item.strip() if isinstance(item, str) else None
        if url is None or url_problem(url) is not None:
            raise _refusal(item, field)
        if url not in seen:
            seen.add(url)
            urls.append(url)
    return urls


def _refusal(item: Any, field: str) -> InvalidPayload:
    """Why ``item`` is refused: "not an http(s) URL" unless urllib finds an http(s) URL with a host there.

    Whatever :func:`url_problem` accepts, urllib reads as an http(s) URL with a host, so accepted URLs skip
    :func:`is_http_url` (a ``urlsplit`` per URL); a refused one is told apart here, as it always was.
    """
    if not isinstance(item, str) or not is_http_url(item.strip()):
        return InvalidPayload(f"{field}: not an http(s) URL: {str(item)[:120]!r}", reason="invalid_url")
    url = item.strip()
    return InvalidPayload(f"{field}: {url_problem(url)}: {url[:120]!r}", reason="invalid_url")


def check_url_count(urls: tuple[str, ...] | list[str], limit: int) -> None:
    """Refuse a callback carrying more result URLs than ``limit`` (``Settings.max_result_urls``)."""
    if len(urls) > limit:
        raise InvalidPayload(
            f"{len(urls)} result URLs, more than MAX_RESULT_URLS={limit} (Veo returns at most 4 per job)",
            reason="too_many_urls",
        )
