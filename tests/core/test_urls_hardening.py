"""``veo_archiver.urls``: result URLs the workers' HTTP client would refuse are refused at the receiver
(``invalid_url``), and so are over-long lists (``too_many_urls``). Whatever :func:`url_problem` accepts,
``httpx.URL`` accepts too (a property over a grammar of hosts, ports and paths)."""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest
from hypothesis import example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from veo_archiver.errors import InvalidPayload
from veo_archiver.urls import (
    MAX_URL_CHARS,
    URL_LIST_CEILING,
    check_url_count,
    is_http_url,
    parse_url_list,
    url_problem,
)

F = "data.info.resultUrls"

ACCEPTED = [
    "https://tempfile.aiquickdraw.com/v/abc.mp4",
    "http://127.0.0.1:8080/v.mp4",
    "http://0.0.0.0/",
    "http://255.255.255.255/x",
    "https://[::1]/v.mp4",
    "https://[2001:db8::1]:8443/v.mp4?sig=a%2Fb",
    "HTTPS://CDN.Example.COM/x",
    "https://cdn.example.com./x",
    "https://storage.googleapis.com/bucket/v.mp4?X-Goog-Signature=abc&x=1#frag",
    "https://a-b.example/x",
    "https://a_b.example/x",
    "https://localhost:65535/x",
    "https://a.example:1/x",
    "https://a.example:/x",
    "https://a.example",
    "https://a.example?x=1",
    "https://a.example/" + "p" * (MAX_URL_CHARS - len("https://a.example/")),
    "https://" + "a" * 63 + ".example/x",
]

REFUSED = [
    "http://0177.0.0.1/",  # octal to some resolvers
    "http://127.000.000.001/",
    "http://127.1/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0x7f.0.0.1/",
    "http://256.0.0.1/",
    "http://1.2.3.4.5/",
    "https://a.example/" + "p" * MAX_URL_CHARS,
    "http://user:pass@a.example/",
    "http://user@a.example/",
    "http://a.example@evil.example/",
    "http://a.example\\@evil.example/",
    "http://exa mple.com/",
    "http://a..b/",
    "http://.a.example/",
    "http://-a.example/",
    "http://a-.example/",
    "http://" + "a" * 64 + ".example/",
    "http://" + ".".join(["a" * 60] * 5) + "/",  # > 253
    "http://a.example:0/",
    "http://a.example:65536/",
    "http://a.example:99999999/",
    "http://a.example:8a/",
    "http://a.example:-1/",
    "http://a.example:８０/",  # fullwidth digits
    "http://a.example:80:80/",
    "http://[::1/",
    "http://[::1]x/",
    "http://[not-ipv6]/",
    "http://[fe80::1%25eth0]/",
    "http://[127.0.0.1]/",
    "http://bücher.example/",
    "http://xn--bcher-kva.example/",  # internationalised names: not checked without IDNA 2008 tables
    "http://XN--0/",  # httpx.URL(...).host raises idna.IDNAError on it
    "http://a.example/\x00",
    "http://a.example/\nx",
    "http://a.exa\tmple/",
    "http://a.example/\x7f",
    "http://a<b.example/",
    "http://a%2eexample/",
    "http:///x",
    "http://",
    "ftp://a.example/x",
    "http:/a.example/x",
]


@pytest.mark.parametrize("url", ACCEPTED)
def test_accepted(url: str) -> None:
    assert url_problem(url) is None
    httpx.URL(url)
    assert parse_url_list([url], field=F) == [url]


@pytest.mark.parametrize("url", REFUSED)
def test_refused(url: str) -> None:
    assert url_problem(url) is not None
    with pytest.raises(InvalidPayload) as info:
        parse_url_list([url], field=F)
    assert info.value.reason == "invalid_url"
    assert F in str(info.value) and len(str(info.value)) < 400


def test_the_crashes_of_the_issue_are_refused_before_httpx_sees_them() -> None:
    for url in (
        "http://0177.0.0.1/",
        "http://a.example:8a/",
        "http://a.example:99999999/",
        "https://a/" + "x" * 70_000,
    ):
        assert url_problem(url) is not None


def test_list_length_ceiling_and_setting() -> None:
    urls = [f"https://a.example/{i}.mp4" for i in range(URL_LIST_CEILING + 1)]
    with pytest.raises(InvalidPayload) as info:
        parse_url_list(urls, field=F)
    assert info.value.reason == "too_many_urls"
    assert len(parse_url_list(urls[:URL_LIST_CEILING], field=F)) == URL_LIST_CEILING
    check_url_count(urls[:20], 20)
    with pytest.raises(InvalidPayload) as info:
        check_url_count(urls[:21], 20)
    assert info.value.reason == "too_many_urls"


