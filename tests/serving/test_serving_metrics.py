"""Prometheus metrics: the rendered text parses back to exactly what was recorded."""

import re
import threading

import pytest

from serving.metrics import MetricsRegistry, ServingMetrics, exponential_buckets

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def parse_exposition(text):
    """Prometheus text format → ({(name, frozenset(labels)): value}, {name: type}), checking every line."""
    samples, types = {}, {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, metric_type = line.split(" ")
            types[name] = metric_type
        elif not line.startswith("# HELP "):
            name, labels, value = _SAMPLE.fullmatch(line).groups()
            pairs = _LABEL.findall(labels or "")
            assert "".join(f'{k}="{v}",' for k, v in pairs) == (labels + "," if labels else "")
            unescaped = {k: re.sub(r"\\.", lambda m: _UNESCAPE[m.group()], v) for k, v in pairs}
            samples[(name, frozenset(unescaped.items()))] = float(value)
    return samples, types


def sample(samples, name, **labels):
    return samples[(name, frozenset(labels.items()))]


def test_counter_counts_per_label_values():
    registry = MetricsRegistry()
    requests = registry.counter("requests_total", "Requests.", ("model", "status"))
    requests.inc({"model": "vae", "status": "OK"})
    requests.inc({"model": "vae", "status": "OK"}, 2)
    requests.inc({"model": "gan", "status": "NOT_FOUND"})

    samples, types = parse_exposition(registry.render())

    assert types == {"requests_total": "counter"}
    assert sample(samples, "requests_total", model="vae", status="OK") == 3
    assert sample(samples, "requests_total", model="gan", status="NOT_FOUND") == 1
    assert len(samples) == 2


def test_histogram_buckets_are_cumulative_up_to_inf_with_sum_and_count():
    registry = MetricsRegistry()
    latency = registry.histogram("latency", "Latency.", ("api",), buckets=(10, 100))
    for value in (5, 10, 11, 1000):
        latency.observe({"api": "Predict"}, value)

    samples, types = parse_exposition(registry.render())

    assert types == {"latency": "histogram"}
    buckets = [sample(samples, "latency_bucket", api="Predict", le=le) for le in ("10", "100", "+Inf")]
    assert buckets == [2, 3, 4]  # an observation equal to a bound falls in that bucket ("le")
    assert sample(samples, "latency_count", api="Predict") == 4
    assert sample(samples, "latency_sum", api="Predict") == 1026


def test_label_values_are_escaped():
    registry = MetricsRegistry()
    registry.counter("c", "Help with \\ and\nnewline.", ("model",)).inc({"model": 'a"b\\c\nd'})

    text = registry.render()
    samples, _ = parse_exposition(text)

    assert 'c{model="a\\"b\\\\c\\nd"} 1\n' in text
    assert "# HELP c Help with \\\\ and\\nnewline.\n" in text
    assert sample(samples, "c", model='a"b\\c\nd') == 1


def test_counter_is_thread_safe():
    registry = MetricsRegistry()
    counter = registry.counter("c", "C.", ())

    def increment():
        for _ in range(2000):
            counter.inc({})

    threads = [threading.Thread(target=increment) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert parse_exposition(registry.render())[0][("c", frozenset())] == 16000


@pytest.mark.parametrize(
    "misuse, complaint",
    [
        (lambda r: r.counter("c", "C.", ("a",)).inc({"b": "x"}), r"takes labels \['a'\], got \['b'\]"),
        (lambda r: r.counter("c", "C.", ()).inc({}, -1), "cannot decrease"),
        (lambda r: r.counter("bad-name", "C.", ()), "metric name 'bad-name'"),
        (lambda r: r.histogram("h", "H.", ("le",), (1,)), "label name 'le'"),
        (lambda r: r.histogram("h", "H.", (), (2, 1)), "strictly increasing"),
        (lambda r: [r.counter("c", "C.", ()), r.counter("c", "C.", ())], "already registered"),
    ],
)
def test_misuse_is_refused(misuse, complaint):
    with pytest.raises(ValueError, match=complaint):
        misuse(MetricsRegistry())


def test_latency_buckets_match_tf_serving():
    buckets = exponential_buckets(10, 1.8, 33)

    assert len(buckets) == 33 and buckets[:3] == (10, 18, 10 * 1.8 * 1.8)
    assert 20 * 60e6 < buckets[-1] < 25 * 60e6  # about 20 minutes, in microseconds


def test_serving_metrics_use_tf_serving_names_and_microseconds():
    metrics = ServingMetrics()
    metrics.record("vae", "1", "Predict", "GRPC", "OK", latency_seconds=0.0005)
    metrics.record("vae", "1", "Predict", "GRPC", "OK", latency_seconds=0.002)
    metrics.record("vae", "2", "Predict", "REST", "INVALID_ARGUMENT", latency_seconds=0.0001)

    samples, types = parse_exposition(metrics.render())

    assert types == {":tensorflow:serving:request_count": "counter", ":tensorflow:serving:request_latency": "histogram"}
    count = ":tensorflow:serving:request_count"
    assert sample(samples, count, model_name="vae", version="1", API="Predict", entrypoint="GRPC", status="OK") == 2
    assert sample(samples, count, model_name="vae", version="2", API="Predict", entrypoint="REST",
                  status="INVALID_ARGUMENT") == 1
    latency = ":tensorflow:serving:request_latency"
    assert sample(samples, f"{latency}_count", model_name="vae", API="Predict", entrypoint="GRPC") == 2
    assert sample(samples, f"{latency}_sum", model_name="vae", API="Predict", entrypoint="GRPC") == pytest.approx(2500)
    assert (f"{latency}_count", frozenset({"model_name": "vae", "API": "Predict", "entrypoint": "REST"}.items())) \
        not in samples  # like TF Serving, failed requests are counted but not timed
