"""Dataset specs: parsing and round trips, and loading every kind with one set of defaults from tiny files written here
(and the real MedMNIST / BUSI files when present)."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medmae_nb.data import medmnist
from medmae_nb.data.base import DataError, ImageDataset
from medmae_nb.data.folders import UNLABELLED
from medmae_nb.data.medmnist import DATASETS_2D, SIZES
from medmae_nb.data.spec import (
    DataSpec,
    colour_images,
    is_grayscale,
    is_unlabelled,
    load_spec,
    native_channels,
    parse_spec,
)


def save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def gray(value: int, size: int = 12) -> np.ndarray:
    return np.full((size, size), value, np.uint8)


def red(size: int = 12) -> np.ndarray:
    a = np.zeros((size, size, 3), np.uint8)
    a[..., 0] = 200
    return a


def write_npz(path: Path, counts: tuple[int, int, int] = (6, 2, 3), rgb: bool = False, n_classes: int = 2) -> None:
    """An npz laid out like an official MedMNIST file, 28 px."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in zip(("train", "val", "test"), counts):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28, 3) if rgb else (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, n_classes, (n, 1), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test here depends on the caller's MEDMAE_DATA or working directory unless it sets them itself."""
    monkeypatch.delenv("MEDMAE_DATA", raising=False)
    monkeypatch.setenv("MEDMAE_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def no_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our tiny npz files are not the official ones: switch the checksum off, as tests/test_medmnist.py does."""
    monkeypatch.setattr(medmnist, "MD5", {})


# ------------------------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    "text",
    ["phantom", "busi", "medmnist:breastmnist", "medmnist:pathmnist@224", "medmnist:chestmnist@28",
     "folder:/data/my scans", "folder:relative/dir", "unlabelled:/data/scans", "folder:C:\\data"],
)
def test_canonical_specs_round_trip(text: str) -> None:
    spec = parse_spec(text)
    assert str(spec) == text and parse_spec(str(spec)) == spec and parse_spec(spec) is spec
    assert hash(spec) == hash(parse_spec(text))  # frozen: usable as a dict key or cache key


def test_every_2d_medmnist_name_and_size_parses() -> None:
    assert len(DATASETS_2D) == 12
    for name in DATASETS_2D:
        assert parse_spec(f"medmnist:{name}") == DataSpec("medmnist", name=name)
        for size in SIZES:
            spec = parse_spec(f"medmnist:{name}@{size}")
            assert (spec.name, spec.size, str(spec)) == (name, size, f"medmnist:{name}@{size}")


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        (" Phantom ", "phantom"),
        ("BUSI", "busi"),
        ("MedMNIST:BreastMNIST @ 64", "medmnist:breastmnist@64"),
        ("folder:data/scans/", "folder:data/scans"),
        ("Folder:./data/scans", "folder:data/scans"),
    ],
)
def test_specs_are_normalised(text: str, canonical: str) -> None:
    assert str(parse_spec(text)) == canonical


