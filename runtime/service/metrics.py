"""Thread-safe counters, gauges and histograms rendered in Prometheus text format 0.0.4.

No dependencies: the service exposes ``Registry.render()`` at ``/metrics``.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterable, Sequence

from hxsched.errors import HxschedError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def format_value(value: float) -> str:
    """A sample value as Prometheus writes it: ``+Inf``, ``-Inf``, ``NaN``, ``3``, ``0.25``."""
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def escape_label_value(value: str) -> str:
    """Escape backslash, double quote and newline in a label value."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels_text(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in pairs)
    return "{" + inner + "}" if inner else ""


class _Metric:
    """A metric family: a name, help text, label names and one child per label-value tuple."""

    kind = "untyped"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        if not _NAME.fullmatch(name):
            raise HxschedError(f"invalid metric name {name!r}: use letters, digits, '_' and ':'")
        for label in labelnames:
            if not _LABEL.fullmatch(label) or label.startswith("__") or label in self._reserved():
                raise HxschedError(f"invalid label name {label!r} for metric {name}")
        if len(set(labelnames)) != len(labelnames):
            raise HxschedError(f"repeated label names {list(labelnames)} for metric {name}")
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()
        self._children: dict[tuple[str, ...], _Metric] = {}
        self._parent: _Metric | None = None
        self._labelvalues: tuple[str, ...] = ()

    def _reserved(self) -> tuple[str, ...]:
        return ()

    def _new_child(self) -> _Metric:
        raise NotImplementedError

    def labels(self, *values: object, **kv: object) -> _Metric:
        """The child for these label values (positional in label order, or by name)."""
        if values and kv:
            raise HxschedError(f"{self.name}: give label values positionally or by name, not both")
        if kv:
            if set(kv) != set(self.labelnames):
                raise HxschedError(f"{self.name}: labels {sorted(kv)} != {list(self.labelnames)}")
            values = tuple(kv[n] for n in self.labelnames)
        if len(values) != len(self.labelnames) or not self.labelnames:
            raise HxschedError(
                f"{self.name}: expected label values for {list(self.labelnames)}, got {values}"
            )
        key = tuple(str(v) for v in values)
        with self._lock:
            child = self._children.get(key)
            if child is None:
                child = self._new_child()
                child._parent = self
                child._labelvalues = key
                child._lock = self._lock
                self._children[key] = child
        return child

    def _check_unlabelled(self) -> None:
        if self.labelnames and self._parent is None:
            raise HxschedError(f"{self.name} has labels {list(self.labelnames)}: use .labels()")

    def _samples(self) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
        raise NotImplementedError

    def render(self) -> str:
        """This family in text format: HELP, TYPE, then every sample."""
        lines = [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]
        with self._lock:
            if self.labelnames:
                members = [
                    (tuple(zip(self.labelnames, key, strict=True)), child)
                    for key, child in self._children.items()
                ]
            else:
                members = [((), self)]
            samples = [
                (suffix, base + extra, value)
                for base, member in members
                for suffix, extra, value in member._samples()
            ]
        for suffix, pairs, value in samples:
            lines.append(f"{self.name}{suffix}{_labels_text(pairs)} {format_value(value)}")
        return "\n".join(lines) + "\n"


class Counter(_Metric):
    """A monotonically increasing count (name it ``..._total``)."""

    kind = "counter"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help, labelnames)
        self._value = 0.0

    def _new_child(self) -> Counter:
        return Counter(self.name, self.help)

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (>= 0)."""
        self._check_unlabelled()
        if amount < 0:
            raise HxschedError(f"counter {self.name} cannot decrease (inc({amount}))")
        with self._lock:
            self._value += amount

    @property
    def value(self) -> float:
        return self._value

    def _samples(self):
        return [("", (), self._value)]


class Gauge(_Metric):
    """A value that goes up and down, or is read from a callback at render time."""

    kind = "gauge"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help, labelnames)
        self._value = 0.0
        self._function: Callable[[], float] | None = None

    def _new_child(self) -> Gauge:
        return Gauge(self.name, self.help)

    def set(self, value: float) -> None:
        """Set the value."""
        self._check_unlabelled()
        with self._lock:
            self._value = float(value)

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount``."""
        self._check_unlabelled()
        with self._lock:
            self._value += amount

    def dec(self, amount: float = 1.0) -> None:
        """Subtract ``amount``."""
        self.inc(-amount)

    def set_function(self, function: Callable[[], float]) -> None:
        """Read the value from ``function()`` whenever it is rendered (e.g. a queue depth)."""
        self._check_unlabelled()
        self._function = function

    @property
    def value(self) -> float:
        if self._function is None:
            return self._value
        try:
            return float(self._function())
        except Exception:  # a failing callback must not take /metrics down
            return math.nan

    def _samples(self):
        return [("", (), self.value)]


