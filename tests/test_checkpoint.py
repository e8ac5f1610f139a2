"""Tests for medmae_nb.train.checkpoint: a checkpoint round-trips its state, and is refused — with the reason and the
fix — when it belongs to another config, another format, another program, or is damaged."""

from __future__ import annotations

import pytest
import torch

from medmae_nb.train.checkpoint import FORMAT, CheckpointError, config_diff, load_checked, save_checkpoint

CONFIG = {"method": {"class": "MAE", "mask_ratio": 0.75}, "epochs": 4, "lr": 1e-3}
FIX = "Delete it to train anew."


def test_a_checkpoint_round_trips_its_state_under_its_config(tmp_path):
    weights = {"w": torch.arange(6.0).view(2, 3), "b": torch.zeros(2, dtype=torch.float16)}
    path = save_checkpoint(tmp_path / "sub" / "run.pt", CONFIG, epoch=3, model=weights, key="abc")
    assert path == tmp_path / "sub" / "run.pt" and path.exists()
    assert [p.name for p in path.parent.iterdir()] == ["run.pt"]  # written atomically: no temporary file left
    state = load_checked(path, CONFIG, "checkpoint", FIX)
    assert state["format"] == FORMAT and state["config"] == CONFIG and state["epoch"] == 3 and state["key"] == "abc"
    assert state["model"].keys() == weights.keys()
    assert all(torch.equal(state["model"][k], v) and state["model"][k].dtype == v.dtype for k, v in weights.items())
    assert load_checked(path, None, "checkpoint", FIX)["epoch"] == 3  # None accepts any config


def test_a_checkpoint_of_another_config_is_refused_naming_each_difference(tmp_path):
    path = save_checkpoint(tmp_path / "run.pt", CONFIG, epoch=1)
    now = {"method": {"class": "MAE", "mask_ratio": 0.6}, "epochs": 4, "lr": 2e-3}
    with pytest.raises(CheckpointError, match="belongs to a different config") as err:
        load_checked(path, now, "cache entry", FIX)
    text = str(err.value)
    assert text.startswith(f"cache entry {path} belongs")
    assert "lr: 0.001 (stored) vs 0.002 (now); method.mask_ratio: 0.75 (stored) vs 0.6 (now)" in text
    assert text.endswith(FIX)
    assert issubclass(CheckpointError, ValueError)


def test_another_format_version_is_refused(tmp_path):
    torch.save({"format": FORMAT - 1, "config": CONFIG}, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match=rf"written by another version of medmae_nb.train \(format "
                                              rf"{FORMAT - 1}; this version reads format {FORMAT}\)\. {FIX}"):
        load_checked(tmp_path / "old.pt", CONFIG, "checkpoint", FIX)


@pytest.mark.parametrize("content, held", [
    ({"w": torch.zeros(1)}, r"a dict with keys \['w'\]"),
    ([torch.zeros(1)], "a list"),
])
def test_a_file_of_another_program_is_refused_saying_what_it_holds(tmp_path, content, held):
    torch.save(content, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match=rf"is not a checkpoint of medmae_nb.train: it holds {held}, not the "
                                              r"format tag and config.*" + FIX):
        load_checked(tmp_path / "foreign.pt", CONFIG, "checkpoint", FIX)


def test_a_damaged_file_is_refused_as_truncated(tmp_path):
    path = save_checkpoint(tmp_path / "run.pt", CONFIG, epoch=1)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match=rf"cannot read checkpoint {path}: it is truncated or damaged.*{FIX}"):
        load_checked(path, CONFIG, "checkpoint", FIX)
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        load_checked(tmp_path / "text.pt", None, "checkpoint", FIX)


def test_config_diff_walks_nested_configs_and_names_missing_keys():
    assert config_diff(CONFIG, CONFIG) == []
    assert config_diff({"a": 1, "b": {"c": 2, "d": [1, 2]}}, {"a": 1, "b": {"c": 3, "d": [1, 2]}}) == [
        "b.c: 2 (stored) vs 3 (now)"]
    assert config_diff({"a": 1}, {"a": 1, "z": "x"}) == ["z: '<missing>' (stored) vs 'x' (now)"]
    assert config_diff({"a": {"b": 1}}, {"a": 5}) == ["a: {'b': 1} (stored) vs 5 (now)"]
    assert config_diff({"b": 1, "a": 1}, {"b": 2, "a": 2}) == ["a: 1 (stored) vs 2 (now)", "b: 1 (stored) vs 2 (now)"]
