"""The MedMNIST v2 ResNet-18 (28) reproduction: network, schedule, model selection and the result file, all on tiny
synthetic data (the real run is ``python -m medmae_nb.medmnist_v2``; its result is in medmae_nb/results/)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medmae_nb import medmnist_v2
from medmae_nb.data import medmnist
from medmae_nb.medmnist_v2 import PUBLISHED, lr_at, main, reproduce, resnet18_28, train_and_select

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MEDMAE_DATA", raising=False)
    monkeypatch.setenv("MEDMAE_CACHE", str(tmp_path / "cache"))


def write_breastmnist(root: Path, counts: dict[str, int] | None = None, seed: int = 0) -> None:
    """A tiny ``breastmnist.npz`` in the official layout (uint8 ``(N, 28, 28)`` images, ``(N, 1)`` labels), with
    both classes in every split so that every AUC is defined."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (counts or {"train": 8, "val": 4, "test": 4}).items():
        labels = np.arange(n) % 2
        images = rng.integers(0, 120, (n, 28, 28)) + 100 * labels[:, None, None]  # class 1 brighter
        arrays[f"{split}_images"] = images.astype(np.uint8)
        arrays[f"{split}_labels"] = labels[:, None].astype(np.uint8)
    (root / "medmnist").mkdir(parents=True, exist_ok=True)
    np.savez(root / "medmnist" / "breastmnist.npz", **arrays)


def tiny_split(n: int, size: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Normalised images of a small size (the network's pooling is adaptive), labels alternating 0, 1."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.standard_normal((n, 1, size, size)).astype(np.float32) + y[:, None, None, None]
    return x, y


def fingerprint(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()]).clone()


def test_network_maps_gray_28px_to_two_logits_and_keeps_28px_in_the_first_stage() -> None:
    model = resnet18_28(in_channels=1, num_classes=2).eval()
    sizes = {}
    for name in ("stem", "layer1", "layer2", "layer3", "layer4"):
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: sizes.__setitem__(name, o.shape[1:]))
    with torch.no_grad():
        out = model(torch.randn(3, 1, 28, 28))
    assert out.shape == (3, 2)
    # The stem is a 3x3 stride-1 convolution with no max-pool: all 28 px reach the first residual stage.
    conv = model.stem[0]
    assert conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.in_channels == 1
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert sizes == {"stem": (64, 28, 28), "layer1": (64, 28, 28), "layer2": (128, 14, 14),
                     "layer3": (256, 7, 7), "layer4": (512, 4, 4)}
    # ResNet-18: 8 basic blocks, 20 convolutions (17 3x3 + 3 1x1 shortcuts), about 11.2 M parameters.
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 20 and sum(m.kernel_size == (1, 1) for m in convs) == 3
    assert 11.1e6 < sum(p.numel() for p in model.parameters()) < 11.2e6
    rgb = resnet18_28(in_channels=3, num_classes=5).eval()
    with torch.no_grad():
        assert rgb(torch.randn(2, 3, 28, 28)).shape == (2, 5)


def test_a_single_pixel_reaches_the_first_stage_at_its_own_place() -> None:
    """With a stride-1 stem, a one-pixel change moves layer-1 features only near that pixel (a 7x7 stride-2 stem
    plus max-pool would merge it into a 7-px map)."""
    model = resnet18_28(1, 2).eval()
    x = torch.zeros(1, 1, 28, 28)
    y = x.clone()
    y[0, 0, 20, 5] = 1.0
    with torch.no_grad():
        diff = (model.layer1(model.stem(y)) - model.layer1(model.stem(x))).abs().sum(1)[0]
    rows, cols = torch.nonzero(diff > 1e-6, as_tuple=True)
    assert len(rows) > 0
    # receptive field of stem + layer1 (five 3x3 stride-1 convs): 11x11 around the pixel
    assert rows.min() >= 15 and rows.max() <= 25 and cols.min() >= 0 and cols.max() <= 10


def test_learning_rate_drops_tenfold_at_half_and_three_quarters() -> None:
    lrs = [lr_at(e, 100) for e in range(100)]
    assert lrs[:50] == [0.001] * 50 and lrs[50:75] == [0.0001] * 25 and lrs[75:] == [1e-5] * 25
    assert [lr_at(e, 10) for e in range(10)] == [0.001] * 5 + [0.0001] * 3 + [1e-5] * 2  # 7.5 -> epoch 8
    assert math.isclose(lr_at(0, 4, lr=0.5), 0.5) and math.isclose(lr_at(3, 4, lr=0.5), 0.005)


