"""Recorded API surfaces (tests/data/trt_surfaces, made by tools/record_trt_surface.py) and the
strict base that makes a fake class refuse every name the real binding does not have."""

from __future__ import annotations

import enum
import functools
import importlib.machinery
import json
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SURFACES = Path(__file__).resolve().parents[1] / "data" / "trt_surfaces"
TRT_VERSIONS = ("8.5.3", "8.6.1", "10.3.0", "11.1.0")
PYCUDA_VERSIONS = ("2026.1",)

Signatures = tuple[tuple[str, ...] | None, ...]


@dataclass(frozen=True)
class ClassSurface:
    name: str
    bases: tuple[str, ...]
    methods: dict[str, Signatures]
    static: frozenset[str]
    properties: dict[str, str]  # name -> "ro" | "rw"
    attributes: frozenset[str]
    enums: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class ModuleSurface:
    name: str
    classes: dict[str, ClassSurface]
    enums: dict[str, tuple[str, ...]]
    functions: dict[str, Signatures]
    attributes: frozenset[str]

    def names(self) -> frozenset[str]:
        return frozenset(self.classes) | set(self.enums) | set(self.functions) | self.attributes

    def class_names(self, cls: str) -> frozenset[str]:
        """Every attribute name of a class, its bases' included."""
        c = self.classes[cls]
        own = set(c.methods) | set(c.properties) | c.attributes | set(c.enums)
        for b in c.bases:
            own |= self.class_names(b)
        return frozenset(own)

    def signatures(self, cls: str, name: str) -> Signatures | None:
        c = self.classes[cls]
        if name in c.methods:
            return c.methods[name]
        for b in c.bases:
            found = self.signatures(b, name)
            if found is not None:
                return found
        return None

    def property_mode(self, cls: str, name: str) -> str | None:
        c = self.classes[cls]
        if name in c.properties:
            return c.properties[name]
        return next((m for b in c.bases if (m := self.property_mode(b, name))), None)


def _sigs(raw: list) -> Signatures:
    out = []
    for s in raw:
        names = None if s is None else tuple(a for a in s if a != "self")
        out.append(names)
    return tuple(out)


@functools.cache
def load(package: str, version: str) -> dict[str, ModuleSurface]:
    data = json.loads((SURFACES / f"{package}-{version}.json").read_text())
    mods = {}
    for mname, m in data["modules"].items():
        classes = {
            n: ClassSurface(
                n,
                tuple(c["bases"]),
                {k: _sigs(v) for k, v in c["methods"].items()},
                frozenset(c["static"]),
                dict(c["properties"]),
                frozenset(c["attributes"]),
                {k: tuple(v) for k, v in c["enums"].items()},
            )
            for n, c in m["classes"].items()
        }
        mods[mname] = ModuleSurface(
            mname,
            classes,
            {k: tuple(v) for k, v in m["enums"].items()},
            {k: _sigs(v) for k, v in m["functions"].items()},
            frozenset(m["attributes"]),
        )
    return mods


def source_of(package: str, version: str) -> dict[str, Any]:
    return json.loads((SURFACES / f"{package}-{version}.json").read_text())["source"]


def check_call(where: str, sigs: Signatures | None, kwargs: dict[str, Any]) -> None:
    """As pybind11 / Boost.Python: a keyword the binding does not declare is a TypeError."""
    if not kwargs:
        return
    for sig in sigs or (None,):
        if sig is not None and set(kwargs) <= set(sig):
            return
    raise TypeError(
        f"{where}(): incompatible function arguments: keyword(s) {sorted(kwargs)} not in the "
        f"binding's signatures {[list(s) if s else [] for s in (sigs or ())]}"
    )


class _Enum(enum.IntEnum):
    def __str__(self) -> str:  # pybind11's enum __str__ is "<Type>.<member>"
        return f"{type(self).__name__}.{self.name}"

    def __format__(self, spec: str) -> str:  # f"{severity}" renders like str()
        return format(str(self), spec)


def make_enum(name: str, members: tuple[str, ...]) -> type[enum.IntEnum]:
    unique = list(dict.fromkeys(members))
    return _Enum(name, [(m, i) for i, m in enumerate(unique)])  # type: ignore[call-overload]


