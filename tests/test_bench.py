"""The benchmark commands run and print their tables (timings themselves are never asserted)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

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


def test_mae_bench_ops_prints_where_the_time_goes(capsys):
    bench.main(["mae", "--model", "micro", "--patch-sizes", "16", "--img-size", "32", "--batch-size", "4",
                "--steps", "1", "--warmup", "0", "--threads", "1", "--ops", "1"])
    out = capsys.readouterr().out
    assert "where a step's time goes" in out and "matrix products" in out and "costliest matrix-product" in out


def test_op_breakdowns_attribute_each_op_to_its_step_and_category():
    """Two steps profiled round-robin: one a single matrix product, one an AdamW update. Each op must land in its
    own step's column and category (an op inside ``Optimizer.step`` is optimizer time whatever it is), and the
    product's shape must be counted once per step."""
    a, b = torch.randn(64, 32), torch.randn(32, 16)
    w = torch.nn.Parameter(torch.randn(256))
    w.grad = torch.randn(256)
    opt = torch.optim.AdamW([w], lr=1e-3)
    res = bench._op_breakdowns({"product": lambda: a @ b, "adamw": opt.step}, 3, torch.device("cpu"))
    product_cats, product_shapes = res["product"]
    adamw_cats, adamw_shapes = res["adamw"]
    # aten::matmul's own dispatch around the mm is "everything else"
    assert set(product_cats) <= {"matrix products (mm, addmm, bmm)", bench._OTHER}
    assert product_cats["matrix products (mm, addmm, bmm)"] > 0
    assert set(product_shapes) == {"[64, 32] x [32, 16]"}
    calls_per_step, ms_per_call = product_shapes["[64, 32] x [32, 16]"]
    assert calls_per_step == 1 and ms_per_call > 0
    assert set(adamw_cats) == {bench._OPTIMIZER} and adamw_shapes == {}


def test_mae_bench_compile_wraps_the_timed_forward(capsys, monkeypatch):
    """``--compile`` hands the MAE forward to ``torch.compile`` (recorded here, not run: compiling takes minutes)."""
    compiled = []
    monkeypatch.setattr(bench.torch, "compile", lambda fn, **kw: compiled.append(fn) or fn)
    bench.main(["mae", "--model", "micro", "--patch-sizes", "16", "--img-size", "32", "--batch-size", "4",
                "--steps", "1", "--warmup", "0", "--threads", "1", "--compile"])
    assert len(compiled) == 1 and isinstance(compiled[0], torch.nn.Module)  # our method, as pretrain(compile=True)
    assert "torch.compile on both libraries" in capsys.readouterr().out


def test_miram_bench_prints_a_row_per_scale_set_and_attention(capsys):
    bench.main(["miram", "--img-size", "32", "--batch-size", "2", "--steps", "1", "--warmup", "0", "--threads", "1",
                "--scale-sets", "1,2", "1,4", "--local-window", "2"])
    lines = capsys.readouterr().out.splitlines()
    rows = {line.strip().split("  ")[0]: line.split() for line in lines[3:]}  # after the title, header, rule
    assert list(rows) == ["MAE", "MIRAM x1+x2", "MIRAM x1+x2, local", "MIRAM x1+x4", "MIRAM x1+x4, local"]
    assert rows["MIRAM x1+x4"][3] == "16+256" and rows["MAE"][1:3] == ["16", "16"]  # decoder tokens per scale
    assert rows["MAE"][-2] == "1.00x" and "batch 2" in lines[0] and "RSS" in lines[1]


@pytest.mark.parametrize("encoder", ["vit_micro", "resnet18_micro"])
def test_dino_bench_prints_the_supervised_and_multi_crop_rows(capsys, encoder):
    bench.main(["dino", "--encoder", encoder, "--img-size", "32", "--local-size", "16", "--n-local", "2",
                "--out-dim", "64", "--batch-size", "2", "--steps", "1", "--warmup", "0", "--threads", "1"])
    lines = capsys.readouterr().out.splitlines()
    rows = {line.strip().split("  ")[0]: line.split() for line in lines[3:]}  # after the title, header, rule
    assert list(rows) == ["supervised step (global view)", "DINO, 2 global", "DINO, 2 global + 2 local"]
    assert rows["supervised step (global view)"][-2] == "1.00x" and "RSS" in lines[1]
    assert f"{encoder}, 2 global crops of 32 px, 2 local of 16 px" in lines[0] and "64 prototypes" in lines[0]


def test_texture_bench_writes_its_table(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MEDMAE_DATA", raising=False)
    out = tmp_path / "texture.csv"
    bench.main(["texture", "--n", "8", "--speckle", "1.0", "0.3", "--csv", str(out)])
    text = out.read_text().splitlines()
    assert text[0].startswith("images,n,pixel_noise_std") and len(text) == 3
    assert "phantom, speckle 0.3 (default)" in capsys.readouterr().out


def test_ddp_bench_layouts_and_table_rows():
    """``bench ddp``'s layout parsing and its table arithmetic (the timed torchrun runs are not part of the tests)."""
    import argparse

    assert bench._layout("2x1") == (2, 1) and bench._layout("1X4") == (1, 4)
    for bad in ("2", "2x", "0x1", "axb"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench._layout(bad)
    rows = bench._ddp_rows([(1, 1, 64, 100.0), (1, 2, 64, 180.0), (2, 1, 64, 150.0), (4, 2, 64, 400.0)])
    assert rows[0] == (1, 1, 64, "100", "100", "1.00x", "1.00")
    assert rows[1][3:] == ("180", "180", "1.80x", "0.90")  # efficiency is per core: 2 cores
    assert rows[2][3:] == ("150", "75", "1.50x", "0.75")
    assert rows[3][3:] == ("400", "100", "4.00x", "0.50")  # 8 cores


def test_ddp_bench_refuses_a_batch_the_processes_do_not_divide():
    with pytest.raises(SystemExit, match="must divide"):
        bench.main(["ddp", "--layouts", "1x1", "3x1", "--batch-size", "8"])
