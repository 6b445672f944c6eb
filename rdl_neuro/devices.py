"""Devices: ``check_device`` turns a user's device choice into a ``torch.device`` that exists here.

``torch.device("cuda")`` is accepted on a machine without CUDA and only fails
later, deep inside ``model.to``; checking once where the choice enters (the
Trainer, ``layer_rdms``, the command line) gives an error that names it.
"""
from __future__ import annotations

import torch

__all__ = ["check_device"]


def check_device(device: str | torch.device, what: str = "device") -> torch.device:
    """``torch.device(device)``, or a ValueError naming ``what`` when it is malformed or absent here.

    Examples
    --------
    >>> check_device("cpu")
    device(type='cpu')
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{what} {device!r} is not a device name (use e.g. 'cpu', 'cuda', 'cuda:1'): "
                         f"{err}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{what} {str(device)!r}: CUDA is not available on this machine "
                             "(torch.cuda.is_available() is False); use 'cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{what} {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"{what} {str(device)!r}: MPS is not available on this machine; use 'cpu'")
    return dev
