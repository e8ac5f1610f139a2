"""The shared evaluation protocol: one step rule, augmentation and selection for every learner at a budget."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from medmae_nb.budgets import FineTune
from medmae_nb.profiles import PROFILES
from medmae_nb.protocol import EvalProtocol, protocol_for


@given(n=st.integers(1, 20_000), min_steps=st.integers(1, 2_000), epochs=st.integers(2, 50),
       batch=st.integers(1, 256))
def test_the_step_rule(n, min_steps, epochs, batch):
    p = EvalProtocol(min_steps=min_steps, epochs=epochs, batch_size=batch)
    per_epoch = math.ceil(n / min(batch, n))
    assert p.steps(n) == p.epochs_for(n) * per_epoch
    assert p.steps(n) >= min_steps and p.epochs_for(n) >= epochs >= 2  # never a one-pass fine-tune
    assert p.steps(n) < min_steps + per_epoch or p.epochs_for(n) == epochs  # no more than the rule asks


@pytest.mark.parametrize("n", [3, 30, 300, 3000])
def test_every_learner_gets_the_same_training_at_a_budget(n):
    p = EvalProtocol(min_steps=200, epochs=4)
    ssl = p.fine_tune(object(), name="ssl", layer_decay=0.65)
    scratch = p.scratch(lambda: None, name="scratch")
    for learner in (ssl, scratch):
        assert isinstance(learner, FineTune)
        bs = min(learner.batch_size, n)
        epochs = max(learner.epochs, math.ceil(learner.min_steps / math.ceil(n / bs)))
        assert epochs * math.ceil(n / bs) == p.steps(n)  # what FineTune.fit will run
    same = ("epochs", "min_steps", "batch_size", "lr", "label_smoothing", "augment")
    assert all(getattr(ssl, k) == getattr(scratch, k) for k in same)
    assert p.row(n) == {"steps": p.steps(n), "augment": "flip", "selection": "fixed steps"}


def test_the_protocol_cannot_be_bent_per_learner():
    p = EvalProtocol()
    with pytest.raises(ValueError, match=r"\['min_steps'\] are set by the protocol"):
        p.fine_tune(object(), name="x", min_steps=5)
    for bad, match in (({"epochs": 1}, "epochs must be an integer ≥ 2"), ({"min_steps": 0}, "min_steps"),
                       ({"augment": "mixup"}, "unknown augment"), ({"selection": "best test"}, "unknown selection"),
                       ({"batch_size": 0}, "batch_size")):
        with pytest.raises(ValueError, match=match):
            EvalProtocol(**bad)
    with pytest.raises(ValueError, match="positive number of labelled images"):
        p.steps(0)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_has_a_protocol_without_one_pass_fine_tunes(name):
    p = protocol_for(PROFILES[name])
    assert p.epochs >= 2 and p.min_steps >= 1


def test_the_cpu_floor_is_the_committed_calibration():
    """eval_min_steps of the cpu profile is what `python -m medmae_nb.protocol` measured: the largest step count at
    which the SmallCNN had converged (within 0.01 of its best, on validation splits) at 10 labels per class."""
    import json
    from pathlib import Path

    import medmae_nb

    cal = json.loads((Path(medmae_nb.__file__).parent / "results" / "protocol-calibration.json").read_text())
    assert PROFILES["cpu"]["eval_min_steps"] == cal["min_steps"] == max(s["min_steps"] for s in cal["sets"].values())
    for s in cal["sets"].values():
        best = max(r["bal_acc"] for r in s["curve"])
        assert next(r["steps"] for r in s["curve"] if r["bal_acc"] >= best - cal["tolerance"]) == s["min_steps"]
