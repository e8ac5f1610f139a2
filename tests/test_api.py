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


def test_readme_example_runs_at_toy_scale(tmp_path, monkeypatch):
    """The README's package example, shrunk (fewer images, epochs and steps), runs as written."""
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = readme.split("## The package in a few lines", 1)[1]
    code = re.search(r"```python\n(.*?)```", block, re.S)[1]
    shrink = {"make_phantom(20_000)": "make_phantom(96)", "epochs=40, cache=True": "epochs=1, batch_size=32",
              "make_phantom_splits(3000, 300, 600, seed=1)": "make_phantom_splits(60, 15, 30, seed=1)",
              "num_classes=3))": "num_classes=3), epochs=1, min_steps=2)", "[10, 100]": "[2]",
              "seeds=(0, 1, 2)": "seeds=(0,), n_boot=20"}
    for old, new in shrink.items():
        assert old in code, f"README example changed: update this test's shrink map for {old!r}"
        code = code.replace(old, new)
    monkeypatch.setenv("MEDMAE_CACHE", str(tmp_path))
    printed = []
    monkeypatch.setattr("builtins.print", lambda *a, **k: printed.append(" ".join(map(str, a))))
    exec(compile(code, "README.md", "exec"), {})
    table = printed[-1].splitlines()  # the last print is the README's table
    assert "bal_acc" in table[0] and len(table) == 2  # a header and the one budget
    assert re.match(r"\s+2\s+6\s+0\.\d{3} \[0\.\d{3}, [01]\.\d{3}\]", table[1]), table[1]  # 2/class: 6 images
