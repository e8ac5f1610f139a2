import os

import numpy as np
import pytest

from medmae_nb import cache


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDMAE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cache_dir_from_env(tmp_cache):
    assert cache.cache_dir() == tmp_cache and tmp_cache.is_dir()


def test_cache_dir_default(monkeypatch, tmp_path):
    monkeypatch.delenv("MEDMAE_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache.cache_dir() == tmp_path / ".cache" / "medmae_nb"


def test_config_key_stable_and_sensitive():
    a = cache.config_key({"lr": 1e-3, "depth": 4, "sizes": (8, 16)}, "mae")
    assert a == cache.config_key({"sizes": [8, 16], "depth": 4, "lr": 0.001}, "mae")
    assert a.startswith("mae-") and len(a) == 4 + 16
    assert a != cache.config_key({"lr": 1e-3, "depth": 5, "sizes": (8, 16)}, "mae")
    assert a != cache.config_key({"lr": 1e-3, "depth": 4, "sizes": (8, 16)}, "dino")
    assert cache.config_key({"x": np.int64(3)}) == cache.config_key({"x": 3})


def test_atomic_write_leaves_nothing_on_error(tmp_cache):
    target = tmp_cache / "x.npz"

    def boom(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        cache.atomic_write(target, boom)
    assert not target.exists()
    assert os.listdir(tmp_cache) == []


def test_atomic_write_keeps_old_entry_on_error(tmp_cache):
    target = cache.save_npz(tmp_cache / "x.npz", a=np.arange(3))
    with pytest.raises(KeyboardInterrupt):
        cache.atomic_write(target, lambda tmp: (_ for _ in ()).throw(KeyboardInterrupt()))
    np.testing.assert_array_equal(np.load(target)["a"], np.arange(3))
    assert os.listdir(tmp_cache) == ["x.npz"]


def test_save_roundtrips(tmp_cache):
    import json

    import torch

    p = cache.save_torch(cache.entry("k", ".pt", "ckpt"), {"w": torch.ones(2)})
    assert p.parent.name == "ckpt" and torch.load(p)["w"].sum() == 2
    q = cache.save_json(tmp_cache / "m.json", {"b": 1, "a": [1, 2]})
    assert json.loads(q.read_text()) == {"a": [1, 2], "b": 1}


def test_image_probe_tolerates_float_noise_and_sees_changed_pictures():
    from medmae_nb.cache import image_probe, probes_match
    from medmae_nb.data import make_phantom

    a = make_phantom(20, 32, seed=0, cache=False).images
    probe = image_probe(a)
    assert probe["n"] == 16 and len(probe["blocks"]) == 16 * (32 // 16) ** 2
    noisy = a + np.float32(1e-6) * np.sign(np.random.default_rng(0).standard_normal(a.shape)).astype(np.float32)
    assert probes_match(probe, image_probe(noisy))
    other = make_phantom(20, 32, seed=0, cache=False, speckle=0.6).images
    assert not probes_match(probe, image_probe(other))
    assert not probes_match(probe, image_probe(a, n=8))