def test_training_uses_the_schedule_and_keeps_the_best_validation_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation AUCs are scripted; the copy kept must be the network as it was after the first best epoch."""
    scripted = iter([0.6, 0.9, 0.9, 0.7])
    seen: list[torch.Tensor] = []
    real_score = medmnist_v2.score

    def fake_score(model, x, y, batch_size=128):  # noqa: ANN001, ANN202
        seen.append(fingerprint(model))
        return {**real_score(model, x, y, batch_size), "auc": next(scripted)}

    monkeypatch.setattr(medmnist_v2, "score", fake_score)
    record, best, final = train_and_select(tiny_split(10), tiny_split(6, seed=1), num_classes=2, seed=0, epochs=4,
                                           batch_size=10, verbose=False)
    assert [row["lr"] for row in record["history"]] == [0.001, 0.001, 0.0001, 1e-5]
    assert [row["val_auc"] for row in record["history"]] == [0.6, 0.9, 0.9, 0.7]
    assert record["best_epoch"] == 2 and record["best_val_auc"] == 0.9  # ties keep the first epoch
    assert torch.equal(fingerprint(best), seen[1]) and torch.equal(fingerprint(final), seen[3])
    assert not torch.equal(seen[1], seen[3]) and best is not final


def test_no_defined_validation_auc_keeps_the_last_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(medmnist_v2, "score", lambda *a, **k: {"auc": float("nan"), "acc": 0.5, "loss": 1.0})
    record, best, final = train_and_select(tiny_split(6), tiny_split(4), 2, epochs=2, batch_size=8, verbose=False)
    assert record["best_epoch"] == 2 and record["best_val_auc"] is None
    assert torch.equal(fingerprint(best), fingerprint(final))


def test_same_seed_same_run() -> None:
    a, _, _ = train_and_select(tiny_split(8), tiny_split(4), 2, seed=3, epochs=2, batch_size=5, verbose=False)
    b, _, _ = train_and_select(tiny_split(8), tiny_split(4), 2, seed=3, epochs=2, batch_size=5, verbose=False)
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]


def test_main_writes_the_result_json_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(medmnist, "MD5", {})  # our tiny file is not the official one
    write_breastmnist(tmp_path / "data")
    out = tmp_path / "results" / "v2.json"
    argv = ["breastmnist", "--root", str(tmp_path / "data"), "--epochs", "2", "--seeds", "0", "1",
            "--batch-size", "8", "--threads", "1", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["v2.json"]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not the temporary file's private 0600
    res = json.loads(out.read_text())
    assert {"dataset", "paper", "published", "protocol", "seeds", "summary", "delta_auc", "reproduced", "runs",
            "seconds_per_epoch", "wall_seconds", "provenance"} <= set(res)
    assert res["dataset"] == "breastmnist" and res["published"] == PUBLISHED["breastmnist"] == {"auc": 0.901,
                                                                                               "acc": 0.863}
    assert res["protocol"]["lr"] == 0.001 and res["protocol"]["batch_size"] == 8 and res["protocol"]["epochs"] == 2
    assert res["protocol"]["n_train"] == 8 and res["protocol"]["in_channels"] == 1
    assert [r["seed"] for r in res["runs"]] == [0, 1] and len(res["runs"][0]["history"]) == 2
    for run in res["runs"]:
        assert {"best_epoch", "best_val_auc", "test_auc", "test_acc", "final_test_auc", "final_test_acc",
                "wall_seconds", "seconds_per_epoch"} <= set(run)
        assert 1 <= run["best_epoch"] <= 2 and 0 <= run["test_auc"] <= 1 and 0 <= run["test_acc"] <= 1
    mean = np.mean([r["test_auc"] for r in res["runs"]])
    assert math.isclose(res["summary"]["test_auc"]["mean"], mean)
    assert math.isclose(res["delta_auc"], mean - 0.901) and res["reproduced"] == (abs(mean - 0.901) <= 0.02)
    prov = res["provenance"]
    assert {"command", "git_commit", "machine", "threads", "torch", "wall_seconds"} <= set(prov)
    assert prov["command"].startswith("python -m medmae_nb.medmnist_v2 breastmnist --root ")
    assert prov["threads"] == 1 and prov["torch"] == torch.__version__ and prov["machine"]["cpu_count"] >= 1


def test_unknown_dataset_is_refused_with_the_known_names(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match=r"unknown MedMNIST dataset 'nosuchmnist'.*breastmnist.*pneumoniamnist"):
        reproduce("nosuchmnist")
    with pytest.raises(ValueError, match="multi-label|unknown"):
        reproduce("chestmnist")
    assert main(["nosuchmnist"]) == 2
    assert "unknown MedMNIST dataset" in capsys.readouterr().err


def test_module_and_help_do_not_import_torch() -> None:
    code = "import sys, medmae_nb.medmnist_v2; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT,
                          check=True).stdout.strip() == "False"
    helped = subprocess.run([sys.executable, "-m", "medmae_nb.medmnist_v2", "--help"], capture_output=True,
                            text=True, cwd=REPO_ROOT, timeout=30)
    assert helped.returncode == 0 and "--seeds" in helped.stdout and "--out" in helped.stdout


def test_a_stopped_run_resumes_from_its_checkpoint_to_the_same_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stop a run after its second epoch (the third validation raises), resume from the checkpoint: history, best
    and final weights equal those of a run that was never stopped."""
    args = (tiny_split(9), tiny_split(6, seed=1), 2)
    kwargs = {"seed": 1, "epochs": 4, "batch_size": 4, "verbose": False}
    plain, plain_best, plain_final = train_and_select(*args, **kwargs)

    real_score, calls = medmnist_v2.score, []

    def stop_at_third(*a, **k):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_score(*a, **k)

    ckpt = tmp_path / "run" / "seed1.pt"
    monkeypatch.setattr(medmnist_v2, "score", stop_at_third)
    with pytest.raises(KeyboardInterrupt):
        train_and_select(*args, **kwargs, checkpoint=ckpt)
    assert [p.name for p in ckpt.parent.iterdir()] == ["seed1.pt"]  # no temporary file left
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2
    monkeypatch.setattr(medmnist_v2, "score", real_score)
    resumed, best, final = train_and_select(*args, **kwargs, checkpoint=ckpt)
    assert resumed["resumed_after_epoch"] == 2
    assert [r["epoch"] for r in resumed["history"]] == [1, 2, 3, 4]
    assert [r["train_loss"] for r in resumed["history"]] == [r["train_loss"] for r in plain["history"]]
    assert resumed["best_epoch"] == plain["best_epoch"]
    assert torch.equal(fingerprint(final), fingerprint(plain_final))
    assert torch.equal(fingerprint(best), fingerprint(plain_best))
    again, _, again_final = train_and_select(*args, **kwargs, checkpoint=ckpt)  # a finished run: no training
    assert again["resumed_after_epoch"] == 4 and torch.equal(fingerprint(again_final), fingerprint(plain_final))


