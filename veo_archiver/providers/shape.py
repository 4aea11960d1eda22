"""Typed shapes of the JSON objects providers send, and the one reader that checks them. Pure.

A provider module declares each object it reads as a :class:`Shape` whose class attributes are fields::

    class RecordInfo(Shape):
        task_id = TaskId("taskId")
        success_flag = Int("successFlag")

``RecordInfo(data, "data").success_flag`` is an ``int`` (mypy reads the field's type) or an
:class:`InvalidPayload` naming the path: ``data.successFlag: expected an integer, got list``. JSON ``null``
reads as absent, as it always has for these providers.

A field is checked the first time it is read, then kept on the instance (a plain attribute from then on).
So the checks run in the order a parser reads the fields, which is the order its errors are reported in,
and a field a branch never reads (kie.ai's ``resultUrls`` of a failed task) is never checked. A parser that
must refuse a body for a field it does not use reads it anyway, at the point the refusal belongs.

msgspec was measured for this and not taken: it reports the first bad field in the body's key order (not
the declared order), its lax integers accept ``"1e2"`` and ``200.0`` but not ``" 200 "``, and its messages
(``got `array```) would have to be parsed back into these.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, Self, TypeVar, overload

from veo_archiver.errors import InvalidPayload
from veo_archiver.payload import is_task_id_text, loads_json, maybe_json, task_id_value
from veo_archiver.urls import parse_url_list

T = TypeVar("T")
S = TypeVar("S", bound="Shape")


class Shape:
    """A JSON object read through the fields its class declares; ``raw`` is the object itself."""

    def __init__(self, raw: Mapping[str, Any], path: str = "") -> None:
        self.raw = raw
        #: where the object sits in the body (``data.response``), the prefix of every error it raises
        self.path = path

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.raw!r})"


class Field(Generic[T]):
    """One member of a :class:`Shape`: its JSON key and how its value is checked (``None`` = absent)."""

    #: an absent value reads as ``None`` without calling :meth:`read` (most optional fields of a body are absent)
    none_when_absent = False

    def __init__(self, key: str) -> None:
        self.key = key
        self.name = key

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self.name = name

    @overload
    def __get__(self, shape: None, owner: type[Any]) -> Self: ...

    @overload
    def __get__(self, shape: Shape, owner: type[Any]) -> T: ...

    def __get__(self, shape: Shape | None, owner: type[Any]) -> Self | T:
        if shape is None:
            return self
        raw: Any = shape.raw.get(self.key)
        value: T = raw  # None, for an absent none_when_absent field (tests/core/test_providers_shape.py)
        if raw is not None or not self.none_when_absent:
            value = self.read(raw, shape)
        shape.__dict__[self.name] = value  # kept: the instance attribute now hides this (non-data) descriptor
        return value

    def read(self, value: Any, shape: Shape) -> T:
        """The checked value of this field (``value`` is ``None`` when absent) in ``shape``."""
        raise NotImplementedError

    def path(self, shape: Shape) -> str:
        """Where the field sits in the body, for messages (built only when one is needed)."""
        return f"{shape.path}.{self.key}" if shape.path else self.key


def _wrong_type(path: str, expected: str, value: Any) -> InvalidPayload:
    return InvalidPayload(f"{path}: expected {expected}, got {type(value).__name__}")


def _int(value: Any, field: Field[Any], shape: Shape) -> int:
    if type(value) is int:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    # some answers quote their numbers ("code": "200")
    if isinstance(value, str) and value.isascii() and value.strip().removeprefix("-").isdigit() and len(value) < 64:
        return int(value.strip())
    raise _wrong_type(field.path(shape), "an integer", value)


class Int(Field[int]):
    """A required integer (a string of decimal digits counts)."""

    def read(self, value: Any, shape: Shape) -> int:
        if value is None:
            raise InvalidPayload(f"{self.path(shape)}: required integer is missing")
        return _int(value, self, shape)


class OptInt(Field[int | None]):
    none_when_absent = True

    def read(self, value: Any, shape: Shape) -> int | None:
        return None if value is None else _int(value, self, shape)


class Str(Field[str]):
    """A required, non-blank string."""

    def read(self, value: Any, shape: Shape) -> str:
        if value is None:
            raise InvalidPayload(f"{self.path(shape)}: required string is missing")
        if not isinstance(value, str):
            raise _wrong_type(self.path(shape), "a string", value)
        if not value.strip():
            raise InvalidPayload(f"{self.path(shape)}: must not be empty")
        return value


class OptStr(Field[str | None]):
    """An optional string, kept as sent (blank included)."""

    none_when_absent = True

    def read(self, value: Any, shape: Shape) -> str | None:
        if value is None or isinstance(value, str):
            return value
        raise _wrong_type(self.path(shape), "a string", value)


class Flag(Field[bool | None]):
    none_when_absent = True

    def read(self, value: Any, shape: Shape) -> bool | None:
        if value is None or isinstance(value, bool):
            return value
        raise _wrong_type(self.path(shape), "a boolean", value)


class Raw(Field[Any]):
    """A value kept as sent, unchecked (``None`` when absent)."""

    none_when_absent = True

    def read(self, value: Any, shape: Shape) -> Any:
        return value


class TaskId(Field[str]):
    """A provider task id: a non-empty string with no lone surrogate (it is HMACed and used in keys)."""

    def read(self, value: Any, shape: Shape) -> str:
        return value if is_task_id_text(value) else task_id_value(value, self.path(shape))  # the latter raises


class Urls(Field[list[str]]):
    """A URL list in any form :func:`parse_url_list` reads (``[]`` when absent)."""

    def read(self, value: Any, shape: Shape) -> list[str]:
        return [] if value is None else parse_url_list(value, field=self.path(shape))


class Url(Field[list[str]]):
    """One optional URL, as a list of zero or one (``""`` counts as absent)."""

    def read(self, value: Any, shape: Shape) -> list[str]:
        return [] if value is None or value == "" else parse_url_list([value], field=self.path(shape))


class Scalar(Field[str | int | None]):
    """A string or an integer kept as sent; ``expected`` words the error (providers document these differently)."""

    none_when_absent = True

    def __init__(self, key: str, expected: str) -> None:
        super().__init__(key)
        self.expected = expected

    def read(self, value: Any, shape: Shape) -> str | int | None:
        if value is None or (isinstance(value, str | int) and not isinstance(value, bool)):
            return value
        raise _wrong_type(self.path(shape), self.expected, value)


class Code(Field[str | None]):
    """An opaque code sent as a string or an integer: its text, ``None`` when absent or blank."""

    none_when_absent = True

    def __init__(self, key: str, expected: str) -> None:
        super().__init__(key)
        self.scalar = Scalar(key, expected)

    def read(self, value: Any, shape: Shape) -> str | None:
        code = self.scalar.read(value, shape)
        return str(code) if code is not None and str(code).strip() else None


class Strings(Field[list[str] | None]):
    none_when_absent = True

    def read(self, value: Any, shape: Shape) -> list[str] | None:
        if value is None or (isinstance(value, list) and all(isinstance(item, str) for item in value)):
            return value
        raise InvalidPayload(f"{self.path(shape)}: expected a list of strings")


class JsonText(Field[Any]):
    """A JSON-encoded string (or the value already decoded), decoded when it holds an object or a list."""

    none_when_absent = True

    def read(self, value: Any, shape: Shape) -> Any:
        if value is None:
            return None
        if not isinstance(value, str | dict):
            raise _wrong_type(self.path(shape), "a JSON string", value)
        return maybe_json(value)


class Obj(Field[S]):
    """A required nested object."""

    def __init__(self, shape: type[S], key: str) -> None:
        super().__init__(key)
        self.shape = shape

    def read(self, value: Any, shape: Shape) -> S:
        if isinstance(value, dict):
            return self.shape(value, self.path(shape))
        if value is None:
            raise InvalidPayload(f"{self.path(shape)}: required object is missing")
        raise _wrong_type(self.path(shape), "an object", value)


class OptObj(Obj[S]):
    """An optional nested object: an absent one reads as an empty one (every field absent, ``raw == {}``)."""

    def read(self, value: Any, shape: Shape) -> S:
        return self.shape({}, self.path(shape)) if value is None else super().read(value, shape)


class TextOr(Field["str | S | None"]):
    """An object, or a bare string in its place (an error given as its message alone)."""

    none_when_absent = True

    def __init__(self, shape: type[S], key: str, expected: str) -> None:
        super().__init__(key)
        self.shape = shape
        self.expected = expected

    def read(self, value: Any, shape: Shape) -> str | S | None:
        if value is None or isinstance(value, str):
            return value
        if not isinstance(value, dict):
            raise _wrong_type(self.path(shape), self.expected, value)
        return self.shape(value, self.path(shape))


class Items(Field[list[S]]):
    """A list of objects (``[]`` when absent); every element is checked to be an object up front."""

    def __init__(self, shape: type[S], key: str) -> None:
        super().__init__(key)
        self.shape = shape

    def read(self, value: Any, shape: Shape) -> list[S]:
        if value is None:
            return []
        path = self.path(shape)
        if not isinstance(value, list):
            raise _wrong_type(path, "a list", value)
        items: list[S] = []
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise _wrong_type(f"{path}[{index}]", "an object", item)
            items.append(self.shape(item, f"{path}[{index}]"))
        return items


class JsonObject(Obj[S]):
    """An object sent JSON-encoded in a string (APIXO's ``resultJson``), or already decoded; blank = empty."""

    def read(self, value: Any, shape: Shape) -> S:
        path = self.path(shape)
        if value is None or isinstance(value, dict):
            return self.shape(value or {}, path)
        if not isinstance(value, str):
            raise _wrong_type(path, "a JSON string", value)
        if not value.strip():
            return self.shape({}, path)
        try:
            decoded = loads_json(value)
        except (ValueError, RecursionError):
            raise InvalidPayload(f"{path}: not valid JSON: {value[:80]!r}") from None
        if not isinstance(decoded, dict):
            raise _wrong_type(path, "a JSON object", decoded)
        return self.shape(decoded, path)
