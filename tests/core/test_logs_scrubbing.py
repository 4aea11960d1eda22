"""``veo_archiver.logs``: one record is one line in every format, and the one list of secret query words
is what the scrubber removes, with credentials in URLs."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from veo_archiver import logs
from veo_archiver.logs import SECRET_QUERY_WORDS, JsonFormatter, ScrubbingFormatter, escape_controls, scrub

FORGED = "veo_task\nINFO rq.worker: forged line\r\u2028\x1b[31m"


def record(msg: str, *args: object, **fields: object) -> logging.LogRecord:
    rec = logging.LogRecord("tests.logs", logging.INFO, __file__, 1, msg, args, None)
    for name, value in fields.items():
        setattr(rec, name, value)
    return rec


@pytest.mark.parametrize("formatter", [ScrubbingFormatter("%(levelname)s %(name)s: %(message)s"), JsonFormatter()])
def test_a_task_id_with_control_characters_cannot_forge_a_line(formatter: logging.Formatter) -> None:
    line = formatter.format(record("archive kie:%s (succeeded)", FORGED, task_id=FORGED))
    assert "\n" not in line and "\r" not in line and "\u2028" not in line and "\x1b" not in line
    assert "forged line" in line  # kept, escaped, not dropped


def test_escape_controls_is_reversible_enough_to_read() -> None:
    assert escape_controls("a\nb\tc\x7f") == "a\\nb\\tc\\x7f"
    assert escape_controls("plain text, ünïcode ok") == "plain text, ünïcode ok"


@pytest.mark.parametrize("word", SECRET_QUERY_WORDS)
def test_every_secret_query_word_is_scrubbed(word: str) -> None:
    for name in (word, word.upper(), f"X-Amz-{word.title()}", f"{word}_id"):
        text = f"GET https://cdn.example.com/v.mp4?a=1&{name}=S3CR3TVALUE&b=2"
        assert "S3CR3TVALUE" not in scrub(text), name


@pytest.mark.parametrize(
    "url",
    [
        "https://user:pass@cdn.example.com/v.mp4",
        "http://only-user@10.0.0.1:8080/x",
        "s3://AKIAXXXX:secretkey@bucket/key",
    ],
)
def test_credentials_in_urls_are_scrubbed(url: str) -> None:
    out = scrub(f"downloading {url} now")
    assert "pass" not in out and "only-user" not in out and "secretkey" not in out
    assert "***@" in out


def test_akamai_and_hmac_tokens_from_the_review_are_scrubbed() -> None:
    text = "https://cdn.example.com/v.mp4?hdnts=exp=1700000000~acl=/*~hmac=0a1b2c3d4e&hmac=ffee"
    out = scrub(text)
    assert "0a1b2c3d4e" not in out and "ffee" not in out and "1700000000" not in out


def test_json_lines_keep_fields_as_data() -> None:
    out = json.loads(JsonFormatter().format(record("callback %s", "ok", task_id=FORGED)))
    assert out["task_id"] == FORGED  # JSON escapes it; a reader gets the value back exactly


# ------------------------------------------------------------------------------------------------------------
# The shortcuts on the per-callback log line answer exactly what the patterns answer.

_SECRETISH = st.text(
    alphabet=st.sampled_from(list("abBeEkKrRsSwWhHpPvV1.=@ _-:/?&\t\n\x7f\x80\u2028ſKé")) | st.characters(),
    max_size=40,
)


@hsettings(deadline=None)
@given(_SECRETISH)
@example("Bearer abc.def")
@example("BASIC\tdXNlcjpwYXNz")
@example("WHSEC_abc")
@example("V1.kie.1750000000.abcdefghijabcdefghij")
@example("baſic x")
def test_the_secret_prefilter_lets_through_whatever_the_pattern_matches(text: str) -> None:
    if logs._MAYBE_SECRET.search(text) is not None:
        assert logs._maybe_secret(text)
    scrubbed = text
    if logs._MAYBE_SECRET.search(text) is not None:
        for pattern, replacement in logs._SCRUBBERS:
            scrubbed = pattern.sub(replacement, scrubbed)
    assert scrub(text) == scrubbed


@hsettings(deadline=None)
@given(st.text(max_size=30))
@example("a\x7fb")
@example("tab\there")
def test_escape_controls_shortcut_is_the_pattern(text: str) -> None:
    expected = logs._CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
    assert escape_controls(text) == expected


@pytest.mark.parametrize("value", ["plain", "del\x7fhere", "c1\x85here", "ls\u2028here", "é ok", "\ud800"])
def test_json_lines_never_carry_a_raw_line_break(value: str) -> None:
    line = JsonFormatter().format(record("m", task_id=value))
    assert logs._RAW_BREAKS.search(line) is None and "\n" not in line
    assert json.loads(line)["task_id"] == value


# ------------------------------------------------------------------------------------------------------------
# Quiet, honest logs: no colour codes as text, archive keys shown, RQ's routine lines at DEBUG.


@pytest.mark.parametrize("formatter", [ScrubbingFormatter("%(levelname)s %(name)s: %(message)s"), JsonFormatter()])
def test_terminal_colour_codes_are_removed_not_escaped(formatter: logging.Formatter) -> None:
    line = formatter.format(record("*** Listening on %s...", "\x1b[32mveo-archiver\x1b[39;49;00m"))
    assert "x1b" not in line and "[32m" not in line and "Listening on veo-archiver..." in line


def test_an_archive_key_is_shown_in_text_lines_and_secrets_stay_masked() -> None:
    text = ScrubbingFormatter("%(message)s").format(
        record("video archived key=kie/t1/0.mp4", key="kie/t1/0.mp4", manifest_key="kie/t1/manifest.json", api_key="K")
    )
    assert "key=kie/t1/0.mp4" in text and "manifest_key=kie/t1/manifest.json" in text and "api_key=***" in text
    assert json.loads(JsonFormatter().format(record("m", key="kie/t1/0.mp4")))["key"] == "kie/t1/0.mp4"


@pytest.mark.parametrize("level", [logging.INFO, logging.DEBUG])
def test_rq_maintenance_lines_are_debug(level: int) -> None:
    cleaning = "Worker %s: cleaning registries for queue: %s"
    assert cleaning in logs.ROUTINE_RQ
    rq = logging.LogRecord("rq.worker", logging.INFO, __file__, 1, cleaning, ("w1", "veo-archiver"), None)
    root = logging.getLogger()
    before = root.level
    root.setLevel(level)
    try:
        shown = logs.RoutineRQ().filter(rq)
    finally:
        root.setLevel(before)
    assert shown == (level == logging.DEBUG) and rq.levelname == "DEBUG"
    other = logging.LogRecord("rq.worker", logging.WARNING, __file__, 1, "Work horse killed", (), None)
    assert logs.RoutineRQ().filter(other) and other.levelname == "WARNING"


def test_httpx_request_lines_only_at_debug() -> None:
    """httpx's "HTTP Request: GET <url>" line per request is noise at INFO (the service logs what it fetched)."""
    import logging

    from veo_archiver.logs import configure

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    httpx_logger = logging.getLogger("httpx")
    try:
        configure("INFO", json_lines=True)
        assert not httpx_logger.isEnabledFor(logging.INFO)
        assert httpx_logger.isEnabledFor(logging.WARNING)
        configure("DEBUG", json_lines=True)
        assert httpx_logger.isEnabledFor(logging.INFO)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        httpx_logger.setLevel(logging.NOTSET)
