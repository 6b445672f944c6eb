"""Torch's intra-op thread pool for small work: ``serial_if_small``.

On a busy machine a parallel torch op waits for its slowest thread: a thread that the
operating system has parked for a time slice stalls an op of microseconds for
milliseconds (measured here: 4 ms mean, 150 ms worst, for a ``nanmean`` of 8 x 4186
values on 2 threads while other processes ran; 30 us on one thread). Calls whose whole
input is small gain nothing from threads, so they run on one.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

# inputs with fewer elements than this run on one thread (about 8 MB of float64)
SMALL_WORK_ELEMENTS = 1 << 20


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
    threads = torch.get_num_threads()
    if n_elements >= SMALL_WORK_ELEMENTS or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
