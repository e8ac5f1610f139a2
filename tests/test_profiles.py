import numpy as np
import pytest
import torch

from medmae_nb import profiles


def test_resolve_order(monkeypatch):
    monkeypatch.delenv("MEDMAE_PROFILE", raising=False)
    expected = "gpu" if torch.cuda.is_available() else "cpu"
    assert profiles.resolve(None) == expected
    monkeypatch.setenv("MEDMAE_PROFILE", "smoke")
    assert profiles.resolve(None) == "smoke"
    assert profiles.resolve("gpu") == "gpu"


def test_unknown_profile(monkeypatch):
    with pytest.raises(profiles.ProfileError, match="unknown profile 'fast'.*smoke"):
        profiles.resolve("fast")
    monkeypatch.setenv("MEDMAE_PROFILE", "huge")
    with pytest.raises(profiles.ProfileError, match="MEDMAE_PROFILE"):
        profiles.resolve(None)


def test_profiles_share_keys_and_scale_up():
    keys = set(profiles.PROFILES["cpu"])
    assert all(set(p) == keys for p in profiles.PROFILES.values())
    for key in ("img_size", "n_pool", "pretrain_epochs", "finetune_epochs", "ft_min_steps", "calib_min_steps"):
        assert profiles.PROFILES["smoke"][key] < profiles.PROFILES["cpu"][key] < profiles.PROFILES["gpu"][key]
    p = profiles.get_profile("cpu")
    p["img_size"] = 1
    assert profiles.PROFILES["cpu"]["img_size"] == 64


def test_seed_everything_reproducible():
    profiles.seed_everything(3)
    a = (np.random.rand(), torch.rand(1).item())
    profiles.seed_everything(3)
    assert (np.random.rand(), torch.rand(1).item()) == a


def test_device_is_cpu_here():
    if not torch.cuda.is_available():
        assert profiles.get_device().type in {"cpu", "mps"}


def test_print_config(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("MEDMAE_CACHE", str(tmp_path))
    info = profiles.print_config("smoke")
    out = capsys.readouterr().out
    assert info["profile"] == "smoke" and "torch" in out and "timm" in out
    assert str(tmp_path) not in out, "no machine paths in printed config"
