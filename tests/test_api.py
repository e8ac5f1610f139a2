"""The top-level API: every advertised name resolves, and importing the package stays light."""

from __future__ import annotations

import inspect
import subprocess
import sys

import medmae_nb


def test_every_advertised_name_resolves():
    for name in medmae_nb.__all__:
        assert getattr(medmae_nb, name) is not None, name
    assert set(medmae_nb.__all__) <= set(dir(medmae_nb))
    assert inspect.isfunction(medmae_nb.pretrain) and medmae_nb.pretrain.__module__ == "medmae_nb.train.pretrain"
    assert medmae_nb.make_phantom is medmae_nb.data.make_phantom
    assert medmae_nb.budget_sweep.__module__ == "medmae_nb.budgets"


def test_unknown_names_raise_attribute_error():
    try:
        medmae_nb.no_such_thing  # noqa: B018
    except AttributeError as err:
        assert "no_such_thing" in str(err)
    else:  # pragma: no cover
        raise AssertionError("expected AttributeError")


def test_import_is_light_until_a_name_is_used():
    code = ("import sys, medmae_nb; light = 'timm' not in sys.modules and 'captum' not in sys.modules; "
            "medmae_nb.mae_vit_micro; print(light, 'timm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True"]
