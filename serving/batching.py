"""Server-side batching, as `tensorflow_model_server --enable_batching` does it.

Concurrent requests for one signature are merged along axis 0, run once, and the result is split
back so that each caller gets exactly its own rows. The policy follows TF Serving's
SharedBatchScheduler and BatchingSession (tensorflow/core/kernels/batching_util/):

- Requests share a queue only when they share a key (model, version, signature) and every input has
  the same dtype and non-batch shape, so merging is plain concatenation.
- A request that does not fit in a queue's open batch closes it and opens a new one. Requests are
  never split, so one larger than max_batch_size is refused.
- A batch is ready once it is full, once a newer batch follows it, or batch_timeout_micros after its
  first request arrived. num_batch_threads workers run ready batches, earliest deadline first. With a
  timeout of 0 an idle server runs each request at once, and a busy one batches whatever arrives
  while its workers are occupied.
- With allowed_batch_sizes, a merged batch is padded up to the next allowed size by repeating its
  last row; the padding never reaches a caller.
- A queue already holding max_enqueued_batches batches refuses to open another (TF Serving answers
  UNAVAILABLE), which bounds latency under overload instead of queueing without limit.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from typing import Callable, Hashable

import numpy as np

from serving.config_files import BatchingParameters

Tensors = dict[str, np.ndarray]


class BatchingError(RuntimeError):
    """A request the batcher refuses, or a batch whose outputs cannot be split back.

    `code` is the gRPC status name TF Serving answers with in the same situation.
    """

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


@dataclasses.dataclass(eq=False)
class _Request:
    inputs: Tensors
    rows: int
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    outputs: Tensors | None = None
    error: Exception | None = None


@dataclasses.dataclass(eq=False)
class _Batch:
    key: Hashable
    deadline: float  # time.monotonic() at which the batch runs even if not full
    requests: list[_Request] = dataclasses.field(default_factory=list)
    rows: int = 0


def _rows(inputs: Tensors) -> int:
    """The batch size shared by all inputs (their axis 0), refusing inputs that cannot be merged."""
    if not inputs:
        raise BatchingError("the request has no inputs; batching needs at least one", "INVALID_ARGUMENT")
    sizes = {name: value.shape[0] if value.ndim else None for name, value in inputs.items()}
    if None in sizes.values() or len(set(sizes.values())) != 1:
        raise BatchingError(
            f"inputs must share one batch size on axis 0 to be batched, got {sizes}", "INVALID_ARGUMENT"
        )
    rows = next(iter(sizes.values()))
    if rows == 0:
        raise BatchingError("the request has 0 rows; send at least one", "INVALID_ARGUMENT")
    return rows


def _layout(inputs: Tensors) -> tuple:
    """What two requests must share to be concatenated: input names, dtypes and non-batch shapes."""
    return tuple(sorted((name, value.dtype, value.shape[1:]) for name, value in inputs.items()))


class Batcher:
    """Merges concurrent `submit` calls into batches and runs them on a pool of worker threads.

    `run(key, inputs) -> outputs` executes one merged batch. It is called from up to
    num_batch_threads threads at once, and every output must keep the batch on axis 0.
    """

    def __init__(self, parameters: BatchingParameters, run: Callable[[Hashable, Tensors], Tensors]):
        self._parameters = parameters
        self._run = run
        self._condition = threading.Condition()
        self._queues: dict[tuple, collections.deque[_Batch]] = {}  # (key, layout) -> batches, newest last
        self._closed = False
        self._workers = [
            threading.Thread(target=self._work, name=f"{parameters.thread_pool_name}_{index}", daemon=True)
            for index in range(parameters.num_batch_threads)
        ]
        for worker in self._workers:
            worker.start()

    def submit(self, key: Hashable, inputs: Tensors, timeout: float | None = None) -> Tensors:
        """Runs `inputs` as part of a batch and returns this request's rows of every output.

        Raises BatchingError for a request that cannot be batched, the exception `run` raised for
        its batch, or TimeoutError after `timeout` seconds (the batch still runs).
        """
        inputs = {name: np.asarray(value) for name, value in inputs.items()}
        rows = _rows(inputs)
        max_batch_size = self._parameters.max_batch_size
        if rows > max_batch_size:
            raise BatchingError(
                f"batch of {rows} exceeds max_batch_size {max_batch_size} of --batching_parameters_file; "
                "send smaller requests",
                "INVALID_ARGUMENT",
            )
        request = _Request(inputs, rows)
        with self._condition:
            if self._closed:
                raise BatchingError("the batcher is shut down; the server is stopping", "UNAVAILABLE")
            queue = self._queues.setdefault((key, _layout(inputs)), collections.deque())
            if not queue or queue[-1].rows + rows > max_batch_size:
                if len(queue) >= self._parameters.max_enqueued_batches:
                    raise BatchingError(
                        f"batching queue is full ({len(queue)} batches waiting, max_enqueued_batches "
                        f"{self._parameters.max_enqueued_batches}); retry later or raise max_enqueued_batches "
                        "or num_batch_threads in --batching_parameters_file",
                        "UNAVAILABLE",
                    )
                timeout_seconds = self._parameters.batch_timeout_micros / 1e6
                queue.append(_Batch(key, deadline=time.monotonic() + timeout_seconds))
                self._condition.notify_all()  # a new deadline, and the previous batch is now closed
            batch = queue[-1]
            batch.requests.append(request)
            batch.rows += rows
            if batch.rows == max_batch_size:
                self._condition.notify_all()
        if not request.done.wait(timeout):
            raise TimeoutError(f"no result for {key!r} within {timeout} s; its batch is queued or running")
        if request.error is not None:
            raise request.error
        return request.outputs

    def close(self) -> None:
        """Stops the workers once every request already submitted has its result."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        for worker in self._workers:
            worker.join()

    def _is_ready(self, queue: collections.deque[_Batch], now: float) -> bool:
        head = queue[0]
        takes_no_more = len(queue) > 1 or head.rows == self._parameters.max_batch_size
        return takes_no_more or head.deadline <= now or self._closed

    def _take_ready_batch(self) -> _Batch | None:
        """Removes and returns the ready batch with the earliest deadline. Call with the lock held."""
        now = time.monotonic()
        ready = [queue_key for queue_key, queue in self._queues.items() if self._is_ready(queue, now)]
        if not ready:
            return None
        queue_key = min(ready, key=lambda queue_key: self._queues[queue_key][0].deadline)
        queue = self._queues[queue_key]
        batch = queue.popleft()
        if not queue:
            del self._queues[queue_key]
        return batch

    def _seconds_to_next_deadline(self) -> float | None:
        """How long a worker may sleep before some batch times out; None when nothing is queued."""
        if not self._queues:
            return None
        return max(0.0, min(queue[0].deadline for queue in self._queues.values()) - time.monotonic())

    def _work(self) -> None:
        while True:
            with self._condition:
                batch = self._take_ready_batch()
                while batch is None:
                    if self._closed and not self._queues:
                        return
                    self._condition.wait(self._seconds_to_next_deadline())
                    batch = self._take_ready_batch()
            self._process(batch)

    def _process(self, batch: _Batch) -> None:
        """Runs one batch and hands each request its rows, or the batch's exception."""
        try:
            outputs = self._run_merged(batch)
            start = 0
            for request in batch.requests:
                rows = slice(start, start + request.rows)
                request.outputs = {name: value[rows] for name, value in outputs.items()}
                start += request.rows
        except Exception as error:  # the batch's callers share one fate
            for request in batch.requests:
                request.error = error
        finally:
            for request in batch.requests:
                request.done.set()

    def _run_merged(self, batch: _Batch) -> Tensors:
        """Concatenates the batch's inputs, pads them to an allowed size, runs them, checks axis 0."""
        allowed_sizes = self._parameters.allowed_batch_sizes
        padded_rows = next((size for size in allowed_sizes if size >= batch.rows), batch.rows)
        merged = {}
        for name in batch.requests[0].inputs:
            parts = [request.inputs[name] for request in batch.requests]
            padding = np.repeat(parts[-1][-1:], padded_rows - batch.rows, axis=0)
            merged[name] = np.concatenate(parts + [padding])
        outputs = {name: np.asarray(value) for name, value in self._run(batch.key, merged).items()}
        for name, value in outputs.items():
            if value.ndim == 0 or value.shape[0] != padded_rows:
                raise BatchingError(
                    f"output {name!r} of {batch.key!r} has shape {value.shape}, but the merged batch has "
                    f"{padded_rows} rows; a batched signature must keep the batch on axis 0 of every output",
                    "INTERNAL",
                )
        return outputs
