"""The pre-training loop under torchrun: 2 CPU processes (gloo) take the same steps as 1 process with the same
global batch, and both ranks hold identical weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medmae_nb.train.distributed import DistInfo, setup

SCRIPT = r'''
import os, sys, torch
torch.set_num_threads(1)
from medmae_nb.data import make_phantom, hflip
from medmae_nb.models import mae_vit_micro
from medmae_nb.train import pretrain
out, ckpt, tag = sys.argv[1], sys.argv[2], sys.argv[3]
ds = make_phantom(40, 32, seed=0)
torch.manual_seed(0)
mae = mae_vit_micro(img_size=32, patch_size=8, depth=2, norm_pix_loss=True)
mae, history = pretrain(mae, ds, epochs=2, batch_size=8, lr=1e-3, views=hflip, progress=False, device="cpu",
                        checkpoint_dir=ckpt)
rank, world = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
torch.save({"state": mae.state_dict(), "loss": history.column("loss"), "processes": history.info["processes"]},
           f"{out}/{tag}_world{world}_rank{rank}.pt")
'''


def _run(cmd: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def test_two_processes_equal_one_process_with_the_same_global_batch(tmp_path):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("this torch build has no gloo backend")
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
          str(tmp_path), str(tmp_path / "ckpt2"), "ddp"], tmp_path)
    _run([sys.executable, str(script), str(tmp_path), str(tmp_path / "ckpt1"), "one"], tmp_path)
    # the checkpoint rank 0 wrote is a finished run for a single process too: it loads, it does not retrain
    _run([sys.executable, str(script), str(tmp_path), str(tmp_path / "ckpt2"), "reload"], tmp_path)
    r0, r1, one, reload = (torch.load(tmp_path / f, weights_only=True) for f in (
        "ddp_world2_rank0.pt", "ddp_world2_rank1.pt", "one_world1_rank0.pt", "reload_world1_rank0.pt"))
    assert all(torch.equal(reload["state"][k], v) for k, v in r0["state"].items()) and reload["loss"] == r0["loss"]
    assert r0["processes"] == 2 and one["processes"] == 1
    for k in r0["state"]:  # DDP keeps the replicas bit-identical
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    assert r0["loss"] == pytest.approx(one["loss"], rel=1e-5)  # the logged loss is the mean over all processes
    for k, v in r0["state"].items():
        w = one["state"][k]
        if k.endswith("attn.qkv.bias"):
            # The key bias has a true gradient of exactly 0 (softmax ignores a constant added to every logit), so
            # its gradient is rounding noise, which differs with the order of the all-reduce; Adam then turns the
            # noise into steps of up to lr. Everything else must agree to rounding.
            d = v.shape[0] // 3
            v, w = torch.cat([v[:d], v[2 * d:]]), torch.cat([w[:d], w[2 * d:]])
        assert torch.allclose(v, w, atol=2e-6, rtol=0), (k, (v - w).abs().max().item())
    assert sorted(p.name for p in (tmp_path / "ckpt2").iterdir()) == ["last.pt"]  # rank 0 alone wrote


def test_setup_without_torchrun_is_a_single_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info, device = setup(torch.device("cpu"))
    assert info == DistInfo() and info.main and not info.distributed and device == torch.device("cpu")


def test_setup_reports_a_bad_environment(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(RuntimeError, match="WORLD_SIZE='two' is not an integer"):
        setup(None)
