"""Tests for medmae_nb.models.backbones: book encoders, honest weight loading, the checksummed download.

No test touches the network: the hub download is replaced by a fake wherever a test goes near it.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from medmae_nb.models import backbones
from medmae_nb.models.backbones import (
    BOOK_ENCODERS,
    ChecksumMismatch,
    WeightsMismatch,
    WeightsUnavailable,
    create_encoder,
    download_weights,
    encoder_info,
    file_sha256,
)
from medmae_nb.models.mae import mae_vit_micro

FIRST_CONV = {"resnet18": "conv1", "convnext_atto": "stem.0", "vit_micro": "patch_embed.proj"}


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


def _rgb_source(arch: str, seed: int = 0, num_classes: int = 0) -> nn.Module:
    """A random RGB model whose weights differ from any later random init (so 'equal' means 'loaded')."""
    torch.manual_seed(seed)
    if arch == "vit_micro":
        return create_encoder("vit_micro", in_chans=3, img_size=32, num_classes=num_classes)
    model = timm.create_model(arch, in_chans=3, num_classes=num_classes)
    for name, buf in model.named_buffers():  # BatchNorm statistics too, so buffers are checked, not just params
        if name.endswith(("running_mean", "running_var")):
            buf.uniform_(0.5, 1.5)
    return model


def _kw(arch: str) -> dict:
    return {"img_size": 32} if arch == "vit_micro" else {}


@pytest.fixture(scope="session")
def resnet(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An ImageNet-like RGB resnet18 (1000-class head) saved once in both formats; tests only read the files."""
    folder = tmp_path_factory.mktemp("resnet")
    src = _rgb_source("resnet18", num_classes=1000)
    state = {k: v.clone() for k, v in src.state_dict().items()}
    return {
        "state": state,
        ".pth": _save(state, folder / "resnet18 weights.pth"),
        ".safetensors": _save(state, folder / "resnet18 weights.safetensors"),
    }


def _source(arch: str, suffix: str, resnet: dict, tmp_path: Path) -> tuple[dict, Path]:
    if arch == "resnet18":
        return resnet["state"], resnet[suffix]
    state = _rgb_source(arch, num_classes=1000 if arch != "vit_micro" else 0).state_dict()
    return state, _save(state, tmp_path / f"w{suffix}")


