"""Reliability: what a killed run, a damaged or foreign file and a full disk do.

* A pre-training process killed with SIGKILL (mid-epoch, or while writing its checkpoint) resumes to the weights of an
  uninterrupted run, bit for bit on the CPU, and leaves no temporary file behind.
* A truncated or foreign resume state (``last.pt``) or committed checkpoint (:func:`load_pretrained`) is refused with
  a ``CheckpointError`` that names the file, says what is wrong and what to do.
* A damaged cache entry (:func:`load_or_make`) is rebuilt, with a warning naming it; never returned.
* A full disk while writing a cache entry or a checkpoint is an ``OSError`` naming the file; no partial file is left.
* An unreadable image in a dataset folder is a ``DataError`` naming it, and no file handle is left open.
"""

from __future__ import annotations

import builtins
import errno
import gc
import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from toys import jitter, make_mae, toy_dataset

from medmae_nb import cache
from medmae_nb import pretrained as recipes
from medmae_nb.data.base import DataError
from medmae_nb.data.folders import load_busi, load_image_folder, load_split_folders
from medmae_nb.data.synthetic import make_phantom
from medmae_nb.pretrained import store
from medmae_nb.train import CheckpointError, pretrain

TESTS = Path(__file__).resolve().parent
PLAIN = dict(epochs=4, batch_size=16, lr=1e-2, warmup_epochs=1, device="cpu", progress=False)
RUN = dict(views=jitter, **PLAIN)
STEPS_PER_EPOCH = 3  # 48 toy images, batch 16


def listing(folder: Path) -> list[str]:
    """Every file under ``folder`` (hidden temporary files included), relative, sorted."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDMAE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def uninterrupted():
    """The reference: the toy run of RUN in one go, in this process."""
    method, history = pretrain(make_mae(), toy_dataset(), **RUN)
    return method.state_dict(), history.column("loss")


# ------------------------------------------------------------------------------------------------ killed runs
CHILD = """
import io, os, signal, sys
import torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from toys import jitter, make_mae, toy_dataset
import medmae_nb.cache as cache
from medmae_nb.train import pretrain

run_dir, mode, marker = {run_dir!r}, {mode!r}, {marker!r}
method = make_mae()
if mode == "mid-epoch":
    def after_update(step, total):  # an instance attribute: neither the config nor the weights see it
        if step == {kill_step}:
            open(marker, "w").write(f"step {{step}}")
            os.kill(os.getpid(), signal.SIGKILL)
    method.after_update = after_update
