"""One progress display for a whole evaluation: every attack on every chunk of points, then the analysis.

A step is one stage (an attack, or a part of the analysis) done on a number of points, so the bar
moves each time an attack finishes a chunk, and through the analysis after the attacks (which can
take longer than the attacks on a model that is not robust). Its description names the stage under
way; its clock and its estimate are those of the whole evaluation.
"""
from __future__ import annotations

from typing import Any

__all__ = ["Progress"]


class Progress:
    def __init__(self, total: int, enabled: bool = True) -> None:
        self._bar: Any = None
        if enabled and total > 0:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, unit="pt", desc="evaluation", dynamic_ncols=True, leave=True,
                             bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} point-stages "
                                        "[{elapsed}<{remaining}]")

    def stage(self, name: str) -> None:
        """Name the stage under way."""
        if self._bar is not None:
            self._bar.set_description_str(name, refresh=True)

    def advance(self, points: int) -> None:
        """One stage finished on ``points`` points."""
        if self._bar is not None:
            self._bar.update(points)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.set_description_str("evaluation done", refresh=False)
            self._bar.close()
            self._bar = None
