"""Record the Python API surface of TensorRT and pycuda from their binding sources, as JSON.

Reads the pybind11 (TensorRT ``python/src``) and Boost.Python (pycuda ``src/wrapper``) binding
definitions plus the pure-Python package modules at a git tag, and writes the module names,
classes (bases, methods with their declared argument names, properties), enums with members and
module functions to ``tests/data/trt_surfaces/<package>-<version>.json``. The strict fake in
``tests/fakes/trt_fake.py`` is built from these files.

Usage (each repository is a git clone; nothing is built or imported)::

    git clone https://github.com/NVIDIA/TensorRT && git clone https://github.com/inducer/pycuda
    python tools/record_trt_surface.py --tensorrt TensorRT --pycuda pycuda
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "trt_surfaces"

# version -> git tag in https://github.com/NVIDIA/TensorRT
TRT_TAGS = {"8.5.3": "8.5.3", "8.6.1": "v8.6.1", "10.3.0": "v10.3.0", "11.1.0": "v11.1"}
PYCUDA_TAGS = {"2026.1": "v2026.1"}
TRT_SOURCES = (
    "python/src/pyTensorRT.cpp",
    "python/src/infer/pyFoundationalTypes.cpp",
    "python/src/infer/pyCore.cpp",
    "python/src/infer/pyGraph.cpp",
    "python/src/infer/pyInt8.cpp",
    "python/src/infer/pyPlugin.cpp",
    "python/src/infer/pyAlgorithmSelector.cpp",
    "python/src/parsers/pyOnnx.cpp",
)
TRT_INIT = (
    "python/packaging/bindings_wheel/tensorrt/__init__.py",
    "python/packaging/tensorrt/__init__.py",
)
PYCUDA_SOURCES = ("src/wrapper/wrap_cudadrv.cpp", "src/wrapper/mempool.cpp")

# pycuda's helper macros (src/wrapper/wrap_helpers.hpp), expanded before parsing
_MACROS = [
    (
        re.compile(r"\bDEF_SIMPLE_METHOD_WITH_ARGS\(\s*(\w+)\s*,"),
        r'def("\1", 0, boost::python::args',
    ),
    (re.compile(r"\bDEF_SIMPLE_METHOD\(\s*(\w+)\s*\)"), r'def("\1", 0)'),
    (
        re.compile(r"\bDEF_SIMPLE_FUNCTION_WITH_ARGS\(\s*(\w+)\s*,"),
        r'py::def("\1", 0, boost::python::args',
    ),
    (re.compile(r"\bDEF_SIMPLE_FUNCTION\(\s*(\w+)\s*\)"), r'py::def("\1", 0)'),
    (re.compile(r"\bENUM_VALUE\(\s*(\w+)\s*\)"), r'value("\1", 0)'),
]
_TOKEN = re.compile(
    r'(?P<str>"(?:[^"\\]|\\.)*")|(?P<id>[A-Za-z_]\w*)|(?P<num>\d[\w.]*)|(?P<op>::|->|\S)'
)


@dataclass
class Cls:
    name: str
    cpp: str
    bases_cpp: list[str] = field(default_factory=list)
    methods: dict[str, list[list[str] | None]] = field(default_factory=dict)
    static: set[str] = field(default_factory=set)
    properties: dict[str, str] = field(default_factory=dict)
    attributes: set[str] = field(default_factory=set)
    enums: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Module:
    classes: dict[str, Cls] = field(default_factory=dict)
    enums: dict[str, list[str]] = field(default_factory=dict)
    functions: dict[str, list[list[str] | None]] = field(default_factory=dict)
    attributes: set[str] = field(default_factory=set)


def tokens(text: str) -> list[str]:
    text = re.sub(r"//[^\n]*|/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"^\s*#[^\n]*", " ", text, flags=re.M)  # keep every #if branch
    for pat, rep in _MACROS:
        text = pat.sub(rep, text)
    return [m.group(0) for m in _TOKEN.finditer(text)]


def _close(toks: list[str], i: int) -> int:
    """Index just past the bracket group opening at ``toks[i]``."""
    pairs = {"(": ")", "{": "}", "[": "]", "<": ">"}
    opener, closer, depth = toks[i], pairs[toks[i]], 0
    while i < len(toks):
        t = toks[i]
        if t == opener:
            depth += 1
        elif t == closer:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return i


def _template_args(toks: list[str], i: int) -> tuple[list[str], int]:
    """The top-level types of ``<...>`` at ``toks[i]`` (joined text), and the index after it."""
    end, depth, cur, out = i, 0, [], []
    for j in range(i, len(toks)):
        t = toks[j]
        if t == "<":
            depth += 1
            if depth == 1:
                continue
        elif t == ">":
            depth -= 1
            if depth == 0:
                end = j + 1
                break
        if t == "," and depth == 1:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(t)
    out.append("".join(cur))
    return out, end


def _arg_names(toks: list[str]) -> list[str] | None:
    """Keyword names a def declares: pybind ``"x"_a`` / ``py::arg("x")``, Boost ``args("a", ..)``."""
    names: list[str] = []
    for j, t in enumerate(toks):
        if t.startswith('"') and j + 1 < len(toks) and toks[j + 1] == "_a":
            names.append(t[1:-1])
        elif t in ("arg", "args") and j + 2 < len(toks) and toks[j + 1] == "(":
            end = _close(toks, j + 1)
            names += [s[1:-1] for s in toks[j + 2 : end - 1] if s.startswith('"')]
    return names or None


def _first_string(toks: list[str]) -> str | None:
    return next((t[1:-1] for t in toks if t.startswith('"')), None)


class Parser:
    def __init__(self, module: Module) -> None:
        self.m = module
        self.vars: dict[str, Cls] = {}
        self.typedefs: dict[str, str] = {}

    def feed(self, text: str) -> None:
        toks = tokens(text)
        i = 0
        while i < len(toks):
            i = self._step(toks, i)

    def _step(self, toks: list[str], i: int) -> int:
        t = toks[i]
        if t == "typedef" and i + 2 < len(toks):
            end = toks.index(";", i)
            self.typedefs[toks[end - 1]] = "".join(toks[i + 1 : end - 1])
            return end + 1
        if t in ("class_", "enum_") and i + 1 < len(toks) and toks[i + 1] == "<":
            return self._binding(toks, i)
        if t == "def" and toks[i - 1] == "::" and toks[i + 1] == "(":  # py::def / python::def
            return self._module_def(toks, i + 1)
        if t in ("m", "module") and toks[i + 1 : i + 3] == [".", "def"]:
            return self._module_def(toks, i + 3)
        if t == "m" and toks[i + 1 : i + 3] == [".", "attr"] and toks[i + 4].startswith('"'):
            self.m.attributes.add(toks[i + 4][1:-1])
            return i + 5
        if t == "DECLARE_EXC" and toks[i + 1] == "(":  # pycuda's exception classes
            self.m.attributes.add(toks[i + 2])
            return i + 3
        if t in self.vars and toks[i + 1] == "." and toks[i - 1] in (";", "{", "}"):
            return self._chain(toks, i + 1, self.vars[t], None)
        return i + 1

    def _module_def(self, toks: list[str], i: int) -> int:
        end = _close(toks, i)
        inner = toks[i + 1 : end - 1]
        name = _first_string(inner)
        if name:
            self.m.functions.setdefault(name, []).append(_arg_names(inner[1:]))
        return end

    def _binding(self, toks: list[str], i: int) -> int:
        targs, j = _template_args(toks, i + 1)
        var = None
        if toks[j] not in ("(", "{"):
            var, j = toks[j], j + 1
        if toks[j] not in ("(", "{"):
            return j
        end = _close(toks, j)
        inner = toks[j + 1 : end - 1]
        name = _first_string(inner)
        if name is None:
            return end
        scope = inner[0] if inner and inner[0] != name else "m"
        owner = self.vars.get(scope) if scope not in ("m", '"' + name + '"') else None
        if toks[i] == "enum_":
            members: list[str] = []
            (owner.enums if owner else self.m.enums)[name] = members
            return self._chain(toks, end, None, (members, owner))
        cpp = self.typedefs.get(targs[0], targs[0])
        cls = Cls(name, cpp, [self.typedefs.get(b, b) for b in targs[1:]])
        if "init" in inner:  # Boost.Python: the constructor is the class_'s second argument
            k = inner.index("init")
            cls.methods["__init__"] = [_arg_names(inner[k:])]
        self.m.classes.setdefault(name, cls)
        cls = self.m.classes[name]
        if var:
            self.vars[var] = cls
        return self._chain(toks, end, cls, None)

    def _chain(self, toks, i, cls: Cls | None, enum) -> int:
        while i + 1 < len(toks) and toks[i] == "." and toks[i + 2] == "(":
            kind, end = toks[i + 1], _close(toks, i + 2)
            inner = toks[i + 3 : end - 1]
            if enum is not None:
                self._enum_call(kind, inner, enum)
            elif cls is not None:
                self._class_call(kind, inner, cls)
            i = end
        return i

    def _enum_call(self, kind: str, inner: list[str], enum) -> None:
        members, owner = enum
        if kind == "value" and inner and inner[0].startswith('"'):
            if inner[0][1:-1] not in members:  # the same member under two #if branches
                members.append(inner[0][1:-1])
        elif kind == "export_values":
            (owner.attributes if owner else self.m.attributes).update(members)

    def _class_call(self, kind: str, inner: list[str], cls: Cls) -> None:
        name = _first_string(inner[:1]) or ("__init__" if "init" in inner[:4] else None)
        if name is None:
            return
        if kind in ("def", "def_static"):
            args = _arg_names(inner if name == "__init__" else inner[1:])
            cls.methods.setdefault(name, []).append(args)
            if kind == "def_static":
                cls.static.add(name)
        elif kind == "staticmethod":
            cls.static.add(name)
        elif kind in ("def_property", "def_readwrite", "add_property", "def_property_static"):
            ro = kind == "add_property" and inner.count(",") < 2  # Boost: getter only
            if kind == "def_property" and "nullptr" in inner[:4]:
                ro = False
            cls.properties[name] = "ro" if ro else "rw"
        elif kind in ("def_property_readonly", "def_readonly", "def_property_readonly_static"):
            cls.properties[name] = "ro"
        elif kind == "attr":
            cls.attributes.add(name)


def python_names(
    source: str,
) -> tuple[dict[str, list[list[str] | None]], set[str], dict[str, set[str]]]:
    """Top-level functions (with argument names), other names, and ``Class.attr = ...``
    assignments (pycuda's ``_add_functionality``) of a pure-Python module."""
    source = source.replace("##TENSORRT_MODULE##", "tensorrt")
    source = re.sub(r"##\w+##", "False", source)  # the packaging templates' placeholders
    tree = ast.parse(source)
    funcs: dict[str, list[list[str] | None]] = {}
    names: set[str] = set()
    patched: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            funcs[node.name] = [[x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]]
        elif isinstance(node, ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name):
                    patched.setdefault(t.value.id, set()).add(t.attr)
    return funcs, names, patched


def git_show(repo: Path, tag: str, path: str) -> str | None:
    r = subprocess.run(
        ["git", "-C", str(repo), "show", f"{tag}:{path}"], capture_output=True, text=True
    )
    return r.stdout if r.returncode == 0 else None


def git_commit(repo: Path, tag: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), "rev-list", "-n", "1", tag], capture_output=True, text=True
    )
    return out.stdout.strip()


