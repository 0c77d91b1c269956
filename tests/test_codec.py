"""The one codec: typed records from mappings, every schema violation as one line."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

import pytest

from hxsched.codec import decode, decode_value, encode, meta
from hxsched.errors import SchemaError


class Colour(str, enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class Inner:
    name: str
    weight: float = field(default=1.0, metadata=meta(ge=0.0, le=1.0))


@dataclass(frozen=True)
class Outer:
    kind: Literal["a", "b"]
    colour: Colour
    items: tuple[Inner, ...] = ()
    count: int = field(default=1, metadata=meta(ge=1))
    label: str | None = field(default=None, metadata=meta(aliases=("title",)))
    period_ms: float | None = None
    table: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind == "b" and not self.items:
            raise SchemaError("kind b needs at least one item", key="items")


def err(data) -> str:
    with pytest.raises(SchemaError) as exc:
        decode(Outer, data, path="f.yaml")
    return str(exc.value)


def test_round_trip():
    data = {
        "kind": "b",
        "colour": "red",
        "items": [{"name": "x", "weight": 0.5}],
        "count": 3,
        "label": "L",
        "table": {"a": 1},
    }
    rec = decode(Outer, data, path="f.yaml")
    assert rec.colour is Colour.RED
    assert rec.items == (Inner("x", 0.5),)
    assert encode(rec) == {**data, "items": [{"name": "x", "weight": 0.5}]}


def test_unknown_key_suggests_the_closest():
    assert err({"kind": "a", "colour": "red", "cuont": 2}) == (
        "f.yaml: cuont: unknown key (did you mean 'count'?); expected one of: kind, colour, "
        "items, count, label, period_ms, table"
    )


def test_wrong_type_names_key_and_value():
    assert err({"kind": "a", "colour": "red", "period_ms": "fast"}) == (
        "f.yaml: period_ms: expected a number, got 'fast'"
    )
    assert err({"kind": "a", "colour": "red", "count": True}) == (
        "f.yaml: count: expected an integer, got True"
    )


def test_nested_paths_and_bounds():
    assert err(
        {"kind": "a", "colour": "red", "items": [{"name": "x"}, {"name": "y", "weight": 2}]}
    ) == ("f.yaml: items[1].weight: expected a number ≤ 1, got 2.0")
    assert err({"kind": "a", "colour": "red", "items": [{"nmae": "x"}]}).startswith(
        "f.yaml: items[0].nmae: unknown key (did you mean 'name'?)"
    )


def test_missing_enum_literal_alias_and_cross_field():
    assert err({"colour": "red"}) == "f.yaml: kind: missing (required)"
    assert err({"kind": "c", "colour": "red"}) == "f.yaml: kind: expected one of a, b, got 'c'"
    assert err({"kind": "a", "colour": "green"}) == (
        "f.yaml: colour: expected one of red, blue, got 'green'"
    )
    assert decode(Outer, {"kind": "a", "colour": "blue", "title": "T"}, path=None).label == "T"
    assert err({"kind": "a", "colour": "red", "title": "T", "label": "L"}) == (
        "f.yaml: label: given twice (as label and title)"
    )
    assert err({"kind": "b", "colour": "red"}) == "f.yaml: items: kind b needs at least one item"
    assert (
        err(["not", "a", "mapping"])
        == "f.yaml: (top): expected a mapping, got ['not', 'a', 'mapping']"
    )


def test_decode_value_for_lists():
    got = decode_value(list[Inner], [{"name": "a"}], path="g.yaml", where="groups")
    assert got == [Inner("a")]
    with pytest.raises(SchemaError, match=r"^g.yaml: groups\[0\]: expected a mapping, got 3$"):
        decode_value(list[Inner], [3], path="g.yaml", where="groups")
