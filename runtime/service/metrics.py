"""The service's Prometheus metrics: prometheus_client metrics in a per-service registry.

On top only what the status page needs: histogram quantiles, and NaN for a failing callback.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from hxsched._compat import missing_dependency

try:
    import prometheus_client
    from prometheus_client import CollectorRegistry, Counter, disable_created_metrics
    from prometheus_client.exposition import choose_encoder
except ImportError as exc:  # one line naming the extra to install, not a traceback
    raise missing_dependency("prometheus_client", "service", exc) from exc

__all__ = ["LATENCY_BUCKETS", "Counter", "Gauge", "Histogram", "Registry", "exposition"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# prometheus_client docs, "Instrumenting: Disabling _created metrics" (prometheus-client >= 0.18):
# without this every counter and histogram gains a `<name>_created` gauge family in text 0.0.4.
disable_created_metrics()

# Prometheus "Data model: Metric names and labels": names that every scraper and the text
# format 0.0.4 accept. Recent prometheus_client releases also take UTF-8 names and rewrite
# them on output (escaping=underscores), so such a name is rejected here instead.
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


class Gauge(prometheus_client.Gauge):
    """A gauge whose ``set_function`` callback reads NaN when it raises, so ``/metrics`` stays up."""

    def set_function(self, f: Callable[[], float]) -> None:
        def safe() -> float:
            try:
                return float(f())
            except Exception:  # e.g. a queue depth read from a journal that has closed
                return math.nan

        super().set_function(safe)


class Histogram(prometheus_client.Histogram):
    """A histogram that can estimate its quantiles for the status page."""

    def quantile(self, q: float) -> float | None:
        """Estimate the ``q`` quantile like PromQL ``histogram_quantile``; None if empty.

        Interpolates linearly inside the bucket (the first bucket starts at 0); a rank in the
        +Inf bucket returns the highest finite bound (Prometheus docs, "Query functions:
        histogram_quantile()").
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {q}")
        self._raise_if_not_observable()  # as observe() does: a labelled parent has no buckets
        (family,) = self.collect()
        buckets = [
            (float(s.labels["le"]), s.value)
            for s in family.samples
            if s.name == family.name + "_bucket"
        ]
        total = buckets[-1][1]
        if total == 0:
            return None
        rank, lower, below = q * total, 0.0, 0.0
        for upper, cumulative in buckets:
            if cumulative >= rank and cumulative > below:
                if math.isinf(upper):
                    return lower
                return lower + (upper - lower) * (rank - below) / (cumulative - below)
            lower, below = upper, cumulative
        return lower


_Metric = Counter | Gauge | Histogram
_M = TypeVar("_M", Counter, Gauge, Histogram)


class Registry(CollectorRegistry):
    """One service's metrics (never prometheus_client's global default registry).

    ``counter``/``gauge``/``histogram`` create a metric on first use and return the same
    object for the same name, kind and labels; anything else under that name is a ValueError.
    Export it with ``prometheus_client.generate_latest(registry)``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._families: dict[str, tuple[tuple[str, ...], _Metric]] = {}
        self._families_lock = threading.Lock()

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        """The counter ``name`` (ending in ``_total``)."""
        return self._get_or_create(Counter, name, help, labelnames)

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Gauge:
        """The gauge ``name``."""
        return self._get_or_create(Gauge, name, help, labelnames)

    def histogram(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        """The histogram ``name`` with these bucket upper bounds (+Inf is added)."""
        return self._get_or_create(Histogram, name, help, labelnames, buckets=buckets)

    def get(self, name: str) -> _Metric | None:
        """The metric created as ``name``, or None."""
        with self._families_lock:
            entry = self._families.get(name)
        return entry[1] if entry else None

    def _get_or_create(
        self, cls: type[_M], name: str, help: str, labels: Sequence[str], **kw: Any
    ) -> _M:
        labelnames = tuple(labels)
        if not _NAME.fullmatch(name):
            raise ValueError(f"invalid metric name {name!r}: use letters, digits, '_' and ':'")
        for label in labelnames:
            if not _LABEL.fullmatch(label) or label.startswith("__"):
                raise ValueError(f"invalid label name {label!r} for metric {name}")
        with self._families_lock:
            old = self._families.get(name)
            if old is not None:
                known, metric = old
                if not isinstance(metric, cls) or known != labelnames:
                    raise ValueError(
                        f"metric {name} is already registered as a {type(metric).__name__.lower()}"
                        f" with labels {list(known)}"
                    )
                return metric
            created = cls(name, help, labelnames, registry=self, **kw)
            self._families[name] = (labelnames, created)
            return created


def exposition(registry: CollectorRegistry, accept: str = "") -> tuple[bytes, str]:
    """The ``/metrics`` body and Content-Type, negotiated as prometheus_client's own
    MetricsHandler does: OpenMetrics when ``accept`` asks for it, else text format 0.0.4."""
    encode, content_type = choose_encoder(accept)
    return encode(registry), content_type
