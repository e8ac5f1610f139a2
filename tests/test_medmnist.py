"""MedMNIST loading: tiny files written here in the official format, and the real files when present."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medmae_nb.data import medmnist
from medmae_nb.data.base import DataError
from medmae_nb.data.medmnist import file_md5, load_medmnist, medmnist_filename

COUNTS = {"train": 6, "val": 2, "test": 3}


def write_npz(
    path: Path,
    rgb: bool = False,
    size: int = 28,
    n_classes: int = 2,
    label_width: int = 1,
    drop: str | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Writes an npz laid out like an official MedMNIST file and returns its arrays."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in COUNTS.items():
        shape = (n, size, size, 3) if rgb else (n, size, size)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, n_classes, (n, label_width), dtype=np.uint8)
    arrays.pop(drop, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


@pytest.fixture
def no_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our tiny files are not the official ones, so checksums are switched off where a test is not about them."""
    monkeypatch.setattr(medmnist, "MD5", {})


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MEDMAE_DATA", raising=False)
    monkeypatch.setenv("MEDMAE_CACHE", str(tmp_path / "cache"))


def test_gray_file_loads_all_splits_in_order(tmp_path: Path, no_md5: None) -> None:
    arrays = write_npz(tmp_path / "medmnist" / "breastmnist.npz")
    ds = load_medmnist("BreastMNIST", root=tmp_path)
    assert ds.images.shape == (11, 1, 28, 28) and ds.images.dtype == np.float32
    assert ds.labels.dtype == np.int64 and ds.class_names == ("malignant", "normal, benign")
    assert list(ds.split) == ["train"] * 6 + ["val"] * 2 + ["test"] * 3
    expected = np.concatenate([arrays[f"{s}_images"] for s in COUNTS]) / 255.0
    np.testing.assert_allclose(ds.images[:, 0], expected, atol=1e-7)
    np.testing.assert_array_equal(ds.labels, np.concatenate([arrays[f"{s}_labels"][:, 0] for s in COUNTS]))
    np.testing.assert_array_equal(ds.meta["index"], [0, 1, 2, 3, 4, 5, 0, 1, 0, 1, 2])
    assert ds.name == "breastmnist" and len(ds.get_split("val")) == 2


def test_rgb_file_is_channels_first(tmp_path: Path, no_md5: None) -> None:
    arrays = write_npz(tmp_path / "dermamnist.npz", rgb=True, n_classes=7)  # directly in root, no subfolder
    ds = load_medmnist("dermamnist", root=tmp_path)
    assert ds.images.shape == (11, 3, 28, 28) and ds.num_classes == 7
    np.testing.assert_allclose(ds.images[0].transpose(1, 2, 0) * 255, arrays["train_images"][0], atol=1e-4)


