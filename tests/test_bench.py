"""The benchmark commands run and print their tables (timings themselves are never asserted)."""

from __future__ import annotations

import importlib.util

import pytest

from medmae_nb import bench


def test_mae_bench_prints_every_row(capsys):
    bench.main(["mae", "--model", "micro", "--patch-sizes", "16", "--img-size", "32", "--batch-size", "4",
                "--steps", "1", "--warmup", "0", "--threads", "1"])
    out = capsys.readouterr().out
    assert "medmae_nb MAE step" in out and "encoder fwd+bwd, all tokens" in out and "visible vs all" in out


@pytest.mark.skipif(importlib.util.find_spec("lightly") is None, reason="lightly is an optional bench extra")
def test_mae_bench_against_lightly(capsys):
    bench.main(["mae", "--model", "micro", "--patch-sizes", "16", "--img-size", "32", "--batch-size", "4",
                "--steps", "1", "--warmup", "0", "--threads", "1", "--against", "lightly"])
    assert "medmae_nb vs lightly" in capsys.readouterr().out


def test_texture_bench_writes_its_table(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MEDMAE_DATA", raising=False)
    out = tmp_path / "texture.csv"
    bench.main(["texture", "--n", "8", "--speckle", "1.0", "0.3", "--csv", str(out)])
    text = out.read_text().splitlines()
    assert text[0].startswith("images,n,pixel_noise_std") and len(text) == 3
    assert "phantom, speckle 0.3 (default)" in capsys.readouterr().out