def module_json(m: Module) -> dict:
    by_cpp = {c.cpp.split("::")[-1]: c.name for c in m.classes.values()}
    classes = {}
    for c in sorted(m.classes.values(), key=lambda c: c.name):
        bases = []
        for b in c.bases_cpp:
            b = re.sub(r"^(py|boost::python)::bases<(.*)>$", r"\2", b)
            for part in b.split(","):
                key = part.split("::")[-1]
                if key in by_cpp and by_cpp[key] != c.name:
                    bases.append(by_cpp[key])
        classes[c.name] = {
            "bases": bases,
            "methods": {k: v for k, v in sorted(c.methods.items())},
            "static": sorted(c.static),
            "properties": dict(sorted(c.properties.items())),
            "attributes": sorted(c.attributes),
            "enums": dict(sorted(c.enums.items())),
        }
    return {
        "classes": classes,
        "enums": dict(sorted(m.enums.items())),
        "functions": dict(sorted(m.functions.items())),
        "attributes": sorted(m.attributes - set(m.functions) - set(m.classes) - set(m.enums)),
    }


def record_tensorrt(repo: Path, version: str, tag: str) -> dict:
    mod, used = Module(), []
    parser = Parser(mod)
    for path in TRT_SOURCES:
        text = git_show(repo, tag, path)
        if text is not None:
            parser.feed(text)
            used.append(path)
    for path in TRT_INIT:
        text = git_show(repo, tag, path)
        if text is not None:
            funcs, names, _ = python_names(text)
            for k, v in funcs.items():
                if not k.startswith("_"):
                    mod.functions[k] = v
            mod.attributes.update(n for n in names if not n.startswith("_"))
            mod.attributes.add("__version__")
            used.append(path)
            break
    return {
        "package": "tensorrt",
        "version": version,
        "source": _source("https://github.com/NVIDIA/TensorRT", repo, tag, used),
        "modules": {"tensorrt": module_json(mod)},
    }