def test_env_root_and_larger_file(tmp_path: Path, no_md5: None, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = write_npz(tmp_path / "medmnist" / "pneumoniamnist_64.npz", size=64)
    monkeypatch.setenv("MEDMAE_DATA", str(tmp_path))
    ds = load_medmnist("pneumoniamnist", image_size=64, channels=3)
    assert ds.images.shape == (11, 3, 64, 64) and ds.name == "pneumoniamnist_64"
    np.testing.assert_array_equal(ds.images[:, 0], ds.images[:, 2])
    np.testing.assert_allclose(ds.images[0, 1] * 255, arrays["train_images"][0], atol=1e-4)


def test_deprecated_keywords_warn_name_the_new_one_and_still_work(tmp_path: Path, no_md5: None) -> None:
    write_npz(tmp_path / "pneumoniamnist_64.npz", size=64)
    with pytest.warns(FutureWarning, match=r"size=64\) is deprecated.*use image_size=64"):
        old = load_medmnist("pneumoniamnist", tmp_path, size=64)
    new = load_medmnist("pneumoniamnist", tmp_path, image_size=64)
    np.testing.assert_array_equal(old.images, new.images)
    with pytest.warns(FutureWarning, match=r"as_rgb=True\) is deprecated.*use channels=3"):
        rgb = load_medmnist("pneumoniamnist", tmp_path, image_size=64, as_rgb=True)
    assert rgb.images.shape[1] == 3
    with pytest.warns(FutureWarning, match=r"as_rgb=False\) is deprecated.*use channels=None"):
        assert load_medmnist("pneumoniamnist", tmp_path, image_size=64, as_rgb=False).images.shape[1] == 1
    with pytest.warns(FutureWarning), pytest.raises(DataError, match=r"either size \(deprecated\) or image_size"):
        load_medmnist("pneumoniamnist", tmp_path, image_size=32, size=64)
    with pytest.warns(FutureWarning), pytest.raises(DataError, match=r"either as_rgb \(deprecated\) or channels"):
        load_medmnist("pneumoniamnist", tmp_path, image_size=64, channels=1, as_rgb=True)


def test_shrinking_averages_each_output_pixels_area(tmp_path: Path, no_md5: None) -> None:
    arrays = write_npz(tmp_path / "breastmnist_64.npz", size=64)
    ds = load_medmnist("breastmnist", tmp_path, image_size=32)
    assert ds.images.shape == (11, 1, 32, 32) and ds.images.dtype == np.float32 and ds.name == "breastmnist_32"
    first = arrays["train_images"][0].astype(np.float64) / 255
    blocks = first.reshape(32, 2, 32, 2).mean(axis=(1, 3))  # a 2x reduction must be exactly the 2x2 means
    np.testing.assert_allclose(ds.images[0, 0], blocks, atol=1e-6)
    # A non-integer factor keeps every image's mean intensity too; point sampling (or pooling windows that overlap)
    # of this random texture would be off by up to ~0.03.
    odd = load_medmnist("breastmnist", tmp_path, image_size=27)
    assert odd.images.shape == (11, 1, 27, 27)
    np.testing.assert_allclose(odd.images.mean(axis=(1, 2, 3)), ds.images.mean(axis=(1, 2, 3)), atol=1e-5)
    assert odd.images.std() < ds.images.std()  # more pixels averaged than in 2x2 blocks: sampling would keep 0.29


def test_enlarging_keeps_mean_and_range(tmp_path: Path, no_md5: None) -> None:
    write_npz(tmp_path / "breastmnist.npz")
    native = load_medmnist("breastmnist", tmp_path)
    big = load_medmnist("breastmnist", tmp_path, image_size=40)
    assert big.images.shape == (11, 1, 40, 40) and 0 <= big.images.min() and big.images.max() <= 1
    np.testing.assert_allclose(big.images.mean(axis=(1, 2, 3)), native.images.mean(axis=(1, 2, 3)), atol=0.01)
    np.testing.assert_array_equal(big.labels, native.labels)
    assert big.split.tolist() == native.split.tolist()


def test_rgb_to_gray_is_luma(tmp_path: Path, no_md5: None) -> None:
    arrays = write_npz(tmp_path / "dermamnist.npz", rgb=True, n_classes=7)
    ds = load_medmnist("dermamnist", tmp_path, channels=1)
    assert ds.images.shape == (11, 1, 28, 28)
    pil = np.asarray(Image.fromarray(arrays["train_images"][3]).convert("L"), np.float32) / 255
    np.testing.assert_allclose(ds.images[3, 0], pil, atol=1 / 255)  # the folder loaders' conversion
    assert load_medmnist("dermamnist", tmp_path, channels=3).images.shape[1] == 3


@pytest.mark.parametrize(
    ("on_disk", "kwargs", "read"),
    [
        ((28, 128), {"image_size": 64}, 128),  # the smallest file large enough
        ((28, 64, 128), {"image_size": 64}, 64),
        ((28, 128), {"image_size": 16}, 28),
        ((28, 64), {"image_size": 100}, 64),  # none large enough: the largest there is
        ((28,), {"image_size": 64}, 28),
        ((28, 128), {}, 28),  # no image_size: the 28-px file at its size
        ((28, 128), {"image_size": 64, "file_size": 28}, 28),  # file_size overrides the choice
    ],
)
def test_which_file_is_read(tmp_path: Path, no_md5: None, on_disk: tuple, kwargs: dict, read: int) -> None:
    # Each file holds images of one constant gray level, so the output tells which file it came from.
    for size in on_disk:
        path = tmp_path / "medmnist" / medmnist_filename("breastmnist", size)
        write_npz(path, size=size)
        with np.load(path) as data:
            arrays = {k: np.full_like(v, size) if k.endswith("_images") else v for k, v in data.items()}
        np.savez(path, **arrays)
    ds = load_medmnist("breastmnist", tmp_path, **kwargs)
    np.testing.assert_allclose(ds.images, read / 255, atol=1e-6)
    assert ds.image_size == kwargs.get("image_size", 28)


def test_download_fetches_the_file_for_the_image_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "zenodo" / "breastmnist_64.npz"
    write_npz(source, size=64)
    monkeypatch.setattr(medmnist, "URL_TEMPLATE", (tmp_path / "zenodo").as_uri() + "/{file}")
    monkeypatch.setitem(medmnist.MD5, ("breastmnist", 64), (hashlib.md5(source.read_bytes()).hexdigest(),))
    ds = load_medmnist("breastmnist", root=tmp_path / "data", image_size=48, download=True)
    assert ds.images.shape == (11, 1, 48, 48)
    assert (tmp_path / "data" / "medmnist" / "breastmnist_64.npz").is_file()


def test_root_that_is_a_file_says_so(tmp_path: Path, no_md5: None) -> None:
    path = tmp_path / "breastmnist.npz"
    write_npz(path)
    with pytest.raises(
        DataError, match=rf"data root \(root\) .*breastmnist\.npz is a file, not a folder.*root='{tmp_path}'"
    ):
        load_medmnist("breastmnist", root=path)


def test_file_names() -> None:
    assert medmnist_filename("organamnist") == "organamnist.npz"
    assert medmnist_filename("organamnist", 224) == "organamnist_224.npz"
    assert medmnist.medmnist_url("breastmnist", 128).endswith("/breastmnist_128.npz?download=1")


def test_md5_mismatch_names_file_values_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "medmnist" / "breastmnist.npz"
    write_npz(path)
    found = hashlib.md5(path.read_bytes()).hexdigest()
    with pytest.raises(DataError, match=rf"breastmnist\.npz.*{found}.*750601b1f35ba3300ea97c75c52ff8f6.*delete it"):
        load_medmnist("breastmnist", root=tmp_path)


def test_md5_is_cached_until_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    assert file_md5(path) == hashlib.md5(b"abc").hexdigest()
    assert any(key[0] == str(path.resolve()) for key in medmnist._VERIFIED)
    path.write_bytes(b"abcd")
    assert file_md5(path) == hashlib.md5(b"abcd").hexdigest()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "fashionmnist"}, r"unknown MedMNIST dataset 'fashionmnist'; known 2D datasets: .*breastmnist"),
        ({"name": "chestmnist"}, r"multi-label is not supported"),
        ({"name": "organmnist3d"}, r"3D dataset"),
        (
            {"name": "breastmnist", "file_size": 32},
            r"unknown MedMNIST file size 32.*\(28, 64, 128, 224\).*image_size=32",
        ),
        ({"name": "breastmnist", "image_size": 0}, r"image_size must be a positive integer or None.*got 0"),
        ({"name": "breastmnist", "image_size": 2.5}, r"image_size must be a positive integer"),
        ({"name": "breastmnist", "channels": 2}, r"channels must be 1 \(gray\), 3 \(RGB\) or None"),
        ({"name": "breastmnist", "root": "/x", "channels": True}, r"got True; download is keyword-only"),
        ({"name": "breastmnist", "root": "/nonexistent/x"}, r"/nonexistent/x \(root\) does not exist.*MEDMAE_DATA"),
        ({"name": "breastmnist"}, r"MEDMAE_DATA is not set.*download=True"),
    ],
)
def test_bad_requests(kwargs: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        load_medmnist(**kwargs)


def test_missing_file_says_where_it_looked(tmp_path: Path) -> None:
    match = r"breastmnist\.npz not found; looked at .*medmnist/breastmnist\.npz.*MEDMAE_DATA"
    with pytest.raises(DataError, match=match):
        load_medmnist("breastmnist", root=tmp_path)
    with pytest.raises(DataError, match=r"breastmnist_128\.npz not found; looked at .*medmnist/breastmnist_128\.npz"):
        load_medmnist("breastmnist", root=tmp_path, image_size=64, file_size=128)
    any_file = r"no breastmnist release file \(breastmnist\.npz, breastmnist_64\.npz, .*\) found; looked in .*medmnist"
    with pytest.raises(DataError, match=any_file):
        load_medmnist("breastmnist", root=tmp_path, image_size=64)


def test_missing_keys_are_named(tmp_path: Path, no_md5: None) -> None:
    write_npz(tmp_path / "breastmnist.npz", drop="val_labels")
    with pytest.raises(DataError, match=r"lacks the keys \['val_labels'\]"):
        load_medmnist("breastmnist", root=tmp_path)


def test_not_an_npz(tmp_path: Path, no_md5: None) -> None:
    (tmp_path / "breastmnist.npz").write_bytes(b"this is not a zip file")
    with pytest.raises(DataError, match=r"breastmnist\.npz is not a valid npz file.*download it again"):
        load_medmnist("breastmnist", root=tmp_path)


def test_multi_label_file_and_bad_labels(tmp_path: Path, no_md5: None) -> None:
    write_npz(tmp_path / "breastmnist.npz", label_width=3)
    with pytest.raises(DataError, match=r"3 labels per image.*multi-label is not supported"):
        load_medmnist("breastmnist", root=tmp_path)
    write_npz(tmp_path / "breastmnist.npz", n_classes=5, seed=1)
    with pytest.raises(DataError, match=r"labels outside 0\.\.1"):
        load_medmnist("breastmnist", root=tmp_path)


def test_wrong_image_size_in_file(tmp_path: Path, no_md5: None) -> None:
    write_npz(tmp_path / "breastmnist.npz", size=32)
    with pytest.raises(DataError, match=r"expected \(N, 28, 28"):
        load_medmnist("breastmnist", root=tmp_path)


def test_non_uint8_images(tmp_path: Path, no_md5: None) -> None:
    arrays = write_npz(tmp_path / "breastmnist.npz")
    np.savez(
        tmp_path / "breastmnist.npz", **{k: v.astype(np.float32) if "images" in k else v for k, v in arrays.items()}
    )
    with pytest.raises(DataError, match=r"train_images has dtype float32, expected uint8"):
        load_medmnist("breastmnist", root=tmp_path)


def _serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Puts a tiny breastmnist.npz behind a file:// URL template, so the download path runs without network."""
    source = tmp_path / "zenodo" / "breastmnist.npz"
    write_npz(source)
    monkeypatch.setattr(medmnist, "URL_TEMPLATE", (tmp_path / "zenodo").as_uri() + "/{file}")
    return source


def test_download_streams_checks_and_renames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = _serve(tmp_path, monkeypatch)
    monkeypatch.setitem(medmnist.MD5, ("breastmnist", 28), (hashlib.md5(source.read_bytes()).hexdigest(),))
    ds = load_medmnist("breastmnist", root=tmp_path / "data", download=True)
    target = tmp_path / "data" / "medmnist" / "breastmnist.npz"
    assert len(ds) == 11 and target.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in target.parent.iterdir()) == ["breastmnist.npz"]  # no temporary file left
    source.unlink()  # a present file is not fetched again
    assert len(load_medmnist("breastmnist", root=tmp_path / "data", download=True)) == 11


