"""Progress bars: ``progress_bar``, tqdm's widget in notebooks with ipywidgets, text bars elsewhere."""
from __future__ import annotations

import sys
from typing import Any


def _in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (whose stderr is no terminal, yet shows bars)."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return type(shell).__name__ == "ZMQInteractiveShell"


def shows_progress() -> bool:
    """Whether a progress bar would be seen: stderr is a terminal, or a notebook shows the output."""
    return sys.stderr.isatty() or _in_notebook()


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
