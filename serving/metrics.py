"""Prometheus metrics for the server's `/monitoring/prometheus/metrics` endpoint.

The per-request metrics are TF Serving's own (tensorflow_serving/servables/tensorflow/util.cc), under
the names its Prometheus exporter gives them ("/" becomes ":"), so dashboards built for
`tensorflow_model_server` work unchanged:

    :tensorflow:serving:request_count    counter    model_name, status; here also version, API, entrypoint
    :tensorflow:serving:request_latency  histogram  model_name, API, entrypoint; wall time in microseconds,
                                                    buckets 10 * 1.8**i for i < 33 (up to about 20 minutes)

The extra request_count labels keep TF Serving's selectors and `sum by (model_name, status)` queries
valid while also telling REST from gRPC and one version from another. Label values name only served
models and versions (requests for others count under model_name="(unknown)", version=""), so the
number of series is bounded by the configuration, not by what clients send.

`render()` writes the Prometheus text exposition format, version 0.0.4.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import re
import threading
from typing import Mapping, Sequence

UNKNOWN_MODEL = "(unknown)"  # the model_name of requests naming a model that is not served
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def exponential_buckets(scale: float, growth: float, count: int) -> tuple[float, ...]:
    """Bucket upper bounds scale, scale*growth, ..., computed as TF's Buckets::Exponential does."""
    bounds = [scale]
    for _ in range(count - 1):
        bounds.append(bounds[-1] * growth)
    return tuple(bounds)