def test_download_without_root_goes_to_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = _serve(tmp_path, monkeypatch)
    monkeypatch.setitem(medmnist.MD5, ("breastmnist", 28), (hashlib.md5(source.read_bytes()).hexdigest(),))
    assert len(load_medmnist("breastmnist", download=True)) == 11
    assert (tmp_path / "cache" / "data" / "medmnist" / "breastmnist.npz").is_file()
    assert len(load_medmnist("breastmnist")) == 11  # found again without download


def test_corrupt_download_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _serve(tmp_path, monkeypatch)  # the official MD5 stays in the table, so our tiny file is "corrupt"
    with pytest.raises(DataError, match=r"corrupt.*nothing was saved"):
        load_medmnist("breastmnist", root=tmp_path / "data", download=True)
    assert list((tmp_path / "data" / "medmnist").iterdir()) == []


def test_failed_download_is_a_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(medmnist, "URL_TEMPLATE", (tmp_path / "nowhere").as_uri() + "/{file}")
    with pytest.raises(DataError, match=r"could not download .*place it at"):
        load_medmnist("breastmnist", root=tmp_path, download=True)


def test_real_breastmnist(shared_data: Path) -> None:
    path = shared_data / "medmnist" / "breastmnist.npz"
    if not path.exists():
        pytest.skip(f"{path} not found")
    assert file_md5(path) == "750601b1f35ba3300ea97c75c52ff8f6"
    ds = load_medmnist("breastmnist", root=shared_data)
    assert [int((ds.split == s).sum()) for s in ("train", "val", "test")] == [546, 78, 156]
    assert ds.images.shape[1:] == (1, 28, 28) and ds.images.min() >= 0.0 and ds.images.max() <= 1.0
    assert ds.class_counts() == {"malignant": 210, "normal, benign": 570}