def test_a_checkpoint_of_another_run_is_refused(tmp_path: Path) -> None:
    ckpt = tmp_path / "seed0.pt"
    train_and_select(tiny_split(6), tiny_split(4), 2, seed=0, epochs=1, batch_size=4, verbose=False, checkpoint=ckpt)
    with pytest.raises(ValueError, match="belongs to another run.*delete it"):
        train_and_select(tiny_split(6), tiny_split(4), 2, seed=0, epochs=3, batch_size=4, verbose=False,
                         checkpoint=ckpt)


def test_main_resume_keeps_one_checkpoint_per_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(medmnist, "MD5", {})
    write_breastmnist(tmp_path / "data")
    argv = ["breastmnist", "--root", str(tmp_path / "data"), "--epochs", "1", "--seeds", "0", "2",
            "--batch-size", "8", "--threads", "1", "--quiet", "--resume", str(tmp_path / "ckpt"),
            "--out", str(tmp_path / "a.json")]
    assert main(argv) == 0
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["breastmnist-seed0.pt", "breastmnist-seed2.pt"]
    assert main(argv[:-1] + [str(tmp_path / "b.json")]) == 0  # the second call trains nothing, same figures
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert a["summary"] == b["summary"] and [r["resumed_after_epoch"] for r in b["runs"]] == [1, 1]
