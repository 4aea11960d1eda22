"""``veo_archiver.urls.parse_url_list``: every form kie.ai documents for a URL list, and what is refused."""

from __future__ import annotations

import re
from typing import Any

import pytest

from veo_archiver.errors import InvalidPayload
from veo_archiver.urls import is_http_url, parse_url_list

F = "data.info.resultUrls"
U1 = "https://a.example/1.mp4"
U2 = "https://a.example/2.mp4"


@pytest.mark.parametrize("value", [None, "", " ", "   \t\n ", []])
def test_empty_values_give_empty_list(value: Any) -> None:
    assert parse_url_list(value, field=F) == []


def test_list() -> None:
    assert parse_url_list([U1, U2], field=F) == [U1, U2]


def test_list_elements_stripped() -> None:
    assert parse_url_list([f"  {U1}\n"], field=F) == [U1]


def test_json_string() -> None:
    assert parse_url_list(f'["{U1}", "{U2}"]', field=F) == [U1, U2]


def test_json_string_with_surrounding_whitespace() -> None:
    assert parse_url_list(f'  ["{U1}"]  ', field=F) == [U1]


def test_json_empty_list_string() -> None:
    assert parse_url_list("[]", field=F) == []


@pytest.mark.parametrize(
    "value",
    [
        f"[{U1}, {U2}]",
        f"[{U1},{U2}]",
        f"[ {U1} ,   {U2} ]",
        f"['{U1}', '{U2}']",
        f"[\"{U1}\", '{U2}']",
        f"[{U1}, {U2},]",
        f"[ '{U1}' , \"{U2}\" ]",
    ],
)
def test_bracketed_non_json(value: str) -> None:
    assert parse_url_list(value, field=F) == [U1, U2]


def test_bracketed_non_json_documented_example() -> None:
    assert parse_url_list("[http://example.com/video1.mp4]", field=F) == ["http://example.com/video1.mp4"]


def test_bare_url() -> None:
    assert parse_url_list(U1, field=F) == [U1]
    assert parse_url_list(f"  {U1}  ", field=F) == [U1]


def test_url_with_query_and_port() -> None:
    url = "https://tempfile.aiquickdraw.com:8443/v/x.mp4?sig=a%2Fb&exp=1"
    assert parse_url_list([url], field=F) == [url]


@pytest.mark.parametrize(
    "value",
    [
        [U1, U2, U1, U2, U1],
        f'["{U1}", "{U2}", "{U1}"]',
        f"[{U1}, {U2}, {U1}]",
        [U2 + " ", U1, U2],
    ],
)
def test_duplicates_removed_preserving_order(value: Any) -> None:
    expected = [U2, U1] if isinstance(value, list) and value[0].startswith(U2) else [U1, U2]
    assert parse_url_list(value, field=F) == expected


@pytest.mark.parametrize("value", ["[", f"[{U1}", f'["{U1}"', "[ ", "[["])
def test_unterminated_list_invalid(value: str) -> None:
    with pytest.raises(InvalidPayload, match=re.escape(F)):
        parse_url_list(value, field=F)


def test_deeply_nested_string_invalid_not_a_crash() -> None:
    with pytest.raises(InvalidPayload, match=re.escape(F)):
        parse_url_list("[" * 100_000 + "]" * 100_000, field=F)
    with pytest.raises(InvalidPayload, match=re.escape(F)):
        parse_url_list("[" * 100_000, field=F)


@pytest.mark.parametrize("value", [{"url": U1}, {}, 5, 1.5, True, b"https://a.example/1.mp4", (U1,)])
def test_non_list_non_string_invalid(value: Any) -> None:
    with pytest.raises(InvalidPayload, match=re.escape(F)):
        parse_url_list(value, field=F)


def test_dict_invalid_mentions_type() -> None:
    with pytest.raises(InvalidPayload, match="dict"):
        parse_url_list({"url": U1}, field=F)


@pytest.mark.parametrize("value", [[U1, 5], [5], [None], [[U1]], [{"url": U1}], f'["{U1}", 5]', "[5]"])
def test_list_with_non_string_invalid(value: Any) -> None:
    with pytest.raises(InvalidPayload, match=re.escape(F)):
        parse_url_list(value, field=F)


@pytest.mark.parametrize("value", [f'{{"url": "{U1}"}}', "{}", '"https://a.example/1.mp4"', "5", "null"])
def test_json_string_holding_a_non_list_invalid(value: str) -> None:
    with pytest.raises(InvalidPayload, match=re.escape(F)):
        parse_url_list(value, field=F)


@pytest.mark.parametrize(
    "bad",
    [
        "javascript:alert(1)",
        "ftp://x",
        "ftp://a.example/1.mp4",
        "file:///etc/passwd",
        "http://",
        "https:///x",
        "/relative.mp4",
        "a.example/1.mp4",
        "mailto:a@b.example",
        "data:video/mp4;base64,AA",
        "http://[::1",
    ],
)
def test_non_http_urls_invalid(bad: str) -> None:
    for value in ([bad], bad, f"[{bad}]", f'["{bad}"]', [U1, bad]):
        with pytest.raises(InvalidPayload, match=re.escape(F)):
            parse_url_list(value, field=F)


def test_field_name_is_the_one_given() -> None:
    with pytest.raises(InvalidPayload, match=r"data\.info\.originUrls"):
        parse_url_list(5, field="data.info.originUrls")


def test_long_values_truncated_in_message() -> None:
    with pytest.raises(InvalidPayload) as info:
        parse_url_list(["x" * 10_000], field=F)
    assert len(str(info.value)) < 400


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (U1, True),
        ("http://a/1.mp4", True),
        ("HTTPS://A.EXAMPLE/x", True),
        ("ftp://x", False),
        ("http://", False),
        ("javascript:alert(1)", False),
        ("http://[::1", False),
        ("", False),
    ],
)
def test_is_http_url(value: str, expected: bool) -> None:
    assert is_http_url(value) is expected