class Strict:
    """Base of every fake binding class: names outside the recorded class surface raise
    AttributeError, keyword arguments outside its signatures raise TypeError, and read-only
    properties cannot be set. Names defined by a user subclass (a Python ILogger) are free."""

    _surface: ModuleSurface
    _recorded: str
    _module: str = "tensorrt"

    def _user_defined(self, name: str) -> bool:
        for klass in type(self).__mro__:
            if "_recorded" in klass.__dict__:
                return False
            if name in klass.__dict__:
                return True
        return False

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("_"):
            return object.__getattribute__(self, name)
        cls = type(self)
        surface, rec = cls._surface, cls._recorded
        if name not in surface.class_names(rec) and not self._user_defined(name):
            raise AttributeError(f"'{cls._module}.{rec}' object has no attribute '{name}'")
        value = object.__getattribute__(self, name)
        sigs = surface.signatures(rec, name)
        if sigs is not None and callable(value) and not self._user_defined(name):
            return _checked(f"{rec}.{name}", sigs, value)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_") and not self._user_defined(name):
            cls = type(self)
            mode = cls._surface.property_mode(cls._recorded, name)
            if mode is None:
                raise AttributeError(
                    f"'{cls._module}.{cls._recorded}' object has no attribute '{name}'"
                )
            if mode == "ro":
                raise AttributeError(f"can't set attribute '{name}' (read-only in the binding)")
        object.__setattr__(self, name, value)


def _checked(where: str, sigs: Signatures, fn: Any) -> Any:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        check_call(where, sigs, kwargs)
        return fn(*args, **kwargs)

    return call


class NotFaked(Strict):
    """A recorded class the fake does not implement: it exists, but using it says so."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(f"the fake does not implement {type(self)._recorded}")


class StrictModule(types.ModuleType):
    """A module whose names are exactly the recorded ones."""

    def __init__(self, name: str, surface: ModuleSurface, version: str) -> None:
        super().__init__(name)
        self.__spec__ = importlib.machinery.ModuleSpec(name, loader=None)
        object.__setattr__(self, "_surface", surface)
        object.__setattr__(self, "_fake_version", version)

    def __getattr__(self, attr: str) -> Any:  # only reached for names not set
        if attr in self._surface.names():
            raise NotImplementedError(f"the fake does not implement {self.__name__}.{attr}")
        raise AttributeError(f"module '{self.__name__}' has no attribute '{attr}'")


def bind(
    module: StrictModule,
    impls: dict[str, Any],
    functions: dict[str, Any],
    attributes: dict[str, Any],
    shared: Any = None,
) -> None:
    """Fill ``module`` from its surface: recorded classes from ``impls`` (else NotFaked), every
    recorded enum, recorded functions from ``functions`` (keyword-checked), attributes.
    ``shared`` (the fake's state) is every class's ``_t``."""
    s: ModuleSurface = module._surface
    made: dict[str, type] = {}

    def klass(name: str) -> type:
        if name in made:
            return made[name]
        c = s.classes[name]
        bases = tuple(klass(b) for b in c.bases)
        impl = impls.get(name, NotFaked)
        ns: dict[str, Any] = {"_surface": s, "_recorded": name, "_module": module.__name__}
        ns["_t"] = shared
        for ename, members in c.enums.items():
            ns[ename] = make_enum(ename, members)
        ns["__module__"] = module.__name__
        if impl is NotFaked:
            ns["__init__"] = NotFaked.__init__
            parents = bases or (NotFaked,)
        else:
            parents = (impl, *bases)
            if "__init__" in c.methods:
                ns["__init__"] = _checked(f"{name}.__init__", c.methods["__init__"], impl.__init__)
        cls = type(name, parents, ns)
        for ename in c.enums:
            for m in ns[ename]:
                if m.name in c.attributes:
                    setattr(cls, m.name, m)
        made[name] = cls
        return cls

    for name in s.classes:
        setattr(module, name, klass(name))
    for name, members in s.enums.items():
        setattr(module, name, make_enum(name, members))
    for name, sigs in s.functions.items():
        if name in functions:
            setattr(module, name, _checked(name, sigs, functions[name]))
    for name, value in attributes.items():
        if name in s.attributes:
            setattr(module, name, value)