def _format_number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _format_labels(pairs: Sequence[tuple[str, str]]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{name}="{_escape_label_value(value)}"' for name, value in pairs) + "}"


def _header(name: str, help_text: str, metric_type: str) -> list[str]:
    escaped_help = help_text.replace("\\", "\\\\").replace("\n", "\\n")
    return [f"# HELP {name} {escaped_help}", f"# TYPE {name} {metric_type}"]


def _check_names(name: str, label_names: Sequence[str], reserved: Sequence[str] = ()) -> None:
    if not _METRIC_NAME.fullmatch(name):
        raise ValueError(f"metric name {name!r} must match {_METRIC_NAME.pattern}")
    for label in label_names:
        if not _LABEL_NAME.fullmatch(label) or label.startswith("__") or label in reserved:
            raise ValueError(f"label name {label!r} of {name} must match {_LABEL_NAME.pattern}, "
                             f"not start with '__' and not be one of {list(reserved)}")
    if len(set(label_names)) != len(label_names):
        raise ValueError(f"label names of {name} repeat: {list(label_names)}")


def _label_values(name: str, label_names: tuple[str, ...], labels: Mapping[str, str]) -> tuple[str, ...]:
    """The values of `labels` in declaration order; the keys must be exactly the declared names."""
    if set(labels) != set(label_names):
        raise ValueError(f"{name} takes labels {list(label_names)}, got {sorted(labels)}")
    return tuple(str(labels[label]) for label in label_names)


class Counter:
    """A monotonically increasing count per combination of label values."""

    def __init__(self, name: str, help_text: str, label_names: Sequence[str]):
        _check_names(name, label_names)
        self.name, self.help_text, self.label_names = name, help_text, tuple(label_names)
        self._lock = threading.Lock()
        self._values: dict[tuple[str, ...], float] = {}

    def inc(self, labels: Mapping[str, str], amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError(f"{self.name} is a counter; it cannot decrease by {amount}")
        key = _label_values(self.name, self.label_names, labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def render(self) -> list[str]:
        with self._lock:
            values = sorted(self._values.items())
        lines = _header(self.name, self.help_text, "counter")
        for key, value in values:
            labels = _format_labels(list(zip(self.label_names, key)))
            lines.append(f"{self.name}{labels} {_format_number(value)}")
        return lines


@dataclasses.dataclass
class _HistogramSeries:
    bucket_counts: list[int]  # observations per bucket, not cumulative; the last bucket is +Inf
    total: float = 0.0


class Histogram:
    """Counts of observations at or below fixed upper bounds, with their sum, per label values."""

    def __init__(self, name: str, help_text: str, label_names: Sequence[str], buckets: Sequence[float]):
        _check_names(name, label_names, reserved=("le",))
        bounds = [float(bound) for bound in buckets]
        if not bounds or any(a >= b for a, b in zip(bounds, bounds[1:])) or not math.isfinite(bounds[-1]):
            raise ValueError(f"buckets of {name} must be finite and strictly increasing; +Inf is implicit")
        self.name, self.help_text, self.label_names = name, help_text, tuple(label_names)
        self.bounds = tuple(bounds)
        self._lock = threading.Lock()
        self._series: dict[tuple[str, ...], _HistogramSeries] = {}

    def observe(self, labels: Mapping[str, str], value: float) -> None:
        key = _label_values(self.name, self.label_names, labels)
        bucket = bisect.bisect_left(self.bounds, value)  # first bound >= value; len(bounds) is +Inf
        with self._lock:
            series = self._series.setdefault(key, _HistogramSeries([0] * (len(self.bounds) + 1)))
            series.bucket_counts[bucket] += 1
            series.total += value

    def render(self) -> list[str]:
        with self._lock:
            series = sorted((key, list(s.bucket_counts), s.total) for key, s in self._series.items())
        lines = _header(self.name, self.help_text, "histogram")
        for key, counts, total in series:
            pairs = list(zip(self.label_names, key))
            cumulative = 0
            for bound, count in zip(self.bounds + (math.inf,), counts):
                cumulative += count
                labels = _format_labels(pairs + [("le", _format_number(bound))])
                lines.append(f"{self.name}_bucket{labels} {cumulative}")
            lines.append(f"{self.name}_sum{_format_labels(pairs)} {_format_number(total)}")
            lines.append(f"{self.name}_count{_format_labels(pairs)} {cumulative}")
        return lines


class MetricsRegistry:
    """The metrics one endpoint exposes, rendered in the order they were created."""

    def __init__(self):
        self._lock = threading.Lock()
        self._metrics: dict[str, Counter | Histogram] = {}

    def _add(self, metric):
        with self._lock:
            if metric.name in self._metrics:
                raise ValueError(f"a metric named {metric.name} is already registered")
            self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help_text: str, label_names: Sequence[str]) -> Counter:
        return self._add(Counter(name, help_text, label_names))

    def histogram(
        self, name: str, help_text: str, label_names: Sequence[str], buckets: Sequence[float]
    ) -> Histogram:
        return self._add(Histogram(name, help_text, label_names, buckets))

    def render(self) -> str:
        with self._lock:
            metrics = list(self._metrics.values())
        return "".join(line + "\n" for metric in metrics for line in metric.render())


class ServingMetrics:
    """TF Serving's per-request metrics, recorded by the server once a request is answered."""

    def __init__(self):
        self.registry = MetricsRegistry()
        self._request_count = self.registry.counter(
            ":tensorflow:serving:request_count",
            "The total number of requests.",
            ("model_name", "version", "API", "entrypoint", "status"),
        )
        self._request_latency = self.registry.histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ("model_name", "API", "entrypoint"),
            exponential_buckets(10, 1.8, 33),  # util.cc: about 20 minutes at the top
        )

    def record(self, model_name: str, version: str, api: str, entrypoint: str, status: str,
               latency_seconds: float) -> None:
        """Counts one request; `status` is a gRPC code name such as "OK" or "INVALID_ARGUMENT".

        As in TF Serving, only successful requests enter the latency histogram, so fast failures
        do not flatter it.
        """
        self._request_count.inc(
            {"model_name": model_name, "version": version, "API": api, "entrypoint": entrypoint,
             "status": status}
        )
        if status == "OK":
            self._request_latency.observe(
                {"model_name": model_name, "API": api, "entrypoint": entrypoint}, latency_seconds * 1e6
            )

    def render(self) -> str:
        return self.registry.render()
