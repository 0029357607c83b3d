"""The progress bar: tqdm's auto bar (a widget in notebooks), quiet where nobody is watching."""
from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm


def progress_bar(enabled: bool | None, total: int | None, initial: int = 0, unit: str = "step") -> Any:
    """A tqdm bar; `enabled=None` shows it only when stderr is a terminal or in a Jupyter kernel."""
    if enabled is None:
        enabled = sys.stderr.isatty() or "ipykernel" in sys.modules
    return tqdm(total=total, initial=initial, disable=not enabled, unit=unit, dynamic_ncols=True)