else:  # killed half-way through writing the second checkpoint
    saves = []

    class Dying(io.FileIO):
        def write(self, data):
            super().write(bytes(data)[: len(data) // 2])
            open(marker, "w").write("while saving")
            os.kill(os.getpid(), signal.SIGKILL)

    def dying_open(file, mode="r", *args, **kwargs):
        saves.append(file)
        return Dying(file, "w") if len(saves) == 2 else open(file, mode, *args, **kwargs)

    cache.open = dying_open
pretrain(method, toy_dataset(), checkpoint_dir=run_dir, views=jitter, **{plain!r})
print("not killed")
"""


@pytest.mark.parametrize("mode", ["mid-epoch", "while-saving"])
def test_a_run_killed_with_sigkill_resumes_to_the_uninterrupted_weights(mode, tmp_path, uninterrupted, capsys):
    run_dir = tmp_path / "run"
    kill_step = 2 * STEPS_PER_EPOCH + 1  # the second of epoch 3's three steps: mid-epoch, after epoch 2's checkpoint
    script = CHILD.format(tests=str(TESTS), run_dir=str(run_dir), mode=mode, marker=str(tmp_path / "killed"),
                          kill_step=kill_step, plain=PLAIN)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    child = subprocess.run([sys.executable, "-c", script], env=env, cwd=TESTS.parent, capture_output=True, text=True,
                           timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr
    killed = (tmp_path / "killed").read_text()
    assert killed == (f"step {kill_step}" if mode == "mid-epoch" else "while saving")
    left = listing(run_dir)
    done = torch.load(run_dir / "last.pt", weights_only=True)
    if mode == "mid-epoch":
        assert left == ["last.pt"] and (done["epoch"], done["step"]) == (2, 2 * STEPS_PER_EPOCH)
    else:  # the half-written temporary file beside the intact checkpoint of epoch 1
        assert done["epoch"] == 1 and len(left) == 2 and left[0].startswith(".last.pt.") and left[0].endswith(".tmp")

    resumed, history = pretrain(make_mae(), toy_dataset(), checkpoint_dir=run_dir, **RUN)
    assert f"resuming from epoch {done['epoch']} of 4" in capsys.readouterr().out
    weights, losses = uninterrupted
    for (name, x), y in zip(weights.items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
    assert history.column("loss") == losses
    assert listing(run_dir) == ["last.pt"]  # the temporary file of the killed write is gone


# ------------------------------------------------------------------------------------- damaged resume state
@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A one-epoch toy run: its resume state (last.pt) and its finished cache entry (weights only)."""
    folder = tmp_path_factory.mktemp("finished")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDMAE_CACHE", str(folder / "cache"))
        pretrain(make_mae(), toy_dataset(), checkpoint_dir=folder / "run", **{**RUN, "epochs": 1})
        pretrain(make_mae(), toy_dataset(), cache=True, **{**RUN, "epochs": 1})
    (entry,) = (folder / "cache" / "checkpoints").glob("pretrain-*.pt")
    return (folder / "run" / "last.pt").read_bytes(), entry.read_bytes()


def _bytes_of(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("damage, problem", [
    ("truncated", r"cannot read checkpoint .*last\.pt: it is truncated or damaged"),
    ("not torch", r"cannot read checkpoint .*last\.pt: .*not a torch checkpoint"),
    ("random torch file", r"checkpoint .*last\.pt is not a checkpoint of medmae_nb\.train: it holds a dict with keys "
                          r"\['bias', 'weight'\]"),
    ("a tensor", r"checkpoint .*last\.pt is not a checkpoint of medmae_nb\.train: it holds a Tensor"),
    ("other version", r"checkpoint .*last\.pt was written by another version of medmae_nb\.train \(format 1"),
    ("finished cache entry", r"checkpoint .*last\.pt was written for this config but cannot resume a run: it lacks "
                             r"\['optimizer', 'scaler'\]"),
])
def test_a_damaged_or_foreign_resume_state_is_a_clear_error(damage, problem, finished, tmp_path):
    last, entry = finished
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    content = {
        "truncated": last[: len(last) // 2],
        "not torch": b"epoch,loss\n1,0.5\n",
        "random torch file": _bytes_of(torch.nn.Linear(3, 2).state_dict()),
        "a tensor": _bytes_of(torch.zeros(3)),
        "other version": _bytes_of({**torch.load(io.BytesIO(last), weights_only=True), "format": 1}),
        "finished cache entry": entry,
    }[damage]
    (run_dir / "last.pt").write_bytes(content)
    with pytest.raises(CheckpointError, match=problem) as caught:
        pretrain(make_mae(), toy_dataset(), checkpoint_dir=run_dir, **{**RUN, "epochs": 1})
    assert f"delete {run_dir / 'last.pt'} to start over" in str(caught.value)  # what to do
    assert listing(run_dir) == ["last.pt"] and (run_dir / "last.pt").read_bytes() == content  # left as it was


# --------------------------------------------------------------------------------- damaged committed checkpoint
NAME, OTHER = "mae-micro-p16", "mae-micro-p8"


def _write_checkpoint(folder: Path, name: str, weights: bytes, card: dict | None = None) -> None:
    """A checkpoint and card as train_recipe writes them (untrained weights: load_pretrained cannot tell)."""
    folder.mkdir(parents=True, exist_ok=True)
    recipes.weights_path(name, folder).write_bytes(weights)
    card = card or {"recipe": name, "scale": "smoke", "config": recipes.get_recipe(name, "smoke").config()}
    card = {**card, "sha256": hashlib.sha256(weights).hexdigest()}
    recipes.card_path(name, folder).write_text(json.dumps(card))


def _packed(name: str) -> bytes:
    recipe = recipes.get_recipe(name, "smoke")
    return _bytes_of(store.pack(recipe.method(), recipe.stored, recipe.weights))


@pytest.mark.parametrize("damage, problem", [
    ("truncated", r"mae-micro-p16\.pt has sha256 .*the file is damaged or not the one the card describes; retrain"),
    ("truncated, card rewritten", r"cannot read .*mae-micro-p16\.pt as a checkpoint of recipe mae-micro-p16: it is "
                                  r"truncated, damaged or not a torch file"),
    ("not torch", r"cannot read .*mae-micro-p16\.pt as a checkpoint .*not a torch file"),
    ("random torch file", r"mae-micro-p16\.pt does not hold what recipe mae-micro-p16 stores"),
    ("dict of numbers", r"mae-micro-p16\.pt is not a checkpoint of recipe mae-micro-p16: it holds a dict whose "
                        r"entries \['epoch'\] are not tensors"),
    ("another recipe's weights", r"mae-micro-p16\.pt does not fit recipe mae-micro-p16 .*size mismatch"),
    ("another recipe's card", r"the card of mae-micro-p16 was made by a different recipe .*patch_size"),
    ("truncated card", r"the card .*mae-micro-p16\.json is not valid JSON .*truncated or damaged; retrain"),
])
def test_a_damaged_or_foreign_committed_checkpoint_is_a_clear_error(damage, problem, tmp_path):
    good = _packed(NAME)
    _write_checkpoint(tmp_path, NAME, good)
    weights, card = recipes.weights_path(NAME, tmp_path), recipes.card_path(NAME, tmp_path)
    if damage == "truncated":  # an interrupted copy: the card still describes the whole file
        weights.write_bytes(good[: len(good) // 2])
    elif damage == "truncated card":
        card.write_bytes(card.read_bytes()[:40])
    elif damage == "another recipe's card":  # both files of another recipe copied under this name
        other = {"recipe": OTHER, "scale": "smoke", "config": recipes.get_recipe(OTHER, "smoke").config()}
        _write_checkpoint(tmp_path, NAME, _packed(OTHER), other)
    else:  # the file replaced and its card's sha256 made to match: only the content can tell
        content = {
            "truncated, card rewritten": good[: len(good) // 2],
            "not torch": b"\x89PNG\r\n\x1a\n not weights",
            "random torch file": _bytes_of(torch.nn.Linear(3, 2).state_dict()),
            "dict of numbers": _bytes_of({"epoch": 3, "w": torch.zeros(2)}),
            "another recipe's weights": _packed(OTHER),
        }[damage]
        _write_checkpoint(tmp_path, NAME, content)
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(CheckpointError, match=problem):
        load_pretrained_smoke(tmp_path)
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing written, nothing removed


def load_pretrained_smoke(folder: Path):
    return recipes.load_pretrained(NAME, folder=folder, scale="smoke", device="cpu")


def test_the_stand_in_committed_checkpoint_loads(tmp_path):
    # the damaged-checkpoint cases above start from this good pair
    _write_checkpoint(tmp_path, NAME, _packed(NAME))
    method, card = load_pretrained_smoke(tmp_path)
    assert card["recipe"] == NAME and not method.training


# ---------------------------------------------------------------------------------------- damaged cache entry
def _entry_kw():
    return dict(kind="arrays", suffix=".npz", save=lambda p, a: cache.save_npz(p, a=a),
                load=lambda p: cache.load_npz(p)["a"])


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "empty", "not npz"])
def test_a_damaged_cache_entry_is_rebuilt_with_a_warning_never_returned(damage, tmp_path):
    made = []

    def make():
        made.append(1)
        return np.arange(1000, dtype=np.float64)

    config = {"what": "reliability"}
    first = cache.load_or_make(config, make, **_entry_kw())
    (path,) = (tmp_path / "cache" / "arrays").iterdir()
    data = path.read_bytes()
    if damage == "flipped byte":  # inside the array's values, past every header: only the CRC-32 can tell
        damaged = bytearray(data)
        damaged[len(data) // 2] ^= 0xFF
        data = bytes(damaged)
    else:
        data = {"truncated": data[: len(data) // 2], "empty": b"", "not npz": b"a,b\n1,2\n"}[damage]
    path.write_bytes(data)
    gc.freeze()  # see test_an_unreadable_image_is_named_and_no_file_is_left_open
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            again = cache.load_or_make(config, make, **_entry_kw())
            gc.collect()
    finally:
        gc.unfreeze()
    (warning,) = caught  # one, and no ResourceWarning: load_npz closed the damaged file
    assert warning.category is RuntimeWarning
    assert re.match(rf"arrays: cache entry {re.escape(str(path))} cannot be read \(.+\); it is damaged or truncated, "
                    r"so it is rebuilt and replaced", str(warning.message)), warning.message
    assert made == [1, 1] and np.array_equal(again, first)
    assert listing(tmp_path / "cache") == [f"arrays/{path.name}"]  # rebuilt in place, no temporary file
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(cache.load_or_make(config, make, **_entry_kw()), first) and made == [1, 1]


def test_a_truncated_phantom_cache_entry_is_rebuilt(tmp_path):
    fresh = make_phantom(6, 32, cache=True)
    (path,) = (tmp_path / "cache" / "phantom").iterdir()
    path.write_bytes(path.read_bytes()[:1000])
    gc.freeze()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            again = make_phantom(6, 32, cache=True)
            gc.collect()
        assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []  # load_npz closed it
        assert any(issubclass(w.category, RuntimeWarning) and f"phantom: cache entry {path} cannot be read"
                   in str(w.message) for w in caught)
    finally:
        gc.unfreeze()
    assert np.array_equal(again.images, fresh.images) and np.array_equal(again.masks, fresh.masks)
    assert listing(tmp_path / "cache") == [f"phantom/{path.name}"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuilt entry replaced the damaged one
        assert np.array_equal(make_phantom(6, 32, cache=True).images, fresh.images)


# ----------------------------------------------------------------------------------------------- full disk
class FullDisk:
    """Stands in for ``open`` in medmae_nb.cache: files opened for writing take ``room`` bytes in all, then raise
    ``OSError(ENOSPC)`` after writing what fitted (as a real full disk does)."""

    def __init__(self, room: int) -> None:
        self.room, self.written = room, []

    def __call__(self, file, mode="r", *args, **kwargs):
        f = builtins.open(file, mode, *args, **kwargs)
        if "w" not in mode:
            return f
        self.written.append(Path(file))
        return _Filling(f, self)


class _Filling:
    def __init__(self, f, disk: FullDisk) -> None:
        self._f, self._disk = f, disk

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        fits = max(0, min(len(data), self._disk.room))
        self._f.write(data[:fits])
        self._f.flush()
        self._disk.room -= fits
        if fits < len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return len(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._f.close()


def _assert_disk_full(err: OSError, path: Path) -> None:
    assert err.errno == errno.ENOSPC
    text = str(err)
    assert f"could not write {path}: No space left on device" in text, text
    assert "Nothing was written" in text and "Free space on that disk" in text and "MEDMAE_CACHE" in text


def test_a_full_disk_while_writing_a_cache_entry_is_a_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    disk = FullDisk(room=300)
    monkeypatch.setattr(cache, "open", disk, raising=False)
    with pytest.raises(OSError) as caught:
        cache.load_or_make({"what": "full"}, lambda: np.arange(1000.0), **_entry_kw())
    path = cache.entry(cache.config_key({"what": "full"}, "arrays"), ".npz", "arrays")
    _assert_disk_full(caught.value, path)
    (tmp,) = disk.written
    assert tmp.parent == path.parent and tmp.name.startswith(f".{path.name}.") and disk.room == 0  # part written
    assert listing(tmp_path / "cache") == []
    # and a torch file (a checkpoint, a recipe's weights, a snapshot) alike
    disk = FullDisk(room=300)
    monkeypatch.setattr(cache, "open", disk, raising=False)
    target = tmp_path / "out" / "weights.pt"
    with pytest.raises(OSError) as caught:
        cache.save_torch(target, {"w": torch.zeros(1000)})
    _assert_disk_full(caught.value, target)
    assert len(disk.written) == 1 and disk.room == 0 and listing(tmp_path / "out") == []


def test_a_full_disk_while_saving_a_checkpoint_keeps_the_last_one_and_the_run_resumes(tmp_path, monkeypatch,
                                                                                      uninterrupted):
    run_dir = tmp_path / "run"
    disk = FullDisk(room=2000)

    def fill_after_epoch_2(epoch, history):  # after epoch 2's checkpoint: epoch 3's cannot be written
        if epoch == 2:
            monkeypatch.setattr(cache, "open", disk, raising=False)

    with pytest.raises(OSError) as caught:
        pretrain(make_mae(), toy_dataset(), checkpoint_dir=run_dir, callback=fill_after_epoch_2, **RUN)
    _assert_disk_full(caught.value, run_dir / "last.pt")
    assert len(disk.written) == 1 and disk.room == 0  # it did write part of epoch 3's checkpoint
    assert listing(run_dir) == ["last.pt"] and torch.load(run_dir / "last.pt", weights_only=True)["epoch"] == 2
    monkeypatch.undo()  # space freed
    resumed, history = pretrain(make_mae(), toy_dataset(), checkpoint_dir=run_dir, **RUN)
    weights, losses = uninterrupted
    assert all(torch.equal(x, y) for x, y in zip(weights.values(), resumed.state_dict().values(), strict=True))
    assert history.column("loss") == losses and history.resumed_from == 2


# ------------------------------------------------------------------------------------- unreadable images
def _png(seed: int = 0) -> bytes:
    noise = np.random.default_rng(seed).integers(0, 256, (40, 40), dtype=np.uint8)  # noise: nothing compresses
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg(seed: int = 0) -> bytes:
    noise = np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


BAD = {
    "garbage.png": (lambda: b"these bytes are no image at all", r"cannot identify image file.*It is no image PIL can "
                                                                  r"read .*replace or delete the file"),
    "empty.png": (lambda: b"", r"cannot identify image file.*It is no image PIL can read"),
    "cut.png": (lambda: _png()[: len(_png()) // 2], r"image file is truncated.*truncated or corrupt .*replace or "
                                                     r"delete it"),
    "cut.jpg": (lambda: _jpeg()[: len(_jpeg()) // 2], r"truncated or corrupt .*replace or delete it"),
}
LOADERS = {
    "load_image_folder": lambda root: load_image_folder(root / "busi", image_size=8),
    "load_busi": lambda root: load_busi(root, image_size=8),
    "load_split_folders": lambda root: load_split_folders(root / "splits", image_size=8),
}


def _tree(root: Path) -> None:
    """busi/CLASS/ with masks (for load_image_folder and load_busi) and splits/SPLIT/CLASS/."""
    for k, cls in enumerate(("normal", "benign", "malignant")):
        (root / "busi" / cls).mkdir(parents=True)
        Image.fromarray(np.full((12, 12), 40 * k, np.uint8)).save(root / "busi" / cls / f"{cls} (1).png")
        mask = np.zeros((12, 12), np.uint8)
        mask[2:6, 2:6] = 255
        Image.fromarray(mask).save(root / "busi" / cls / f"{cls} (1)_mask.png")
    for split in ("train", "test"):
        for cls in ("benign", "malignant"):
            (root / "splits" / split / cls).mkdir(parents=True)
            Image.fromarray(np.full((12, 12), 99, np.uint8)).save(root / "splits" / split / cls / "a.png")


@pytest.mark.parametrize("loader", sorted(LOADERS))
@pytest.mark.parametrize("bad", sorted(BAD) + ["cut_mask.png"])
def test_an_unreadable_image_is_named_and_no_file_is_left_open(bad, loader, tmp_path, monkeypatch):
    _tree(tmp_path)
    LOADERS[loader](tmp_path)  # the tree itself loads
    folder = tmp_path / ("splits/test/malignant" if loader == "load_split_folders" else "busi/benign")
    if bad == "cut_mask.png":  # a lesion mask, truncated
        target = folder / ("a_mask.png" if loader == "load_split_folders" else "benign (1)_mask.png")
        content, problem = _png()[:200], BAD["cut.png"][1]
    else:
        target, (content, problem) = folder / bad, BAD[bad]
        content = content()
    target.write_bytes(content)
    before = listing(tmp_path)
    unraisable: list = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    gc.freeze()  # what exists now is no concern of this test: the collection below then takes milliseconds, not 1 s
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(DataError, match=rf"cannot read image {re.escape(str(target))}: .*{problem}"):
                LOADERS[loader](tmp_path)
            gc.collect()  # a leaked file handle warns when its object is collected
    finally:
        gc.unfreeze()
    leaks = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaks and not unraisable, [str(w.message) for w in leaks] + [str(u.exc_value) for u in unraisable]
    assert listing(tmp_path) == before
