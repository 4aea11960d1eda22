"""A request's headers as the callback path reads them: straight from the ASGI scope, decoded once.

Starlette's ``Headers`` decodes the whole raw list again on every ``items()`` and ``getlist()``; the callback
path reads the headers several times (proof headers, duplicate checks, the stored delivery record), so
:class:`RequestHeaders` decodes them once. Lookups are case-insensitive like Starlette's; a repeated header
reads as its *first* value (what Starlette's ``get`` returns, so verification and storage agree), and
:meth:`RequestHeaders.getlist` gives every value (duplicate proof headers are refused by
:func:`receiver.verify.require_single_values`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping


class RequestHeaders(Mapping[str, str]):
    """Header name (lower-case) -> first value, plus :meth:`getlist` for every value of one name."""

    __slots__ = ("_first", "_repeated")

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        first: dict[str, str] = {}
        repeated: dict[str, list[str]] | None = None
        for raw_name, raw_value in raw:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            if name not in first:
                first[name] = value
                continue
            if repeated is None:
                repeated = {}
            repeated.setdefault(name, [first[name]]).append(value)
        self._first = first
        self._repeated = repeated

    def __getitem__(self, name: str) -> str:
        return self._first[name.lower()]

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return self._first.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)

    def getlist(self, name: str) -> list[str]:
        """Every value sent for ``name``, in order (empty when absent)."""
        key = name.lower()
        if self._repeated is not None and key in self._repeated:
            return list(self._repeated[key])
        value = self._first.get(key)
        return [] if value is None else [value]
