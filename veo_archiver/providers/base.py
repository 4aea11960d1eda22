"""What every provider module declares: one typed :class:`ProviderSpec`, collected in the registry.

A spec is data plus pure functions (no I/O): how its callback body becomes a :class:`TaskEvent`, where a
proof can hide inside the body (useapi.net echoes ``replyRef``), which status-API requests read a task
(APIXO has one endpoint per model, tried in order), how an answer becomes an event, and how long its
result URLs are assumed to live.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from veo_archiver.event import TaskEvent, Verification

#: URL and headers of one status-API GET
StatusRequest = tuple[str, dict[str, str]]


class CallbackParser(Protocol):
    def __call__(self, body: Mapping[str, Any], *, verification: Verification) -> TaskEvent: ...


def no_body_proof(body: Mapping[str, Any]) -> str | None:
    return None


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    label: str
    #: the status-API key variable and the API's public base URL
    api_key_var: str
    default_api_base: str
    #: how long a result URL is assumed to live when the provider does not say (PROVIDERS.md "URL lifetime")
    url_lifetime_s: int
    parse: CallbackParser
    #: the status-API requests that may know a task, tried in order until one does not answer ``unknown_task``
    status_requests: Callable[[str, str, str], list[StatusRequest]]
    parse_status: Callable[[Mapping[str, Any], str], TaskEvent]
    #: a callback-URL token the provider echoes inside the body (the raw reference, not yet verified)
    body_proof: Callable[[Mapping[str, Any]], str | None] = no_body_proof
