"""Per-epoch and per-step records of a training run, for plots and tables in the chapters."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["History"]


class History:
    """Per-epoch records of a run (``epoch``, ``step``, ``lr``, ``loss`` and any val metrics) plus per-step values.

    Attributes:
        records: one dict per epoch.
        steps: one dict per optimizer step (``step``, ``lr``, ``loss``), for learning-rate and loss curves.
        loaded_from_cache: True when the run was not trained but loaded from the cache.
        resumed_from: the epoch of the checkpoint this run resumed from, or None.
        best_epoch: the epoch whose weights were kept (fine-tuning / probing with a val set), or None.
        info: facts about how the run was made (device, processes, precision, wall time), for checkpoint cards.

    Example:
        >>> h = History()
        >>> h.append(epoch=1, loss=0.5)
        >>> h.column("loss")
        [0.5]
    """

    def __init__(self, records: Sequence[dict] = (), steps: Sequence[dict] = ()) -> None:
        self.records: list[dict] = [dict(r) for r in records]
        self.steps: list[dict] = [dict(s) for s in steps]
        self.loaded_from_cache = False
        self.resumed_from: int | None = None
        self.best_epoch: int | None = None
        self.info: dict[str, Any] = {}

    def append(self, **values: Any) -> None:
        self.records.append(values)

    def column(self, name: str) -> list:
        """The values of ``name`` over epochs (None where an epoch lacks it)."""
        return [r.get(name) for r in self.records]

    def to_dict(self) -> dict[str, list]:
        """Columns as a dict of lists (``pandas.DataFrame(history.to_dict())`` gives a table)."""
        names: list[str] = []
        for r in self.records:
            names += [k for k in r if k not in names]
        return {k: self.column(k) for k in names}

    @property
    def last(self) -> dict:
        return self.records[-1] if self.records else {}

    def state_dict(self) -> dict:
        return {"records": self.records, "steps": self.steps, "best_epoch": self.best_epoch, "info": self.info}

    @classmethod
    def from_state(cls, state: dict) -> History:
        out = cls(state["records"], state.get("steps", ()))
        out.best_epoch = state.get("best_epoch")
        out.info = dict(state.get("info", {}))
        return out

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.records)

    def __getitem__(self, i: int) -> dict:
        return self.records[i]

    def __repr__(self) -> str:
        last = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.last.items())
        return f"History({len(self)} epochs; last: {last})"
