"""Server-side batching: merged runs, exact per-caller results, and TF Serving's refusals."""

import concurrent.futures
import threading
import time

import numpy as np
import pytest

from serving.batching import Batcher, BatchingError
from serving.config_files import BatchingParameters

LONG_TIMEOUT_MICROS = 10_000_000  # batches then close only when full, which makes merging deterministic


class DoublingModel:
    """A `run` that doubles `x` and numbers the merged rows, remembering every batch it was given."""

    def __init__(self):
        self.batches = []
        self._lock = threading.Lock()

    def __call__(self, key, inputs):
        with self._lock:
            self.batches.append((key, {name: value.copy() for name, value in inputs.items()}))
        x = inputs["x"]
        return {"doubled": x * 2, "row": np.arange(len(x))}


@pytest.fixture
def make_batcher():
    """`make_batcher(run, **parameters)`; every batcher made is closed after the test."""
    batchers = []

    def make(run, **parameters):
        batcher = Batcher(BatchingParameters(**{"num_batch_threads": 2, **parameters}), run)
        batchers.append(batcher)
        return batcher

    yield make
    for batcher in batchers:
        batcher.close()


def submit_concurrently(batcher, requests, timeout=5.0):
    """Submits each (key, inputs) from its own thread; returns a result or raised exception per request."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(requests)) as pool:
        futures = [pool.submit(batcher.submit, key, inputs, timeout) for key, inputs in requests]
        return [future.exception() or future.result() for future in futures]


def caller_inputs(rows_per_caller, width=3):
    """One input dict per caller, with values unique across callers so that mix-ups show."""
    inputs, start = [], 0
    for rows in rows_per_caller:
        inputs.append({"x": np.arange(start, start + rows * width, dtype=np.float32).reshape(rows, width)})
        start += rows * width
    return inputs


def test_concurrent_submits_merge_and_each_caller_gets_exactly_its_rows(make_batcher):
    model = DoublingModel()
    rows_per_caller = [1, 2, 3, 4, 1, 2, 3]
    batcher = make_batcher(model, max_batch_size=sum(rows_per_caller), batch_timeout_micros=LONG_TIMEOUT_MICROS)
    inputs = caller_inputs(rows_per_caller)

    results = submit_concurrently(batcher, [("vae", x) for x in inputs])

    assert len(model.batches) == 1 and len(model.batches[0][1]["x"]) == sum(rows_per_caller)
    merged_rows = []
    for x, result in zip(inputs, results):
        np.testing.assert_array_equal(result["doubled"], x["x"] * 2)
        assert len(result["row"]) == len(x["x"])
        merged_rows.extend(result["row"])
    assert sorted(merged_rows) == list(range(sum(rows_per_caller)))


def test_requests_beyond_a_full_batch_start_the_next_batch(make_batcher):
    model = DoublingModel()
    batcher = make_batcher(model, max_batch_size=4, batch_timeout_micros=LONG_TIMEOUT_MICROS)
    inputs = caller_inputs([1] * 8)

    results = submit_concurrently(batcher, [("vae", x) for x in inputs])

    assert sorted(len(batch["x"]) for _, batch in model.batches) == [4, 4]
    for x, result in zip(inputs, results):
        np.testing.assert_array_equal(result["doubled"], x["x"] * 2)


def test_a_batch_that_never_fills_runs_after_batch_timeout(make_batcher):
    model = DoublingModel()
    batcher = make_batcher(model, max_batch_size=100, batch_timeout_micros=50_000)

    started = time.monotonic()
    result = batcher.submit("vae", {"x": np.ones((2, 3))}, timeout=5.0)

    assert time.monotonic() - started >= 0.05
    np.testing.assert_array_equal(result["doubled"], np.full((2, 3), 2.0))


def test_zero_batch_timeout_runs_a_lone_request_at_once(make_batcher):
    batcher = make_batcher(DoublingModel(), max_batch_size=100, batch_timeout_micros=0)

    result = batcher.submit("vae", {"x": np.ones((1, 3))}, timeout=2.0)

    np.testing.assert_array_equal(result["doubled"], np.full((1, 3), 2.0))


def test_request_larger_than_max_batch_size_is_refused(make_batcher):
    model = DoublingModel()
    batcher = make_batcher(model, max_batch_size=128)

    with pytest.raises(BatchingError, match="batch of 300 exceeds max_batch_size 128") as error:
        batcher.submit("vae", {"x": np.zeros((300, 3))})

    assert error.value.code == "INVALID_ARGUMENT" and model.batches == []


def test_inputs_disagreeing_on_batch_size_are_refused(make_batcher):
    batcher = make_batcher(DoublingModel())

    with pytest.raises(BatchingError, match="share one batch size on axis 0"):
        batcher.submit("vae", {"x": np.zeros((2, 3)), "y": np.zeros((3, 3))})


def test_run_exception_reaches_every_caller_of_the_batch(make_batcher):
    failure = ValueError("model exploded")

    def failing_run(key, inputs):
        raise failure

    batcher = make_batcher(failing_run, max_batch_size=4, batch_timeout_micros=LONG_TIMEOUT_MICROS)

    results = submit_concurrently(batcher, [("vae", x) for x in caller_inputs([1, 1, 2])])

    assert all(result is failure for result in results)


def test_output_without_the_batch_on_axis_0_is_an_error_for_every_caller(make_batcher):
    batcher = make_batcher(lambda key, inputs: {"y": np.zeros(1)}, max_batch_size=2,
                           batch_timeout_micros=LONG_TIMEOUT_MICROS)

    results = submit_concurrently(batcher, [("vae", x) for x in caller_inputs([1, 1])])

    for result in results:
        assert isinstance(result, BatchingError)
        assert "output 'y' of 'vae' has shape (1,), but the merged batch has 2 rows" in str(result)


def test_padding_to_allowed_batch_sizes_is_invisible_to_callers(make_batcher):
    model = DoublingModel()
    batcher = make_batcher(model, max_batch_size=8, allowed_batch_sizes=(4, 8), batch_timeout_micros=0)
    x = caller_inputs([5])[0]

    result = batcher.submit("vae", x, timeout=5.0)

    padded = model.batches[0][1]["x"]
    assert padded.shape == (8, 3)
    np.testing.assert_array_equal(padded[5:], np.repeat(x["x"][-1:], 3, axis=0))
    assert result["doubled"].shape == (5, 3) and list(result["row"]) == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(result["doubled"], x["x"] * 2)


@pytest.mark.parametrize(
    "first, second",
    [
        (("vae", {"x": np.zeros((1, 3))}), ("vae", {"x": np.zeros((1, 4))})),
        (("vae", {"x": np.zeros((1, 3), np.float32)}), ("vae", {"x": np.zeros((1, 3), np.float64)})),
        (("vae", {"x": np.zeros((1, 3))}), ("gan", {"x": np.zeros((1, 3))})),
    ],
    ids=["shape", "dtype", "key"],
)
def test_requests_that_differ_are_not_merged(make_batcher, first, second):
    model = DoublingModel()
    batcher = make_batcher(model, max_batch_size=2, batch_timeout_micros=20_000)

    results = submit_concurrently(batcher, [first, second])

    assert sorted(len(batch["x"]) for _, batch in model.batches) == [1, 1]
    assert results[0]["doubled"].shape == first[1]["x"].shape
    assert results[1]["doubled"].shape == second[1]["x"].shape


def test_full_queue_is_refused_at_once(make_batcher):
    running, release = threading.Event(), threading.Event()

    def blocking_run(key, inputs):
        running.set()
        release.wait()
        return {"y": inputs["x"]}

    batcher = make_batcher(blocking_run, num_batch_threads=1, max_batch_size=1, max_enqueued_batches=1)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        try:
            occupying = pool.submit(batcher.submit, "vae", {"x": np.zeros((1, 3))})
            assert running.wait(5.0)
            with pytest.raises(TimeoutError):  # stays queued: the one allowed batch
                batcher.submit("vae", {"x": np.zeros((1, 3))}, timeout=0.01)

            with pytest.raises(BatchingError, match="batching queue is full") as error:
                batcher.submit("vae", {"x": np.zeros((1, 3))})
            assert error.value.code == "UNAVAILABLE"
        finally:
            release.set()
        assert occupying.result(5.0)["y"].shape == (1, 3)


def test_close_runs_pending_batches_without_waiting_for_the_timeout(make_batcher):
    model = DoublingModel()
    batcher = make_batcher(model, max_batch_size=100, batch_timeout_micros=LONG_TIMEOUT_MICROS)
    with pytest.raises(TimeoutError):  # the request stays queued
        batcher.submit("vae", {"x": np.ones((1, 3))}, timeout=0.01)

    started = time.monotonic()
    batcher.close()

    assert time.monotonic() - started < 5.0
    assert [len(batch["x"]) for _, batch in model.batches] == [1]
    with pytest.raises(BatchingError, match="shut down"):
        batcher.submit("vae", {"x": np.ones((1, 3))})