@pytest.fixture
def offline_hub(monkeypatch: pytest.MonkeyPatch):
    """Replace timm's hub download; the test sets what it does. Offline mode as a second guard against the network."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(backbones, "hub_reachable", lambda *a, **k: True)  # the fake below plays the hub
    calls: list[tuple] = []

    def install(behaviour):
        def fake(*args, **kwargs):
            calls.append((args, kwargs))
            return behaviour(*args, **kwargs)

        monkeypatch.setattr(timm.models._hub, "hf_hub_download", fake)
        return calls

    return install


# ------------------------------------------------------------------------------------------------ book names
@pytest.mark.parametrize(
    ("name", "dim", "depth", "heads"), [("vit_micro", 128, 6, 4), ("vit_tiny", 192, 12, 3), ("vit_small", 384, 12, 6)]
)
def test_book_vits_have_their_widths_and_depths(name: str, dim: int, depth: int, heads: int) -> None:
    with torch.device("meta"):  # the structure is what is tested; meta tensors make even ViT-Small instant
        vit = create_encoder(name)
    assert vit.embed_dim == vit.num_features == dim
    assert len(vit.blocks) == depth
    assert {b.attn.num_heads for b in vit.blocks} == {heads}
    assert vit.blocks[0].mlp.fc1.out_features == 4 * dim
    assert vit.blocks[0].attn.qkv.bias is not None
    assert vit.norm.eps == pytest.approx(1e-6)
    assert vit.patch_embed.patch_size == (8, 8) and vit.patch_embed.img_size == (64, 64)
    assert vit.patch_embed.proj.in_channels == 1
    assert vit.global_pool == "token" and isinstance(vit.head, nn.Identity)


def test_the_book_resnet_is_resnet18_with_quarter_width_stages_and_no_hub_weights() -> None:
    net = create_encoder("resnet18_micro", in_chans=1, num_classes=3)
    layers = (net.layer1, net.layer2, net.layer3, net.layer4)
    assert [len(layer) for layer in layers] == [2, 2, 2, 2]
    assert [layer[-1].conv2.out_channels for layer in layers] == [16, 32, 64, 128]
    assert net.conv1.out_channels == 64 and net.num_features == 128 and net.fc.out_features == 3
    assert 0.6e6 < sum(p.numel() for p in net.parameters()) < 0.8e6
    assert net(torch.rand(2, 1, 64, 64)).shape == (2, 3)
    with pytest.raises(WeightsUnavailable, match="book-only size"):
        create_encoder("resnet18_micro", pretrained=True)


@pytest.mark.parametrize(("patch_size", "img_size", "in_chans"), [(8, 32, 1), (4, 16, 3)])
def test_mae_micro_encoder_loads_strictly_and_computes_the_same(patch_size: int, img_size: int, in_chans: int) -> None:
    torch.manual_seed(0)
    mae = mae_vit_micro(img_size=img_size, patch_size=patch_size, in_chans=in_chans).eval()
    enc = create_encoder("vit_micro", in_chans=in_chans, img_size=img_size, patch_size=patch_size).eval()
    enc.load_state_dict(mae.to_timm().state_dict(), strict=True)
    x = torch.randn(2, in_chans, img_size, img_size)
    with torch.no_grad():
        torch.testing.assert_close(enc.forward_features(x), mae.forward_features_all(x))


def test_mae_encoder_exported_to_a_file_loads_as_vit_micro(tmp_path: Path) -> None:
    torch.manual_seed(0)
    mae = mae_vit_micro(img_size=32, patch_size=8).eval()
    path = _save(mae.to_timm().state_dict(), tmp_path / "mae_encoder.safetensors")
    enc = create_encoder("vit_micro", img_size=32, pretrained=path).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(enc.forward_features(x), mae.forward_features_all(x))


def test_cnn_names_map_to_timm_and_take_any_size() -> None:
    enc = create_encoder("resnet18", in_chans=1, img_size=32)  # img_size is not an argument of a CNN; it is ignored
    assert isinstance(enc, timm.models.ResNet) and enc.conv1.in_channels == 1
    assert enc(torch.randn(1, 1, 40, 40)).shape == (1, 512)


def test_vit_kwargs_pass_through_to_timm() -> None:
    enc = create_encoder("vit_micro", img_size=32, dynamic_img_size=True, num_classes=3).eval()
    with torch.no_grad():
        assert enc(torch.randn(1, 1, 48, 40)).shape == (1, 3)  # 6x5 patches, not the built 4x4


def test_unknown_name_lists_book_names_and_points_to_timm() -> None:
    with pytest.raises(ValueError, match="unknown encoder 'vit_mirco'") as info:
        create_encoder("vit_mirco")
    message = str(info.value)
    assert "Did you mean 'vit_micro'" in message
    assert all(name in message for name in BOOK_ENCODERS) and "timm.list_models" in message


@pytest.mark.parametrize("kwargs", [{"in_chans": 0}, {"num_classes": -1}, {"pretrained": 1.5}])
def test_bad_arguments_raise(kwargs: dict) -> None:
    with pytest.raises((ValueError, TypeError), match="in_chans|num_classes|pretrained"):
        create_encoder("resnet18", **kwargs)


# ------------------------------------------------------------------------------------------------ local files
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("arch", ["resnet18", "convnext_atto"])
def test_file_round_trip_keeps_every_weight(tmp_path: Path, arch: str, suffix: str, resnet: dict) -> None:
    want, path = _source(arch, suffix, resnet, tmp_path)
    torch.manual_seed(1)
    enc = create_encoder(arch, in_chans=3, num_classes=1000, pretrained=path)
    got = enc.state_dict()
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), key


@pytest.mark.parametrize("arch", ["resnet18", "convnext_atto", "vit_micro"])
def test_one_channel_first_conv_is_the_rgb_sum(tmp_path: Path, arch: str, resnet: dict) -> None:
    want, path = _source(arch, ".safetensors", resnet, tmp_path)
    torch.manual_seed(1)
    enc = create_encoder(arch, in_chans=1, pretrained=path, **_kw(arch))  # no classifier: the file's is dropped
    conv = FIRST_CONV[arch] + ".weight"
    got = enc.state_dict()
    assert got[conv].shape[1] == 1
    torch.testing.assert_close(got[conv], want[conv].sum(dim=1, keepdim=True))
    for key in got.keys() - {conv}:
        assert torch.equal(got[key], want[key]), key


def test_grey_file_into_rgb_model_repeats_its_filters(tmp_path: Path) -> None:
    torch.manual_seed(0)
    grey = mae_vit_micro(img_size=32).to_timm().state_dict()
    path = _save(grey, tmp_path / "grey.safetensors")
    with pytest.warns(UserWarning, match="1-channel images"):
        enc = create_encoder("vit_micro", in_chans=3, img_size=32, pretrained=path)
    conv = "patch_embed.proj.weight"
    torch.testing.assert_close(enc.state_dict()[conv], grey[conv].repeat(1, 3, 1, 1) / 3)  # same response to grey
    assert torch.equal(enc.blocks[5].mlp.fc2.weight, grey["blocks.5.mlp.fc2.weight"])


def test_features_only_encoder_loads_from_a_file(resnet: dict) -> None:
    enc = create_encoder("resnet18", in_chans=3, pretrained=resnet[".pth"], features_only=True, out_indices=(1, 2))
    assert [f.shape[1] for f in enc(torch.randn(1, 3, 32, 32))] == [64, 128]
    assert torch.equal(enc.layer2[0].conv1.weight, resnet["state"]["layer2.0.conv1.weight"])
    assert encoder_info(enc)["in_chans"] == 3


def test_classifier_is_kept_when_it_fits_and_fresh_when_it_does_not(tmp_path: Path) -> None:
    src = _rgb_source("convnext_atto", num_classes=5)  # a fine-tuned model: not ImageNet's 1000 classes
    path = _save(src.state_dict(), tmp_path / "finetuned.pth")
    torch.manual_seed(1)
    same = create_encoder("convnext_atto", in_chans=3, num_classes=5, pretrained=path)
    assert torch.equal(same.head.fc.weight, src.head.fc.weight)
    other = create_encoder("convnext_atto", in_chans=3, num_classes=2, pretrained=path)
    assert other.head.fc.weight.shape == (2, 320)
    assert torch.equal(other.head.norm.weight, src.head.norm.weight)
    assert torch.equal(other.stages[3].blocks[1].mlp.fc2.weight, src.stages[3].blocks[1].mlp.fc2.weight)


def test_wrapped_checkpoint_with_ddp_prefix_loads(tmp_path: Path) -> None:
    src = _rgb_source("convnext_atto")
    ckpt = {"model": {f"module.{k}": v for k, v in src.state_dict().items()}, "epoch": 3}
    path = _save(ckpt, tmp_path / "ckpt.pth")
    enc = create_encoder("convnext_atto", in_chans=3, pretrained=path)
    assert torch.equal(enc.stages[3].blocks[1].mlp.fc2.weight, src.stages[3].blocks[1].mlp.fc2.weight)


def test_file_of_another_architecture_is_refused_with_its_keys(resnet: dict) -> None:
    # an ImageNet-style file (with a 1000-class head) into a feature extractor: timm itself loads that non-strictly
    with pytest.raises(WeightsMismatch, match="does not fit 'convnext_atto'") as info:
        create_encoder("convnext_atto", in_chans=3, pretrained=resnet[".pth"])
    message = str(info.value)
    assert "bn1.weight" in message and "head.norm.weight" in message  # extra and missing keys are named


def test_file_with_other_widths_is_refused_with_shapes(tmp_path: Path) -> None:
    path = _save(mae_vit_micro(img_size=32).to_timm().state_dict(), tmp_path / "enc.pth")
    with pytest.raises(WeightsMismatch, match=r"cls_token: file \(1, 1, 128\) vs model \(1, 1, 64\)"):
        create_encoder("vit_micro", img_size=32, embed_dim=64, pretrained=path)


def test_whole_mae_checkpoint_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = _save(mae_vit_micro(img_size=32).state_dict(), tmp_path / "mae.pth")
    with pytest.raises(WeightsMismatch, match="to_timm"):
        create_encoder("vit_micro", img_size=32, pretrained=path)


def test_prefixed_keys_are_refused_with_a_hint(tmp_path: Path) -> None:
    state = {f"encoder.{k}": v for k, v in _rgb_source("convnext_atto").state_dict().items()}
    with pytest.raises(WeightsMismatch, match="Every extra key starts with 'encoder.'"):
        create_encoder("convnext_atto", pretrained=_save(state, tmp_path / "prefixed.pth"))


def test_missing_or_unreadable_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.safetensors not found.*download_weights"):
        create_encoder("resnet18", pretrained=tmp_path / "nope.safetensors")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsMismatch, match="could not read"):
        create_encoder("resnet18", pretrained=tmp_path / "junk.pth")
    _save({"conv1.weight": torch.zeros(2, 3, 1, 1)}, tmp_path / "st.safetensors").rename(tmp_path / "misnamed.pth")
    with pytest.raises(WeightsMismatch, match="rename it to end in '.safetensors'"):
        create_encoder("resnet18", pretrained=tmp_path / "misnamed.pth")


def test_adapting_to_an_unusual_channel_count_warns(resnet: dict) -> None:
    path = resnet[".pth"]
    with pytest.warns(UserWarning, match="3-channel .* to 2 channels"):
        create_encoder("resnet18", in_chans=2, pretrained=path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # grey-scale (summing RGB) and random init are ordinary: no warning
        create_encoder("resnet18", in_chans=1, pretrained=path)
        create_encoder("resnet18", in_chans=2)


def test_init_source_says_where_the_weights_came_from(resnet: dict) -> None:
    assert create_encoder("resnet18").init_source == "random"
    path = resnet[".pth"]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert create_encoder("resnet18", pretrained=path).init_source == f"file:resnet18 weights.pth sha256:{digest[:12]}"


# ------------------------------------------------------------------------------------------------ the hub
@pytest.mark.parametrize(
    "error",
    [
        "huggingface_hub.errors.LocalEntryNotFoundError",
        "huggingface_hub.errors.OfflineModeIsEnabled",
        "builtins.ConnectionError",
    ],
)
def test_unreachable_hub_raises_and_never_returns_a_random_model(offline_hub, error: str) -> None:
    module, cls = error.rsplit(".", 1)
    exc = getattr(__import__(module, fromlist=[cls]), cls)

    def fail(*args, **kwargs):
        raise exc("no route to huggingface.co")

    calls = offline_hub(fail)
    with pytest.raises(WeightsUnavailable, match="no internet access") as info:
        create_encoder("resnet18", pretrained=True)
    assert calls, "the fake hub was never asked: the test did not exercise timm's download path"
    message = str(info.value)
    assert "never falls back to random" in message and "download_weights('resnet18'" in message
    assert ".safetensors or .pth" in message


def test_other_hub_errors_are_not_disguised_as_offline(offline_hub) -> None:
    def fail(*args, **kwargs):
        raise ValueError("corrupt header")

    offline_hub(fail)
    with pytest.raises(ValueError, match="corrupt header"):
        create_encoder("resnet18", pretrained=True)


def test_hub_weights_load_and_are_labelled(offline_hub, resnet: dict) -> None:
    offline_hub(lambda *args, **kwargs: str(resnet[".safetensors"]))  # what the hub would hand back
    enc = create_encoder("resnet18", in_chans=1, pretrained=True)
    assert enc.init_source == "hub:resnet18.a1_in1k"
    want = resnet["state"]
    torch.testing.assert_close(enc.conv1.weight, want["conv1.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(enc.layer2[0].conv1.weight, want["layer2.0.conv1.weight"])


def test_offline_fails_fast_without_asking_the_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backbones, "hub_reachable", lambda *a, **k: False)
    monkeypatch.setattr(backbones, "_hub_cached_file", lambda cfg: None)

    def never(*args, **kwargs):
        raise AssertionError("the hub client was called although the hub is unreachable")

    monkeypatch.setattr(timm.models._hub, "hf_hub_download", never)
    with pytest.raises(WeightsUnavailable, match="could not be reached within 3 s") as info:
        create_encoder("resnet18", pretrained=True)
    assert "never falls back to random" in str(info.value)


def test_offline_uses_the_hub_cache_when_it_has_the_file(monkeypatch: pytest.MonkeyPatch, resnet: dict) -> None:
    monkeypatch.setattr(backbones, "hub_reachable", lambda *a, **k: False)
    monkeypatch.setattr(backbones, "_hub_cached_file", lambda cfg: Path(resnet[".safetensors"]))
    enc = create_encoder("resnet18", in_chans=3, pretrained=True)
    assert enc.init_source == "hub-cache:resnet18.a1_in1k"
    assert torch.equal(enc.layer2[0].conv1.weight, resnet["state"]["layer2.0.conv1.weight"])


def test_hub_reachable_is_false_for_an_unresolvable_host() -> None:
    assert backbones.hub_reachable("host.invalid", timeout=1.0) is False


def test_book_only_size_has_no_hub_weights() -> None:
    with pytest.raises(WeightsUnavailable, match="'vit_micro' has no ImageNet weights"):
        create_encoder("vit_micro", pretrained=True)
    with pytest.raises(WeightsUnavailable, match="no registered ImageNet weights"):
        download_weights("vit_micro", "w.safetensors")


# ------------------------------------------------------------------------------------------------ download
@pytest.fixture
def fake_fetch(monkeypatch: pytest.MonkeyPatch):
    payload = b"pretend these are weights"
    calls: list[dict] = []

    def fetch(source: dict, tmp: Path) -> None:
        calls.append(source)
        tmp.write_bytes(payload)

    monkeypatch.setattr(backbones, "_fetch_weights", fetch)
    return payload, hashlib.sha256(payload).hexdigest(), calls


def test_download_checksum_mismatch_leaves_nothing_behind(tmp_path: Path, fake_fetch) -> None:
    _, digest, _ = fake_fetch
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:]
    with pytest.raises(ChecksumMismatch, match=f"has sha256 {digest}, expected {wrong}"):
        download_weights("convnext_atto", tmp_path / "w.safetensors", sha256=wrong)
    assert list(tmp_path.iterdir()) == []


def test_download_writes_verified_file_and_reuses_it(tmp_path: Path, fake_fetch) -> None:
    payload, digest, calls = fake_fetch
    path = download_weights("convnext_atto", f"{tmp_path}/weights/", sha256=digest.upper())
    assert path == tmp_path / "weights" / "convnext_atto.d2_in1k.safetensors"
    assert path.read_bytes() == payload and file_sha256(path) == digest
    assert calls == [{"hf_hub_id": "timm/convnext_atto.d2_in1k", "filename": "model.safetensors"}]
    assert download_weights("convnext_atto", path, sha256=digest) == path
    assert len(calls) == 1  # the verified file was already there
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_download_into_a_folder_path_without_slash(tmp_path: Path, fake_fetch) -> None:
    """``cache_dir() / "weights"`` (a Path drops any trailing slash) names a folder to create, as chapter 03 passes
    it on a fresh cache; it was refused as a file without a suffix."""
    path = download_weights("convnext_atto", tmp_path / "cache" / "weights")
    assert path == tmp_path / "cache" / "weights" / "convnext_atto.d2_in1k.safetensors" and path.is_file()


def test_download_network_failure_is_reported_and_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    def fetch(source: dict, tmp: Path) -> None:
        tmp.write_bytes(b"half a fi")
        raise ConnectionError("connection reset")

    monkeypatch.setattr(backbones, "_fetch_weights", fetch)
    with pytest.raises(WeightsUnavailable, match="could not download convnext_atto.d2_in1k"):
        download_weights("convnext_atto", tmp_path / "w.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_download_refuses_bad_arguments_before_fetching(tmp_path: Path, fake_fetch) -> None:
    *_, calls = fake_fetch
    with pytest.raises(ValueError, match="64 hex digits"):
        download_weights("convnext_atto", tmp_path / "w.safetensors", sha256="abc")
    with pytest.raises(ValueError, match="comes as a .safetensors file"):
        download_weights("convnext_atto", tmp_path / "w.pth")
    assert calls == []


# ------------------------------------------------------------------------------------------------ info
def test_encoder_info_reports_what_a_chapter_prints() -> None:
    vit = create_encoder("vit_micro", img_size=32)
    info = encoder_info(vit)
    assert info == {
        "name": "vit_micro",
        "params": sum(p.numel() for p in vit.parameters()),
        "in_chans": 1,
        "img_size": (32, 32),
        "num_features": 128,
        "init_source": "random",
    }
    cnn = encoder_info(create_encoder("resnet18", in_chans=3))
    assert (cnn["name"], cnn["in_chans"], cnn["img_size"], cnn["num_features"]) == ("resnet18", 3, None, 512)
    plain = encoder_info(nn.Sequential(nn.Conv2d(2, 4, 3)))
    assert plain["in_chans"] == 2 and plain["init_source"] == "unknown" and plain["params"] == 4 * 2 * 9 + 4


def test_copy_into_timm_keeps_weights_and_refuses_another_architecture() -> None:
    from medmae_nb.models.backbones import copy_into_timm

    torch.manual_seed(0)
    enc = create_encoder("resnet18", in_chans=1)
    model = copy_into_timm(enc, "resnet18", 1, num_classes=3, init_source="test")
    assert model.num_classes == 3 and model.init_source == "test"
    assert torch.equal(model.layer3[0].conv1.weight, enc.layer3[0].conv1.weight)
    with pytest.raises(RuntimeError, match="export to timm failed"):
        copy_into_timm(enc, "convnext_atto", 1)