# --------------------------------------------------------------------------------------------- property

_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
label = st.text(alphabet=_ALNUM + "-_", min_size=1, max_size=70) | st.sampled_from(["a", "xn--bcher-kva", "0x7f", "0"])
dns_name = st.lists(label, min_size=1, max_size=5).map(".".join) | st.builds(
    lambda n: n + ".", st.lists(label, min_size=1, max_size=3).map(".".join)
)
octet = st.integers(0, 300).map(str) | st.sampled_from(["00", "010", "0177", "0x7f", ""])
ipv4 = st.lists(octet, min_size=1, max_size=5).map(".".join)
ipv6 = st.ip_addresses(v=6).map(lambda a: f"[{a}]") | st.sampled_from(["[::1", "[zz::1]", "[::1%eth0]", "[1.2.3.4]"])
weird = st.text(min_size=0, max_size=20)  # anything at all, controls and non-ASCII included
host = dns_name | ipv4 | ipv6 | weird
port = st.none() | st.integers(-5, 70_000).map(str) | st.sampled_from(["", "8a", "٨٠", "80:80", " 80"])
path = st.text(max_size=40).map(lambda t: "/" + t) | st.just("") | st.sampled_from(["?q=1", "#f", "/a?b#c"])
userinfo = st.none() | st.sampled_from(["u", "u:p", ""])
scheme = st.sampled_from(["http", "https", "HTTP", "ftp", "http:", ""])


@st.composite
def urls(draw: st.DrawFn) -> str:
    authority = draw(host)
    p = draw(port)
    if p is not None:
        authority += ":" + p
    u = draw(userinfo)
    if u is not None:
        authority = u + "@" + authority
    return f"{draw(scheme)}://{authority}{draw(path)}"


@hsettings(deadline=None)
@given(urls())
@example("http://0177.0.0.1/")
@example("http://a.example:65535/")
def test_whatever_is_accepted_httpx_accepts(url: str) -> None:
    if url_problem(url) is None:
        parsed = httpx.URL(url)  # must not raise httpx.InvalidURL
        assert parsed.scheme in ("http", "https") and parsed.host
        assert parsed.port is None or 1 <= parsed.port <= 65535
        # the egress guard reads the host with urllib: both must see the same host
        parts = urlsplit(url)
        assert parts.hostname == parsed.host
        assert parts.port in (None, parsed.port, 80, 443)


@hsettings(deadline=None)
@given(st.text(max_size=200))
def test_never_raises_on_any_text(text: str) -> None:
    for candidate in (text, "http://" + text, "https://a.example:" + text):
        problem = url_problem(candidate)
        if problem is None:
            httpx.URL(candidate)


# The usual URL is accepted in one regex match, and only a refused one is read with urllib to word the error
# ("not an http(s) URL" or the problem found): both shortcuts rest on what these check.


@hsettings(deadline=None)
@given(urls())
@example("https://cdn.example.com./v.mp4")
@example("httpſ://a.example/")
def test_whatever_is_accepted_urllib_reads_as_an_http_url_with_a_host(url: str) -> None:
    if url_problem(url) is None:
        assert is_http_url(url)


@pytest.mark.parametrize(
    ("item", "words"),
    [
        (5, "not an http(s) URL: '5'"),
        ("ftp://a.example/x", "not an http(s) URL"),
        ("http://", "not an http(s) URL"),
        ("http://a.example:0/x", "port out of range 1-65535: '0'"),
        ("http://xn--bcher-kva.example/x", "internationalised host names (xn--) are not accepted"),
        ("http://a.example/\x00", "control character in URL"),
        ("https://" + "a." * 200 + "example/x", "host name longer than 253 characters"),
    ],
)
def test_refusals_keep_their_words(item: object, words: str) -> None:
    with pytest.raises(InvalidPayload) as info:
        parse_url_list([item], field=F)
    assert info.value.reason == "invalid_url"
    assert str(info.value).startswith(f"{F}: {words}")


@pytest.mark.parametrize(
    "host",
    ["a." * 4000, "a" * 8100, ("a" * 63 + ".") * 126 + "!", "1." * 4000, "xn--a." * 1300, ("a-" * 31 + "a.") * 126],
)
def test_hostile_long_hosts_are_refused(host: str) -> None:
    url = f"http://{host}"[:MAX_URL_CHARS]
    assert url_problem(url) is not None
    assert url_problem(url + "/x"[: MAX_URL_CHARS - len(url)]) is not None