def test_real_pneumoniamnist(shared_data: Path) -> None:
    path = shared_data / "medmnist" / "pneumoniamnist.npz"
    if not path.exists():
        pytest.skip(f"{path} not found")
    ds = load_medmnist("pneumoniamnist", root=shared_data)
    assert [int((ds.split == s).sum()) for s in ("train", "val", "test")] == [4708, 524, 624]
    assert ds.class_names == ("normal", "pneumonia")


def test_real_breastmnist_resized_to_rgb(shared_data: Path) -> None:
    path = shared_data / "medmnist" / "breastmnist.npz"
    if not path.exists():
        pytest.skip(f"{path} not found")
    native = load_medmnist("breastmnist", root=shared_data)
    ds = load_medmnist("breastmnist", root=shared_data, image_size=14, channels=3)
    assert ds.images.shape == (780, 3, 14, 14) and ds.name == "breastmnist_14"
    # A 2x area reduction keeps every image's mean exactly.
    np.testing.assert_allclose(ds.images.mean(axis=(1, 2, 3)), native.images.mean(axis=(1, 2, 3)), atol=1e-5)


def test_md5_table_covers_every_2d_dataset_at_every_size() -> None:
    assert len(medmnist.DATASETS_2D) == 12
    assert set(medmnist.MD5) == {(name, size) for name in medmnist.DATASETS_2D for size in medmnist.SIZES}
    for digests in medmnist.MD5.values():
        assert digests and all(len(d) == 32 and int(d, 16) >= 0 for d in digests)
    # the values the shared data's README lists for the files it holds
    assert "750601b1f35ba3300ea97c75c52ff8f6" in medmnist.MD5["breastmnist", 28]
    assert "28209eda62fecd6e6a2d98b1501bb15f" in medmnist.MD5["pneumoniamnist", 28]


def test_dataset_tables_agree() -> None:
    names = set(medmnist.DATASETS_2D)
    assert set(medmnist.LABEL_NAMES) == set(medmnist.N_CHANNELS) == set(medmnist.TASKS) == names
    assert set(medmnist.SPLIT_SIZES) == names
    assert set(medmnist.CLASS_NAMES) | set(medmnist.MULTI_LABEL) == names
    assert {n for n, c in medmnist.N_CHANNELS.items() if c == 3} == {"pathmnist", "dermamnist", "retinamnist",
                                                                      "bloodmnist"}
    assert medmnist.SPLIT_SIZES["breastmnist"] == (546, 78, 156) and len(medmnist.LABEL_NAMES["chestmnist"]) == 14
    assert all("multi-label" in medmnist.TASKS[n] for n in medmnist.MULTI_LABEL)


def test_chestmnist_refusal_explains_multi_label() -> None:
    with pytest.raises(DataError, match=r"chestmnist is multi-label: each image carries 14 yes/no findings "
                                        r"\(atelectasis, .*one class per image.*pneumoniamnist"):
        load_medmnist("chestmnist")
