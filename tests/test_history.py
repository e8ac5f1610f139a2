"""Tests for medmae_nb.train.history: columns and tables from per-epoch records, the state round trip a checkpoint
holds, and what a fresh or reloaded history says about how it was made."""

from __future__ import annotations

import json

import torch

from medmae_nb.train.history import History


def filled() -> History:
    h = History(steps=[{"step": 0, "lr": 1e-4, "loss": 2.0}, {"step": 1, "lr": 2e-4, "loss": 1.5}])
    h.append(epoch=1, step=2, lr=2e-4, loss=1.75)
    h.append(epoch=2, step=4, lr=1e-4, loss=1.25, val_acc=0.5)
    return h


def test_columns_follow_the_epochs_with_none_where_an_epoch_lacks_a_value():
    h = filled()
    assert h.column("loss") == [1.75, 1.25] and h.column("val_acc") == [None, 0.5]
    assert h.column("missing") == [None, None]
    table = h.to_dict()
    assert list(table) == ["epoch", "step", "lr", "loss", "val_acc"]  # first-seen order, later keys appended
    assert table["epoch"] == [1, 2] and table["val_acc"] == [None, 0.5]


def test_a_history_is_a_sequence_of_its_epoch_records():
    h = filled()
    assert len(h) == 2 and h[0]["loss"] == 1.75 and h[-1]["epoch"] == 2
    assert [r["epoch"] for r in h] == [1, 2]
    assert h.last == {"epoch": 2, "step": 4, "lr": 1e-4, "loss": 1.25, "val_acc": 0.5}
    assert History().last == {} and len(History()) == 0


def test_fresh_history_facts():
    h = History()
    assert h.loaded_from_cache is False and h.resumed_from is None and h.best_epoch is None and h.info == {}
    assert h.records == [] and h.steps == []


def test_the_records_are_copied_in_not_shared_with_the_caller():
    records = [{"epoch": 1, "loss": 1.0}]
    h = History(records)
    records[0]["loss"] = 99.0
    records.append({"epoch": 2})
    assert h.column("loss") == [1.0] and len(h) == 1


def test_state_round_trip_keeps_records_steps_best_epoch_and_info(tmp_path):
    h = filled()
    h.best_epoch = 2
    h.info = {"device": "cpu", "processes": 1, "wall_time_s": 3.5}
    h.loaded_from_cache, h.resumed_from = True, 1  # how this object was made: not part of the run's state
    state = h.state_dict()
    assert set(state) == {"records", "steps", "best_epoch", "info"}
    json.dumps(state)  # plain data: it goes into checkpoints (torch.load weights_only) and cards
    torch.save(state, tmp_path / "h.pt")
    back = History.from_state(torch.load(tmp_path / "h.pt", weights_only=True))
    assert back.records == h.records and back.steps == h.steps
    assert back.best_epoch == 2 and back.info == h.info
    assert back.loaded_from_cache is False and back.resumed_from is None
    back.info["device"] = "cuda"
    assert h.info["device"] == "cpu"  # the info dict is copied
    old = History.from_state({"records": [{"epoch": 1, "loss": 0.3}]})  # a state written before steps and info
    assert old.steps == [] and old.info == {} and old.best_epoch is None and old.column("loss") == [0.3]


def test_repr_shows_the_epoch_count_and_the_last_record():
    assert repr(filled()) == "History(2 epochs; last: epoch=2, step=4, lr=0.0001, loss=1.25, val_acc=0.5)"
    h = History([{"loss": 0.123456789}])
    assert repr(h) == "History(1 epochs; last: loss=0.1235)"
    assert repr(History()) == "History(0 epochs; last: )"