class Histogram(_Metric):
    """Observations counted into fixed cumulative buckets, with their sum and count."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        super().__init__(name, help, labelnames)
        bounds = [float(b) for b in buckets if not math.isinf(float(b))]
        if not bounds or sorted(set(bounds)) != bounds:
            raise HxschedError(f"histogram {name}: buckets must be increasing, got {buckets}")
        self.buckets = (*bounds, math.inf)
        self._counts = [0] * len(self.buckets)
        self._sum = 0.0

    def _reserved(self) -> tuple[str, ...]:
        return ("le",)

    def _new_child(self) -> Histogram:
        return Histogram(self.name, self.help, buckets=self.buckets)

    def observe(self, value: float) -> None:
        """Record one observation."""
        self._check_unlabelled()
        with self._lock:
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    self._counts[i] += 1
                    break
            self._sum += value

    @property
    def count(self) -> int:
        return sum(self._counts)

    @property
    def sum(self) -> float:
        return self._sum

    def quantile(self, q: float) -> float | None:
        """Estimate the ``q`` quantile like PromQL ``histogram_quantile``; None if empty.

        Interpolates linearly inside the bucket; a rank in the +Inf bucket returns the
        highest finite bound.
        """
        if not 0.0 <= q <= 1.0:
            raise HxschedError(f"quantile must be in [0, 1], got {q}")
        self._check_unlabelled()
        with self._lock:
            counts = list(self._counts)
        total = sum(counts)
        if total == 0:
            return None
        rank = q * total
        cumulative = 0
        for i, n in enumerate(counts):
            if cumulative + n >= rank and n > 0:
                upper = self.buckets[i]
                if math.isinf(upper):
                    return self.buckets[-2]
                lower = self.buckets[i - 1] if i > 0 else 0.0
                return lower + (upper - lower) * (rank - cumulative) / n
            cumulative += n
        return self.buckets[-2]

    def _samples(self):
        out = []
        cumulative = 0
        for bound, n in zip(self.buckets, self._counts, strict=True):
            cumulative += n
            out.append(("_bucket", (("le", format_value(bound)),), cumulative))
        out.append(("_sum", (), self._sum))
        out.append(("_count", (), cumulative))
        return out


class Registry:
    """The metric families the service exposes, rendered in registration order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[str, _Metric] = {}

    def register(self, metric: _Metric) -> _Metric:
        """Add a metric; the same name twice is an error unless it is the same object."""
        with self._lock:
            old = self._metrics.get(metric.name)
            if old is not None and old is not metric:
                raise HxschedError(f"metric {metric.name} is already registered")
            self._metrics[metric.name] = metric
        return metric

    def _get_or_create(self, cls: type, name: str, help: str, labelnames, **kw) -> _Metric:
        with self._lock:
            old = self._metrics.get(name)
            if old is not None:
                if type(old) is not cls or old.labelnames != tuple(labelnames):
                    raise HxschedError(
                        f"metric {name} is already registered as a {old.kind} with labels "
                        f"{list(old.labelnames)}"
                    )
                return old
            metric = cls(name, help, labelnames, **kw)
            self._metrics[name] = metric
            return metric

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        """The counter ``name``, created on first use."""
        return self._get_or_create(Counter, name, help, labelnames)

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Gauge:
        """The gauge ``name``, created on first use."""
        return self._get_or_create(Gauge, name, help, labelnames)

    def histogram(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        """The histogram ``name``, created on first use."""
        return self._get_or_create(Histogram, name, help, labelnames, buckets=buckets)

    def get(self, name: str) -> _Metric | None:
        """The metric registered as ``name``, or None."""
        with self._lock:
            return self._metrics.get(name)

    def render(self) -> str:
        """All families in Prometheus text exposition format 0.0.4."""
        with self._lock:
            metrics = list(self._metrics.values())
        return "".join(m.render() for m in metrics)