def test_bare_existing_folder_is_a_folder_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "scans").mkdir()
    assert parse_spec(str(tmp_path / "scans")) == DataSpec("folder", path=str(tmp_path / "scans"))
    assert parse_spec(tmp_path / "anything") == DataSpec("folder", path=str(tmp_path / "anything"))  # a Path object
    monkeypatch.chdir(tmp_path)
    assert str(parse_spec("scans")) == "folder:scans"
    (tmp_path / "phantom").mkdir()
    assert parse_spec("phantom").kind == "phantom"  # the keyword wins; folder:phantom names the folder
    assert parse_spec("folder:phantom").path == "phantom"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", r"empty dataset spec; use one of: phantom; medmnist:NAME"),
        ("mnist", r"unknown dataset spec 'mnist'\. Accepted forms: phantom; medmnist:NAME .*folder:PATH"),
        ("breastmnist", r"Did you mean medmnist:breastmnist\?"),
        ("imagenet:val", r"unknown dataset spec 'imagenet:val'\. Accepted forms"),
        ("./no/such/folder", r"looks like a path, but .*no/such/folder does not exist"),
        ("medmnist", r"needs a NAME after a colon, e\.g\. medmnist:breastmnist"),
        ("folder", r"needs a PATH after a colon"),
        ("medmnist:", r"needs a dataset name, one of pathmnist, chestmnist"),
        ("medmnist:fashionmnist", r"unknown MedMNIST dataset 'fashionmnist'\..*The 2D datasets: pathmnist"),
        ("medmnist:breastmnst", r"Did you mean breastmnist\?"),
        ("medmnist:breastmnist_64", r"write medmnist:breastmnist@64"),
        ("medmnist:organmnist3d", r"3D MedMNIST dataset"),
        ("medmnist:breastmnist@32", r"SIZE must be one of \(28, 64, 128, 224\).*image_size=\.\.\."),
        ("medmnist:breastmnist@", r"SIZE after @ must be one of"),
        ("medmnist:breastmnist@big", r"SIZE after @ must be one of"),
        ("folder:", r"folder:PATH needs a folder path"),
        ("unlabelled: ", r"unlabelled:PATH needs a folder path"),
        ("phantom:64", r"phantom takes nothing after a colon; pass image_size"),
    ],
)
def test_bad_specs_say_what_is_accepted(text: str, match: str) -> None:
    with pytest.raises(DataError, match=match):
        parse_spec(text)