def record_pycuda(repo: Path, version: str, tag: str) -> dict:
    drv, used = Module(), []
    parser = Parser(drv)
    for path in PYCUDA_SOURCES:
        text = git_show(repo, tag, path)
        if text is not None:
            parser.feed(text)
            used.append(path)
    modules = {}
    text = git_show(repo, tag, "pycuda/driver.py") or ""
    funcs, names, patched = python_names(text)
    used.append("pycuda/driver.py")
    drv.functions.update({k: v for k, v in funcs.items() if not k.startswith("_")})
    drv.attributes.update(n for n in names if not n.startswith("_"))
    for cname, attrs in patched.items():
        if cname in drv.classes:
            for a in attrs:
                drv.classes[cname].methods.setdefault(a, [None])
    for cname in names:  # pure-Python classes (In, Out, InOut, ...)
        drv.classes.setdefault(cname, Cls(cname, cname))
    modules["pycuda.driver"] = module_json(drv)
    for sub in ("autoinit", "autoprimaryctx"):
        text = git_show(repo, tag, f"pycuda/{sub}.py") or ""
        funcs, names, _ = python_names(text)
        used.append(f"pycuda/{sub}.py")
        modules[f"pycuda.{sub}"] = {
            "classes": {},
            "enums": {},
            "functions": {},
            "attributes": sorted(n for n in names if not n.startswith("_")),
        }
    return {
        "package": "pycuda",
        "version": version,
        "source": _source("https://github.com/inducer/pycuda", repo, tag, used),
        "modules": modules,
    }


def _source(url: str, repo: Path, tag: str, files: list[str]) -> dict:
    return {"repository": url, "tag": tag, "commit": git_commit(repo, tag), "files": files}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tensorrt", type=Path, help="a git clone of NVIDIA/TensorRT")
    ap.add_argument("--pycuda", type=Path, help="a git clone of inducer/pycuda")
    ap.add_argument("-o", "--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = []
    if args.tensorrt:
        jobs += [(record_tensorrt, args.tensorrt, v, t, "tensorrt") for v, t in TRT_TAGS.items()]
    if args.pycuda:
        jobs += [(record_pycuda, args.pycuda, v, t, "pycuda") for v, t in PYCUDA_TAGS.items()]
    for fn, repo, version, tag, pkg in jobs:
        data = fn(repo, version, tag)
        path = args.out / f"{pkg}-{version}.json"
        path.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
        n = sum(len(m["classes"]) for m in data["modules"].values())
        print(f"{path.name}: {n} classes from {tag} ({data['source']['commit'][:12]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
