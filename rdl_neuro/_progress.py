"""Progress bars: ``progress_bar``, tqdm's widget in notebooks with ipywidgets, text bars elsewhere."""
from __future__ import annotations

from typing import Any


def progress_bar(iterable: Any = None, **kwargs: Any) -> Any:
    """``tqdm(iterable, **kwargs)``, choosing the notebook widget only where it can be shown.

    ``tqdm.auto`` warns ("IProgress not found") in Jupyter kernels without
    ipywidgets; the plain text bar works everywhere.
    """
    try:
        import ipywidgets  # noqa: F401

        from tqdm.auto import tqdm
    except ImportError:
        from tqdm import tqdm
    return tqdm(iterable, **kwargs)
