import numpy as np
import pytest
import torch

from medmae_nb import profiles


def test_resolve_order(monkeypatch):
    monkeypatch.delenv("MEDMAE_PROFILE", raising=False)
    assert profiles.resolve(None) == "cpu"  # with or without CUDA: `gpu` is asked for by name
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert profiles.resolve(None) == "cpu"
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
    for key in ("img_size", "n_pool", "n_per_class_test", "calib_min_steps", "calib_epochs", "eval_min_steps",
                "bench_steps", "bootstrap"):
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


def test_every_profile_key_is_read():
    """A key that no chapter and no module reads is a promise the profile does not keep: each key must appear quoted
    (``cfg["key"]``, ``profile.get("key")``) in a chapter's code or in the package outside profiles.py."""
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    texts = [p.read_text() for p in (root / "medmae_nb").rglob("*.py") if p.name != "profiles.py"]
    for nb in sorted((root / "nbs").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        texts += ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    code = "\n".join(texts)
    unread = [k for k in profiles.PROFILES["cpu"] if f'"{k}"' not in code and f"'{k}'" not in code]
    assert not unread, f"profile keys read by nothing: {unread}"
