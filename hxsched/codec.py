"""One codec for every schema: typed records (frozen dataclasses) from YAML/JSON mappings and back.

``decode(Record, data, path=FILE)`` checks every key against the dataclass fields and their type
hints and turns any violation into one line, ``FILE: key.path: expected …, got …``: an unknown key
(with the closest known one), a missing field, a wrong type, an out-of-range value. Field options
live in ``field(metadata=meta(...))``: the YAML key when it differs from the attribute, keys still
accepted from older schemas, numeric bounds, and a custom check. ``encode`` is the inverse: enums
as their values, tuples as lists, records as mappings in field order.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import math
import os
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from hxsched.errors import SchemaError

T = TypeVar("T")

_HINTS: dict[type, dict[str, Any]] = {}


def meta(
    *,
    key: str | None = None,
    aliases: tuple[str, ...] = (),
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    check: Callable[[Any], str | None] | None = None,
    omit_none: bool = True,
) -> dict[str, Any]:
    """Field metadata for the codec.

    ``key``: the key in the file (default: the attribute name); ``aliases``: older keys still read;
    ``ge/gt/le/lt``: numeric bounds; ``check``: returns a complaint (``"expected …"``) or None;
    ``omit_none``: leave the key out of ``encode`` when the value is None.
    """
    return {
        "codec": {
            "key": key,
            "aliases": aliases,
            "ge": ge,
            "gt": gt,
            "le": le,
            "lt": lt,
            "check": check,
            "omit_none": omit_none,
        }
    }


def _opts(f: dataclasses.Field[Any]) -> dict[str, Any]:
    return dict(f.metadata.get("codec") or meta()["codec"])


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        module = sys.modules.get(cls.__module__)
        _HINTS[cls] = get_type_hints(cls, vars(module) if module else None)
    return _HINTS[cls]


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if tp is Any:
        return "any value"
    if tp is type(None):
        return "null"
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(str(m.value) for m in tp)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, tuple):
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            return f"a list of {len(args)}"
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin in (dict, Mapping):
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


class _Fail(Exception):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where
        self.message = message


def _join(where: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


def _expected(where: str, tp: Any, value: Any) -> _Fail:
    return _Fail(where, f"expected {_type_name(tp)}, got {_show(value)}")


def _value(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if tp is type(None):
        if value is None:
            return None
        raise _expected(where, tp, value)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        last: _Fail | None = None
        for a in rest:
            try:
                return _value(a, value, where)
            except _Fail as exc:
                last = exc
        if len(rest) == 1 and last is not None:
            raise last
        raise _expected(where, tp, value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _expected(where, tp, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _expected(where, tp, value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out = float(value)
            if math.isnan(out):
                raise _Fail(where, "expected a number, got NaN")
            return out
        raise _expected(where, tp, value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _expected(where, tp, value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise _expected(where, tp, value) from None
    if origin is Literal:
        if value in get_args(tp) and not isinstance(value, bool):
            return value
        raise _expected(where, tp, value)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _expected(where, tp, value)
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise _expected(where, tp, value)
            pairs = enumerate(zip(args, value, strict=True))  # lengths checked just above
            return tuple(_value(a, v, _join(where, i)) for i, (a, v) in pairs)
        item = args[0] if args else Any
        items = [_value(item, v, _join(where, i)) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping):
        if not isinstance(value, dict):
            raise _expected(where, tp, value)
        kt, vt = get_args(tp) or (Any, Any)
        return {_value(kt, k, where): _value(vt, v, _join(where, str(k))) for k, v in value.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _record(tp, value, where)
    raise TypeError(f"codec: unsupported field type {tp!r} at {where}")  # our bug


def _bounds(opts: dict[str, Any], value: Any, where: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    for name, ok, word in (
        ("ge", lambda v, b: v >= b, "≥"),
        ("gt", lambda v, b: v > b, ">"),
        ("le", lambda v, b: v <= b, "≤"),
        ("lt", lambda v, b: v < b, "<"),
    ):
        bound = opts.get(name)
        if bound is not None and not ok(value, bound):
            raise _Fail(where, f"expected a number {word} {bound:g}, got {_show(value)}")


def _record(cls: type[T], data: Any, where: str) -> T:
    if not isinstance(data, dict):
        raise _Fail(where or "(top)", f"expected a mapping, got {_show(data)}")
    hints = _hints(cls)
    known: dict[str, dataclasses.Field[Any]] = {}
    for f in _fields(cls):
        if not f.init:
            continue
        opts = _opts(f)
        known[opts["key"] or f.name] = f
        for alias in opts["aliases"]:
            known[alias] = f
    for key in data:
        if key not in known:
            names = [k for k in known if k not in _aliases(cls)]
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise _Fail(
                _join(where, str(key)),
                f"unknown key{hint}; expected one of: {', '.join(names)}",
            )
    kwargs: dict[str, Any] = {}
    for f in _fields(cls):
        if not f.init:
            continue
        opts = _opts(f)
        key = opts["key"] or f.name
        present = [k for k in (key, *opts["aliases"]) if k in data]
        here = _join(where, key)
        if len(present) > 1:
            raise _Fail(here, f"given twice (as {' and '.join(present)})")
        if not present:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise _Fail(here, "missing (required)")
            continue
        raw = data[present[0]]
        value = _value(hints[f.name], raw, _join(where, present[0]))
        _bounds(opts, value, here)
        if opts["check"] is not None and value is not None:
            complaint = opts["check"](value)
            if complaint:
                raise _Fail(here, f"{complaint}, got {_show(raw)}")
        kwargs[f.name] = value
    try:
        return cls(**kwargs)
    except SchemaError as exc:  # a record's own cross-field check (in __post_init__)
        raise _Fail(_join(where, exc.key) if exc.key else where or "(top)", exc.message) from None


def _fields(cls: type) -> tuple[dataclasses.Field[Any], ...]:
    """The fields of a record class (a bare ``type``: mypy rejects ``type[T]`` for ``fields``)."""
    return dataclasses.fields(cls)


def _aliases(cls: type) -> set[str]:
    out: set[str] = set()
    for f in dataclasses.fields(cls):
        out.update(_opts(f)["aliases"])
    return out


def decode(cls: type[T], data: Any, *, path: str | os.PathLike[str] | None, where: str = "") -> T:
    """``data`` (parsed YAML/JSON) as a ``cls`` record, or a SchemaError naming file and key."""
    try:
        return _record(cls, data, where)
    except _Fail as exc:
        raise SchemaError(exc.message, key=exc.where, path=path) from None


def decode_value(tp: Any, data: Any, *, path: str | os.PathLike[str] | None, where: str) -> Any:
    """One value of type ``tp`` (e.g. ``list[Record]``), with the same errors as ``decode``."""
    try:
        return _value(tp, data, where)
    except _Fail as exc:
        raise SchemaError(exc.message, key=exc.where, path=path) from None


def encode(obj: Any) -> Any:
    """A record (or any value inside one) as plain YAML/JSON data."""
    if isinstance(obj, enum.Enum):
        return obj.value
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            if not f.init and not f.metadata.get("codec"):
                continue
            value = getattr(obj, f.name)
            opts = _opts(f)
            if value is None and opts["omit_none"]:
                continue
            out[opts["key"] or f.name] = encode(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [encode(v) for v in obj]
    if isinstance(obj, dict):
        return {encode(k): encode(v) for k, v in obj.items()}
    return obj


__all__ = ["decode", "decode_value", "encode", "meta"]