def test_bad_spec_objects(tmp_path: Path) -> None:
    (tmp_path / "x.npz").write_bytes(b"")
    with pytest.raises(DataError, match=r"is a file, not a folder.*medmnist:NAME with root="):
        parse_spec(str(tmp_path / "x.npz"))
    with pytest.raises(DataError, match=r"a dataset spec is a string"):
        parse_spec(42)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"unknown dataset kind 'mnist'; use one of"):
        DataSpec("mnist")
    with pytest.raises(DataError, match=r"'phantom' takes no name or size"):
        DataSpec("phantom", name="breastmnist")
    with pytest.raises(DataError, match=r"'busi' takes no path"):
        DataSpec("busi", path="/data")
    with pytest.raises(DataError, match=r"SIZE must be one of"):
        DataSpec("medmnist", name="breastmnist", size=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        parse_spec("phantom").kind = "busi"  # type: ignore[misc]


# ------------------------------------------------------------------------------------------------------- phantom
def test_phantom_defaults_and_options() -> None:
    ds = load_spec("phantom", image_size=32, n_train=6, n_val=3, n_test=3, seed=1)
    assert ds.images.shape == (12, 1, 32, 32) and ds.masks is not None
    assert [int((ds.split == s).sum()) for s in ("train", "val", "test")] == [6, 3, 3]
    rgb = load_spec("phantom", image_size=32, channels=3, n_train=6, n_val=3, n_test=3, seed=1)
    assert rgb.channels == 3 and np.array_equal(rgb.images[:, 1], ds.images[:, 0]) and is_grayscale(rgb)
    assert not is_unlabelled(ds) and native_channels("phantom") == 1
    with pytest.raises(DataError, match=r"unknown phantom option\(s\) \['n_trian'\]; make_phantom_splits takes"):
        load_spec("phantom", n_trian=5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image_size": 0}, r"image_size must be a positive integer"),
        ({"image_size": 32.0}, r"image_size must be a positive integer"),
        ({"channels": 2}, r"channels must be 1 \(gray\), 3 \(RGB\) or None"),
        ({"channels": True}, r"channels must be 1 \(gray\), 3 \(RGB\) or None"),
    ],
)
def test_bad_options(kwargs: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        load_spec("phantom", **kwargs)


# ------------------------------------------------------------------------------------------------------- folders
@pytest.fixture
def split_tree(tmp_path: Path) -> Path:
    """Train/Val/test split folders (as a dataset ships them), two gray classes in each, different counts."""
    root = tmp_path / "splits"
    counts = {"Train": (3, 2), "Val": (1, 1), "test": (2, 1)}
    for split, (n_a, n_b) in counts.items():
        for i in range(n_a):
            save(root / split / "a" / f"a{i}.png", gray(10 * i))
        for i in range(n_b):
            save(root / split / "b" / f"b{i}.png", gray(200 + i))
    return root


def test_split_folders_are_kept_as_split(split_tree: Path) -> None:
    ds = load_spec(f"folder:{split_tree}", image_size=8)
    assert [int((ds.split == s).sum()) for s in ("train", "val", "test")] == [5, 2, 3]
    assert ds.class_names == ("a", "b") and ds.channels == 1 and ds.images.shape[-1] == 8
    # every sample's split is its folder's, never a re-split
    folder_split = {"Train": "train", "Val": "val", "test": "test"}
    assert [folder_split[f.split("/")[0]] for f in ds.meta["file"]] == ds.split.tolist()
    assert not is_unlabelled(ds)


def test_class_folders_have_no_split(tmp_path: Path) -> None:
    root = tmp_path / "classes"
    for i in range(3):
        save(root / "benign" / f"b{i}.png", gray(50))
        save(root / "malignant" / f"m{i}.png", gray(150))
    ds = load_spec(str(root), image_size=8)  # a bare path
    assert ds.split is None and ds.class_counts() == {"benign": 3, "malignant": 3} and ds.channels == 1
    assert not is_unlabelled(ds) and native_channels(str(root)) == 1


def _assert_unlabelled(ds: ImageDataset, n: int) -> None:
    assert len(ds) == n and ds.split is None and is_unlabelled(ds)
    assert ds.meta[UNLABELLED].all()
    # labels -1 with no classes once ImageDataset accepts that; until then the one class "unlabelled"
    assert (ds.class_names == () and (ds.labels == -1).all()) or (
        ds.class_names == (UNLABELLED,) and (ds.labels == 0).all()
    )


def test_unlabelled_folders_load_for_pretraining(tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    for i in range(4):
        save(flat / f"scan{i}.png", gray(20 * i))
    _assert_unlabelled(load_spec(f"folder:{flat}", image_size=8), 4)

    nested = tmp_path / "nested"  # patient/study/image: no folder holds images directly
    save(nested / "p1" / "s1" / "x.png", gray(1))
    save(nested / "p1" / "s2" / "y.png", gray(2))
    save(nested / "p2" / "s1" / "z.png", gray(3))
    ds = load_spec(f"folder:{nested}", image_size=8)
    _assert_unlabelled(ds, 3)
    assert ds.meta["file"].tolist() == ["p1/s1/x.png", "p1/s2/y.png", "p2/s1/z.png"]

    single = tmp_path / "single"  # one subfolder is no class structure
    save(single / "images" / "x.png", gray(1))
    _assert_unlabelled(load_spec(f"folder:{single}", image_size=8), 1)


def test_unlabelled_spec_ignores_class_like_folders(tmp_path: Path) -> None:
    root = tmp_path / "patients"  # one folder per patient looks like class folders: unlabelled: says otherwise
    for patient in ("p01", "p02", "p03"):
        save(root / patient / "a.png", gray(5))
    assert load_spec(f"folder:{root}", image_size=8).class_names == ("p01", "p02", "p03")
    ds = load_spec(f"unlabelled:{root}", image_size=8)
    _assert_unlabelled(ds, 3)


def test_mixed_layouts_load_unlabelled_with_a_warning(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    save(root / "a" / "x.png", gray(1))
    save(root / "b" / "deeper" / "y.png", gray(2))
    with pytest.warns(UserWarning, match=r"\['b'\] hold no images directly.*loads unlabelled"):
        ds = load_spec(f"folder:{root}", image_size=8)
    _assert_unlabelled(ds, 2)
    loose = tmp_path / "loose"
    save(loose / "stray.png", gray(1))
    save(loose / "a" / "x.png", gray(1))
    save(loose / "b" / "y.png", gray(1))
    with pytest.warns(UserWarning, match=r"holds 1 image\(s\) directly \(e\.g\. stray\.png\).*move the loose"):
        _assert_unlabelled(load_spec(f"folder:{loose}", image_size=8), 3)


def test_rgb_folder_stays_rgb_unless_gray_is_asked(tmp_path: Path) -> None:
    root = tmp_path / "rgb"
    for i in range(2):
        save(root / "a" / f"a{i}.png", red())
        save(root / "b" / f"b{i}.png", np.dstack([gray(90)] * 3))  # stored as RGB, channels equal
    assert native_channels(f"folder:{root}") == 3
    ds = load_spec(f"folder:{root}", image_size=8)
    assert ds.channels == 3 and not is_grayscale(ds) and colour_images(ds).tolist() == [0, 1]
    assert is_grayscale(ds.subset([2, 3]))  # the RGB files with equal channels
    one = load_spec(f"folder:{root}", image_size=8, channels=1)
    assert one.channels == 1
    np.testing.assert_allclose(one.images[0], round(0.299 * 200) / 255, atol=1e-6)  # luma, as PIL's convert("L")


def test_gray_folder_stays_gray_unless_rgb_is_asked(tmp_path: Path) -> None:
    root = tmp_path / "gray"
    save(root / "a" / "x.png", gray(30))
    save(root / "b" / "y.png", gray(60))
    assert load_spec(f"folder:{root}", image_size=8).channels == 1
    rgb = load_spec(f"folder:{root}", image_size=8, channels=3)
    assert rgb.channels == 3 and is_grayscale(rgb) and colour_images(rgb).size == 0
    save(root / "b" / "z.png", red())  # one colour file makes the folder colour
    assert load_spec(f"folder:{root}", image_size=8).channels == 3


def test_relative_folder_paths_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save(tmp_path / "data" / "scans" / "x.png", gray(1))
    _assert_unlabelled(load_spec("folder:scans", root=tmp_path / "data", image_size=8), 1)
    monkeypatch.setenv("MEDMAE_DATA", str(tmp_path / "data"))
    _assert_unlabelled(load_spec("unlabelled:scans", image_size=8), 1)
    with pytest.raises(DataError, match=r"folder 'nowhere' not found \(looked for nowhere or .*data/nowhere\)"):
        load_spec("folder:nowhere")
    with pytest.raises(DataError, match=r"\['n_train'\] are options of the phantom; 'folder:scans' takes only"):
        load_spec("folder:scans", n_train=5)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"holds no images, directly or in subfolders"):
        load_spec(f"folder:{tmp_path / 'empty'}")


def test_grayscale_checks_tolerance() -> None:
    x = np.full((3, 3, 4, 4), 0.5, np.float32)
    x[2, 1] += 1e-3
    ds = ImageDataset(x, np.zeros(3), ("a",))
    assert not is_grayscale(ds) and is_grayscale(ds, atol=1e-2)
    assert colour_images(ds).tolist() == [2] and colour_images(ds, atol=1e-2).size == 0
    assert is_grayscale(ImageDataset(x[:, :1], np.zeros(3), ("a",)))


def test_busi_alias_finds_busi_under_the_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    busi = tmp_path / "busi_256_gt"  # a tiny stand-in: RGB files with equal channels and a mask, as BUSI ships
    for cls, value in (("benign", 80), ("malignant", 40), ("normal", 120)):
        save(busi / cls / f"{cls} (1).png", np.dstack([gray(value)] * 3))
    save(busi / "benign" / "benign (1)_mask.png", gray(255))
    ds = load_spec("busi", root=tmp_path, image_size=8)
    assert ds.class_names == ("normal", "benign", "malignant")  # the phantom's order, unlike folder:'s sorted one
    assert ds.channels == 3 and is_grayscale(ds) and ds.masks is not None and ds.masks[1].all()
    monkeypatch.setenv("MEDMAE_DATA", str(tmp_path))
    assert load_spec("busi", image_size=8, channels=1).channels == 1 and native_channels("busi") == 3
    assert load_spec(f"folder:{busi}", image_size=8).class_names == ("benign", "malignant", "normal")


# ------------------------------------------------------------------------------------------------------- MedMNIST
def test_medmnist_keeps_the_official_split(tmp_path: Path, no_md5: None, monkeypatch: pytest.MonkeyPatch) -> None:
    write_npz(tmp_path / "medmnist" / "breastmnist.npz")
    ds = load_spec("medmnist:breastmnist", root=tmp_path)
    assert ds.images.shape == (11, 1, 64, 64)  # the one default image size, from the 28-px file
    assert ds.split.tolist() == ["train"] * 6 + ["val"] * 2 + ["test"] * 3
    assert ds.class_names == ("malignant", "normal, benign")
    monkeypatch.setenv("MEDMAE_DATA", str(tmp_path))
    assert load_spec("medmnist:breastmnist@28", image_size=28).images.shape == (11, 1, 28, 28)
    assert load_spec("medmnist:breastmnist", image_size=28, channels=3).channels == 3


def test_medmnist_native_channels(tmp_path: Path, no_md5: None) -> None:
    write_npz(tmp_path / "dermamnist.npz", rgb=True, n_classes=7)
    assert native_channels("medmnist:dermamnist") == 3
    assert load_spec("medmnist:dermamnist", root=tmp_path, image_size=28).channels == 3
    assert load_spec("medmnist:dermamnist", root=tmp_path, image_size=28, channels=1).channels == 1
    assert [native_channels(f"medmnist:{n}") for n in ("pathmnist", "bloodmnist", "retinamnist", "octmnist")] == [
        3, 3, 3, 1,
    ]


def test_medmnist_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"breastmnist_64\.npz not found"):
        load_spec("medmnist:breastmnist@64", root=tmp_path)
    with pytest.raises(DataError, match=r"chestmnist is multi-label: each image carries 14 yes/no findings"):
        load_spec("medmnist:chestmnist", root=tmp_path)
    write_npz(tmp_path / "breastmnist.npz")  # the official checksum is on: our tiny file is not the official one
    with pytest.raises(DataError, match=r"is not the official breastmnist\.npz: MD5"):
        load_spec("medmnist:breastmnist", root=tmp_path)


# ------------------------------------------------------------------------------------------------------- real data
def test_real_breastmnist(shared_data: Path) -> None:
    path = shared_data / "medmnist" / "breastmnist.npz"
    if not path.exists():
        pytest.skip(f"{path} not found")
    ds = load_spec("medmnist:breastmnist", root=shared_data, image_size=28)
    assert [int((ds.split == s).sum()) for s in ("train", "val", "test")] == [546, 78, 156]
    assert ds.images.shape[1:] == (1, 28, 28)


def test_real_busi(shared_data: Path) -> None:
    if not (shared_data / "busi_256_gt").is_dir():
        pytest.skip(f"{shared_data / 'busi_256_gt'} not found")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # BUSI's class folders are detected as such, silently
        ds = load_spec(f"folder:{shared_data / 'busi_256_gt'}", image_size=16)
    assert ds.split is None and ds.class_counts() == {"benign": 437, "malignant": 210, "normal": 133}
    # RGB PNGs, so native 3; nearly gray, but a few carry coloured annotations
    assert ds.channels == 3 and native_channels("busi", root=shared_data) == 3 and not is_grayscale(ds)
    assert 0 < len(colour_images(ds)) < 40
