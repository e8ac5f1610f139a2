"""The ``medmae`` command line: one face over train, compare, bench; ``--help`` without heavy imports; pre-training
any recipe on any dataset spec."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medmae_nb.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["methods", "--help"], ["bench", "--help"],
                                  ["compare", "--help"], ["bench", "mae", "--help"], ["bench", "ddp", "--help"],
                                  ["bench", "methods", "--help"]])
def test_help_of_every_subcommand_imports_nothing_heavy(argv):
    code = (f"import sys\nfrom medmae_nb.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'timm', 'sklearn', 'numpy') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert "usage:" in done.stdout and "HEAVY []" in done.stdout, done.stdout + done.stderr


def test_methods_lists_the_registry(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("mae", "miram", "masked-convnext", "spark", "moco", "dino"))


def test_the_old_spellings_still_work():
    for module in ("medmae_nb.train", "medmae_nb.bench", "medmae_nb"):
        done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120,
                              cwd=ROOT)
        assert done.returncode == 0 and "usage:" in done.stdout, (module, done.stderr[-500:])


def _unlabelled_folder(root: Path, n: int = 20, size: int = 40, rgb: bool = False) -> Path:
    from medmae_nb.data import make_phantom

    ds = make_phantom(n, size, seed=7)
    (root / "scans").mkdir(parents=True)
    for i in range(n):
        img = Image.fromarray((ds.images[i, 0] * 255).astype(np.uint8))
        (img.convert("RGB") if rgb else img).save(root / "scans" / f"s{i}.png")
    return root


def test_train_any_recipe_on_a_folder_of_unlabelled_images(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDMAE_CACHE", str(tmp_path / "cache"))
    folder = _unlabelled_folder(tmp_path / "mine", rgb=True)
    out = tmp_path / "ckpt"
    assert main(["train", "mae-micro-p16", "--data", f"folder:{folder}", "--image-size", "32", "--epochs", "1",
                 "--batch-size", "8", "--channels", "3", "--out", str(out), "--no-progress"]) == 0
    cards = list(out.glob("*.json"))
    assert len(cards) == 1 and "mae-micro-p16-on-folder" in cards[0].name
    card = json.loads(cards[0].read_text())
    assert card["channels"] == 3 and card["config"]["method"]["in_chans"] == 3
    data = card["config"]["data"]
    assert data["dataset"] == "folder" and str(folder) not in json.dumps(data)  # content, never the path
    assert data["n"] == 20 and len(data["content"]) == 16


def test_train_refuses_to_write_an_uncommitted_recipe_into_the_package(tmp_path, capsys):
    folder = _unlabelled_folder(tmp_path / "mine")
    assert main(["train", "mae-micro-p16", "--data", f"folder:{folder}"]) == 2
    assert "pass --out DIR" in capsys.readouterr().err
    assert main(["train", "no-such-recipe"]) == 2
    assert "no recipe named" in capsys.readouterr().err


def test_train_seeds_prints_the_provenance_of_the_seed_checkpoints(tmp_path, capsys):
    import json

    from medmae_nb.cli import main

    card = {"recipe": "mae-micro-p8-busi-s1", "sha256": "cd" * 32, "final": {"loss": 0.83},
            "wall_time_s": 362.3, "created": "2026-12-07 07:01 UTC", "code_commit": "abc", "run": {"torch": "2.14.1"}}
    (tmp_path / "mae-micro-p8-busi-s1.json").write_text(json.dumps(card))
    assert main(["train", "seeds", "--out", str(tmp_path)]) == 0
    (rec,) = json.loads(capsys.readouterr().out)
    assert rec["name"] == "mae-micro-p8-busi-s1" and rec["seed"] == 1 and rec["sha256"] == "cd" * 32
