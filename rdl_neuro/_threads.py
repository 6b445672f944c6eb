"""Torch's intra-op thread pool for small work: ``one_torch_thread``, ``serial_if_small`` and ``ordered_map``.

On a busy machine a parallel torch op waits for its slowest thread: a thread that the
operating system has parked for a time slice stalls an op of microseconds for
milliseconds (measured here: 4 ms mean, 150 ms worst, for a ``nanmean`` of 8 x 4186
values on 2 threads while other processes ran; 30 us on one thread). Calls whose whole
input is small gain nothing from threads, so they run on one. Work made of many small
independent pieces (the searchlight's chunks of spheres) uses the cores instead by running
the pieces side by side in Python threads (torch ops release the GIL), each op on one
torch thread: ``ordered_map`` inside ``one_torch_thread``.
"""
from __future__ import annotations

import contextlib
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import torch

# inputs with fewer elements than this run on one thread (about 8 MB of float64)
SMALL_WORK_ELEMENTS = 1 << 20
# ordered_map: items in flight per worker. With one, a worker that finished its item idled until the
# older item of the other worker was taken; with 4 the 35k-sphere searchlight on 2 cores took 0.85-0.92 s
# instead of 0.95-1.05 s
IN_FLIGHT_PER_WORKER = 4

T = TypeVar("T")
R = TypeVar("R")


@contextlib.contextmanager
def one_torch_thread() -> Iterator[int]:
    """Run the block on one torch intra-op thread; yields the thread count on entry, restored on exit
    (also after an exception). ``torch.set_num_threads`` is process-wide: threads started inside the
    block run their torch ops on one thread too.

    Examples
    --------
    >>> import torch
    >>> with one_torch_thread() as threads:
    ...     inside = torch.get_num_threads()
    >>> inside, threads == torch.get_num_threads()
    (1, True)
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield threads
        return
    torch.set_num_threads(1)
    try:
        yield threads
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def serial_if_small(n_elements: int) -> Iterator[None]:
    """Run the block on one torch thread when ``n_elements`` (the input's size) is below
    ``SMALL_WORK_ELEMENTS``; otherwise leave the thread count alone.

    Examples
    --------
    >>> import torch
    >>> x = torch.rand(8, 100)
    >>> with serial_if_small(x.numel()):
    ...     y = (x - x.mean(1, keepdim=True)).sum()
    """
    if n_elements >= SMALL_WORK_ELEMENTS:
        yield
        return
    with one_torch_thread():
        yield


def chunk_workers(threads: int, device: torch.device | str) -> int:
    """Python threads for independent pieces of work on ``device``: ``threads`` (torch's thread count on
    entry) on the CPU, 1 on an accelerator (its work queues on one stream whichever thread launches it)."""
    return max(1, threads) if torch.device(device).type == "cpu" else 1


def ordered_map(func: Callable[[T], R], items: Iterable[T], workers: int, per_task: int = 1) -> Iterator[R]:
    """``func(item)`` for every item, in the items' order, computed by ``workers`` Python threads side by side.

    A worker takes ``per_task`` consecutive items at a time: every hand-over wakes the threads
    involved, which on small items costs more than it saves (the searchlight's chunks of 66 spheres:
    4 at a time took 0.68-0.70 s on 2 cores, one at a time 0.74-0.82 s). At most
    ``IN_FLIGHT_PER_WORKER * workers`` tasks are in flight (running or done and not yet taken), so
    memory stays bounded; ``workers <= 1`` calls ``func`` in the caller's thread, one item after the
    other. An exception of ``func`` is raised when its item's turn comes (after the results of the
    items before it, as in a loop); items not yet started are then dropped. Each result depends only
    on its item, so the results do not depend on ``workers`` or ``per_task``.

    Examples
    --------
    >>> list(ordered_map(lambda x: x * x, range(5), workers=2, per_task=2))
    [0, 1, 4, 9, 16]
    """
    if per_task < 1:
        raise ValueError(f"per_task must be at least 1, got {per_task}")
    if workers <= 1:
        yield from map(func, items)
        return

    def run(task: list[T]) -> tuple[list[R], BaseException | None]:
        done: list[R] = []
        for item in task:
            try:
                done.append(func(item))
            except BaseException as error:  # noqa: BLE001 - raised in the caller's thread at its turn
                return done, error
        return done, None

    def take(future: Future[tuple[list[R], BaseException | None]]) -> Iterator[R]:
        done, error = future.result()
        yield from done
        if error is not None:
            raise error

    pool = ThreadPoolExecutor(max_workers=workers)
    pending: deque[Future[tuple[list[R], BaseException | None]]] = deque()
    iterator = iter(items)
    try:
        while task := list(itertools.islice(iterator, per_task)):
            if len(pending) == IN_FLIGHT_PER_WORKER * workers:
                yield from take(pending.popleft())
            pending.append(pool.submit(run, task))
        while pending:
            yield from take(pending.popleft())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
