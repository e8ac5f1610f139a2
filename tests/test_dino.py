"""DINO: loss identities, the centre, pair counting, EMA teacher, last-layer freeze, schedules, multi-crop forward, a
short run, timm export and errors."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import timm
import torch
from torch.nn import functional as F

from medmae_nb.data import make_phantom, multi_crop
from medmae_nb.losses import DINOLoss, dino_loss
from medmae_nb.models import dino as dino_module
from medmae_nb.models.backbones import create_encoder
from medmae_nb.models.base import Batch
from medmae_nb.models.dino import (
    DINO,
    DINOHead,
    dino_resnet18_micro,
    dino_vit_micro,
    multi_crop_forward,
    teacher_temp_at,
)
from medmae_nb.train import pretrain
from medmae_nb.train.optim import build_optimizer

SMALL = dict(out_dim=32, hidden_dim=16, bottleneck_dim=8)
ENCODERS = ("vit_micro", "resnet18_micro")


def make(encoder: str = "vit_micro", **kw) -> DINO:
    torch.manual_seed(0)
    if encoder == "vit_micro":
        return dino_vit_micro(img_size=32, **{**SMALL, **kw})
    return dino_resnet18_micro(**{**SMALL, **kw})


def views(n: int = 4, n_local: int = 2, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(n, 1, 32, 32, generator=g) for _ in range(2)] + [
        torch.rand(n, 1, 16, 16, generator=g) for _ in range(n_local)]


def batch(n: int = 4, n_local: int = 2, seed: int = 0) -> Batch:
    return Batch(views(n, n_local, seed), torch.arange(n))


def _params(*nets: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for net in nets for p in net.parameters()]



# ------------------------------------------------------------------------------------------------- multi-crop sizes
def _view_shapes(maker, image: torch.Tensor) -> list[tuple[int, ...]]:
    torch.manual_seed(0)
    return [tuple(v.shape) for v in maker(image)]


@pytest.mark.parametrize("size", [32, 48, 64])
def test_dinos_default_views_are_two_globals_of_the_image_size_and_two_locals_of_exactly_half(size):
    image = torch.rand(1, 80, 96)  # larger than the views and not square: every view is resized to its own side
    assert _view_shapes(DINO.default_views(size), image) == [(1, size, size)] * 2 + [(1, size // 2, size // 2)] * 2


@pytest.mark.parametrize("scale, global_size, local_size", [("book", 64, 32), ("smoke", 32, 16)])
def test_the_dino_recipe_makes_local_crops_of_exactly_the_size_it_names(scale, global_size, local_size):
    """The recipe's description says "2 global 64-px + 2 local 32-px crops"; its smoke scale halves both."""
    from medmae_nb.pretrained import get_recipe

    recipe = get_recipe("dino-vit-micro", scale)
    assert recipe.data.image_size == global_size
    if scale == "book":
        assert f"2 global {global_size}-px + 2 local {local_size}-px crops" in recipe.description
    image = torch.rand(1, global_size, global_size)
    expected = [(1, global_size, global_size)] * 2 + [(1, local_size, local_size)] * 2
    assert _view_shapes(recipe.view_maker(), image) == expected


@pytest.mark.parametrize("global_size, local_size", [(64, 32), (40, 24), (33, 9), (16, 16)])
def test_multi_crop_local_views_have_exactly_the_asked_for_side(global_size, local_size):
    for image in (torch.rand(1, 50, 50), torch.rand(1, 20, 70)):
        for seed in range(3):  # whatever crop box is drawn
            torch.manual_seed(seed)
            out = multi_crop(global_size, local_size, n_local=3)(image)
            assert [tuple(v.shape) for v in out] == [(1, global_size, global_size)] * 2 + [
                (1, local_size, local_size)] * 3


# ------------------------------------------------------------------------------------------------ loss identities
@pytest.mark.parametrize("k", [2, 8, 100])
@pytest.mark.parametrize("n_crops", [2, 3, 8])
def test_zero_logits_give_log_k(k, n_crops):
    uniform = [torch.full((5, k), 1.0 / k)] * 2
    assert dino_loss(torch.zeros(n_crops, 5, k), uniform).item() == pytest.approx(math.log(k), rel=1e-6)
    # through the centred, sharpened teacher: zero logits stay uniform at any temperature
    crit = DINOLoss(k)
    for temp in (0.02, 0.04, 1.0):
        loss = crit(torch.zeros(n_crops, 5, k), [torch.zeros(5, k)] * 2, teacher_temp=temp)
        assert loss.item() == pytest.approx(math.log(k), rel=1e-6)


def test_identical_distributions_give_the_teacher_entropy_and_the_rest_is_kl():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 16, generator=g) * 3
    for temp in (0.1, 0.5):
        crit = DINOLoss(16, student_temp=temp)  # centre 0
        q = F.softmax(z / temp, dim=-1)
        entropy = -torch.special.xlogy(q, q).sum(-1).mean()
        loss = crit(torch.stack([z] * 4), [z, z], teacher_temp=temp)
        assert loss.item() == pytest.approx(entropy.item(), rel=1e-5)
    # another student: cross-entropy = teacher entropy + KL(teacher || student), pair by pair
    s = torch.randn(6, 16, generator=g)
    q = F.softmax(z / 0.1, dim=-1)
    kl = F.kl_div(F.log_softmax(s / 0.1, dim=-1), q, reduction="batchmean")
    entropy = -torch.special.xlogy(q, q).sum(-1).mean()
    assert dino_loss([z, s], [q], 0.1).item() == pytest.approx((entropy + kl).item(), rel=1e-5)


def test_center_update_rule_and_the_centre_in_the_teacher():
    crit = DINOLoss(4, center_momentum=0.9)
    assert torch.equal(crit.center, torch.zeros(1, 4))
    c0 = torch.tensor([[1.0, -1.0, 0.5, 0.0]])
    crit.center.copy_(c0)
    t = [torch.arange(8.0).reshape(2, 4), torch.ones(2, 4)]
    mean = torch.tensor([[1.5, 2.0, 2.5, 3.0]])  # over both crops' rows
    crit.update_center(t)
    assert torch.allclose(crit.center, 0.9 * c0 + 0.1 * mean)
    for _ in range(300):  # a fixed batch: the centre converges to its mean
        crit.update_center(t)
    assert torch.allclose(crit.center, mean, atol=1e-5)
    # centring: teacher logits equal to the centre give a uniform teacher
    probs = crit.teacher_probs([crit.center.expand(3, 4)], teacher_temp=0.04)[0]
    assert torch.allclose(probs, torch.full((3, 4), 0.25))
    frozen = DINOLoss(4, center_momentum=1.0)
    frozen.update_center(t)
    assert torch.equal(frozen.center, torch.zeros(1, 4))


def test_the_method_centres_with_the_old_centre_then_updates_it_in_training_only():
    m = make().train()
    m.center.copy_(torch.randn(1, SMALL["out_dim"], generator=torch.Generator().manual_seed(1)))
    c0 = m.center.clone()
    b = batch()
    teacher = m.teacher_logits(b.views[:2])
    out = m(b)
    expected = [F.softmax((t - c0) / m.teacher_temp, dim=-1) for t in teacher]
    assert all(torch.allclose(a, e, atol=1e-6) for a, e in zip(out.teacher_probs, expected))
    assert torch.allclose(m.center, 0.9 * c0 + 0.1 * torch.cat(teacher).mean(0, keepdim=True), atol=1e-6)
    c1 = m.center.clone()
    m.eval()(b)
    assert torch.equal(m.center, c1)
    assert "criterion.center" in m.state_dict()


CENTER_SCRIPT = r'''
import sys, torch, torch.distributed as dist
from medmae_nb.losses import DINOLoss
dist.init_process_group("gloo")
rank = dist.get_rank()
crit = DINOLoss(3, center_momentum=0.5)
crit.update_center([torch.full((2, 3), float(rank)), torch.full((2, 3), 10.0 * rank)])  # rank 1: 1, 1, 10, 10
torch.save(crit.center, f"{sys.argv[1]}/center{rank}.pt")
dist.destroy_process_group()
'''


def test_centre_is_the_mean_over_every_process(tmp_path):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("this torch build has no gloo backend")
    (tmp_path / "run.py").write_text(CENTER_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(tmp_path / "run.py"), str(tmp_path)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    centres = [torch.load(tmp_path / f"center{r}.pt") for r in (0, 1)]
    # rows: rank 0 four zeros; rank 1 two ones and two tens -> mean 22 / 8, half of it after momentum 0.5
    assert torch.equal(centres[0], centres[1]) and torch.allclose(centres[0], torch.full((1, 3), 0.5 * 22 / 8))


# ------------------------------------------------------------------------------------------------ pairs
@pytest.mark.parametrize("n_crops", [2, 3, 4, 10])
def test_loss_has_exactly_2_n_crops_minus_2_terms(n_crops):
    # student crop v scores class 0 with log-probability -a_v; a one-hot teacher on class 0 makes pair (i, v) cost a_v
    x = torch.linspace(-2.0, 3.0, n_crops)
    student = [torch.tensor([[xv.item(), 0.0]]) for xv in x]
    a = [-F.log_softmax(s, dim=-1)[0, 0].item() for s in student]
    teacher = [torch.tensor([[1.0, 0.0]])] * 2
    per_pair = dino_loss(student, teacher, student_temp=1.0, reduction="none")
    assert per_pair.shape == (2 * n_crops - 2,)
    pairs = [(i, v) for i in range(2) for v in range(n_crops) if v != i]
    assert per_pair.tolist() == pytest.approx([a[v] for _, v in pairs], rel=1e-6)
    mean = dino_loss(student, teacher, student_temp=1.0)
    assert mean.item() == pytest.approx(sum(a[v] for _, v in pairs) / (2 * n_crops - 2), rel=1e-6)


def test_the_method_scores_2_n_crops_minus_2_pairs(monkeypatch):
    counts = []

    def spy(student, teacher, student_temp, reduction="mean"):
        per_pair = dino_loss(student, teacher, student_temp, reduction="none")
        counts.append(len(per_pair))
        return per_pair.mean() if reduction == "mean" else per_pair

    monkeypatch.setattr(dino_module, "dino_loss", spy)
    m = make()
    for n_local in (0, 2, 5):
        counts.clear()
        m(batch(n_local=n_local))
        assert counts[0] == 2 * (2 + n_local) - 2  # the loss; the second call is the global-pair monitor (2 pairs)
        assert counts[1] == 2


# ------------------------------------------------------------------------------------------------ EMA teacher
@pytest.mark.parametrize("momentum", [1.0, 0.0, 0.7])
def test_ema_update(momentum):
    m = make(momentum=momentum, freeze_last_layer=0)
    with torch.no_grad():
        for p in [*m.encoder.parameters(), *m.head.parameters()]:
            p.add_(torch.randn_like(p))
    t0, s0 = _params(m.teacher_encoder, m.teacher_head), _params(m.encoder, m.head)
    assert m.begin_step(0, 10)["momentum"] == pytest.approx(momentum)
    m.after_update(0, 10)
    t1 = _params(m.teacher_encoder, m.teacher_head)
    for before, s, after in zip(t0, s0, t1):
        assert torch.allclose(after, momentum * before + (1 - momentum) * s, atol=1e-6)
    if momentum == 1.0:
        assert all(torch.equal(a, b) for a, b in zip(t0, t1))


def test_teacher_starts_as_the_student_without_gradients_or_drop_path():
    m = make()
    assert all(torch.equal(a, b) for a, b in zip(_params(m.encoder, m.head), _params(m.teacher_encoder,
                                                                                      m.teacher_head)))
    assert m.encoder.blocks[-1].drop_path1.drop_prob > 0  # the student's stochastic depth (0.1) …
    assert all(not hasattr(b.drop_path1, "drop_prob") for b in m.teacher_encoder.blocks)  # … not the teacher's
    m.train()(batch()).loss.backward()
    for name, p in [*m.teacher_encoder.named_parameters(), *m.teacher_head.named_parameters()]:
        assert not p.requires_grad and p.grad is None, name
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.encoder.parameters())


def test_momentum_follows_a_cosine_to_one():
    m = make(momentum=0.9, freeze_last_layer=0)
    values = [m.begin_step(s, 100)["momentum"] for s in (0, 50, 100)]
    assert values == pytest.approx([0.9, 0.95, 1.0])


# ------------------------------------------------------------------------------------------------ last layer
def _train_step(m: DINO, opt: torch.optim.Optimizer, step: int, total: int) -> None:
    """One step as the loop takes it: hooks around forward, backward and AdamW."""
    m.begin_step(step, total)
    loss = m(batch(seed=step)).loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    m.before_update(step, total)
    opt.step()
    m.after_update(step, total)


def test_last_layer_is_frozen_for_freeze_last_layer_epochs():
    m = make(epochs=4, freeze_last_layer=2).train()  # 3 steps per epoch: steps 0-5 frozen
    opt = build_optimizer(m, lr=1e-2, weight_decay=0.5)  # strong decay: a zeroed gradient would still shrink it
    last = m.head.last_layer.parametrizations.weight.original1
    for step in range(6):
        before, mlp_before = last.detach().clone(), _params(m.head.mlp)
        _train_step(m, opt, step, 12)
        assert torch.equal(last, before), step
        assert not all(torch.equal(a, b) for a, b in zip(mlp_before, _params(m.head.mlp)))  # the rest trains
    before = last.detach().clone()
    _train_step(m, opt, 6, 12)
    assert not torch.equal(last, before)


def test_the_last_layer_keeps_unit_norms_when_norm_last_layer():
    head = DINOHead(16, out_dim=24, hidden_dim=12, bottleneck_dim=6)
    magnitude = head.last_layer.parametrizations.weight.original0
    assert not magnitude.requires_grad and torch.equal(magnitude, torch.ones(24, 1))
    assert torch.allclose(head.last_layer.weight.detach().norm(dim=1), torch.ones(24), atol=1e-6)
    m = make(freeze_last_layer=0).train()
    opt = build_optimizer(m, lr=1e-2)
    _train_step(m, opt, 0, 2)
    assert torch.allclose(m.head.last_layer.weight.detach().norm(dim=1), torch.ones(SMALL["out_dim"]), atol=1e-5)
    free = DINOHead(16, out_dim=24, hidden_dim=12, bottleneck_dim=6, norm_last_layer=False)
    assert free.last_layer.parametrizations.weight.original0.requires_grad
    assert isinstance(DINOHead(16, 24, 12, 6, n_layers=1).mlp[0], torch.nn.Linear)
    assert any(isinstance(x, torch.nn.BatchNorm1d) for x in DINOHead(16, 24, 12, 6, use_bn=True).mlp)


# ------------------------------------------------------------------------------------------------ temperature
def test_teacher_temperature_warm_up_start_middle_end():
    assert teacher_temp_at(0, 0.06, 0.02, 4) == pytest.approx(0.02)
    assert teacher_temp_at(2, 0.06, 0.02, 4) == pytest.approx(0.04)
    assert teacher_temp_at(4, 0.06, 0.02, 4) == pytest.approx(0.06)
    assert teacher_temp_at(9.5, 0.06, 0.02, 4) == pytest.approx(0.06)
    assert teacher_temp_at(0, 0.06, 0.02, 0) == pytest.approx(0.06)  # no warm-up
    m = make(epochs=10, teacher_temp=0.06, warmup_teacher_temp=0.02, warmup_teacher_temp_epochs=4,
             freeze_last_layer=0)
    assert m.teacher_temp == pytest.approx(0.02)  # before the first step
    temps = {s: m.begin_step(s, 100)["teacher_temp"] for s in (0, 5, 20, 40, 99)}  # 10 steps per epoch
    assert temps == pytest.approx({0: 0.02, 5: 0.025, 20: 0.04, 40: 0.06, 99: 0.06})
    assert m.teacher_temp == pytest.approx(0.06)


# ------------------------------------------------------------------------------------------------ forward
@pytest.mark.parametrize("encoder", ENCODERS)
def test_multi_crop_forward_gives_a_finite_loss_and_the_monitors(encoder):
    m = make(encoder).train()
    calls = {"student": 0, "teacher": 0}
    m.encoder.register_forward_hook(lambda *_: calls.__setitem__("student", calls["student"] + 1))
    m.teacher_encoder.register_forward_hook(lambda *_: calls.__setitem__("teacher", calls["teacher"] + 1))
    out = m(batch(n_local=2))
    assert calls == {"student": 2, "teacher": 1}  # once per crop size; the teacher sees the globals only
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert set(out.logs) == {"teacher_entropy", "kl", "teacher_temp", "momentum"}
    assert all(math.isfinite(float(v)) for v in out.logs.values())
    assert 0 <= float(out.logs["teacher_entropy"]) <= math.log(SMALL["out_dim"]) + 1e-5
    assert float(out.logs["kl"]) >= -1e-5
    assert len(out.student_logits) == 4 and len(out.teacher_probs) == 2
    assert all(s.shape == (4, SMALL["out_dim"]) for s in out.student_logits)
    # the monitors decompose the global pairs' cross-entropy
    cross = dino_loss(out.student_logits[:2], out.teacher_probs, 0.1)
    assert float(out.logs["teacher_entropy"] + out.logs["kl"]) == pytest.approx(cross.item(), rel=1e-5)


def test_grouped_forward_equals_one_view_at_a_time():
    m = make().eval()  # LayerNorm ViT, no drop path in eval: each image's output ignores its neighbours
    v = views(n_local=3)
    with torch.no_grad():
        grouped = multi_crop_forward(m.encoder, m.head, v)
        alone = [m.head(m.encoder(x)) for x in v]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grouped, alone))


def test_no_weight_decay_names_the_vit_tokens():
    m, tokens = make(), {"encoder.pos_embed", "encoder.cls_token"}
    assert tokens <= m.no_weight_decay() and tokens <= dict(m.named_parameters()).keys()
    assert make("resnet18_micro").no_weight_decay() == set()


def test_config_is_json_and_a_state_dict_restores_the_method():
    m = make(epochs=5)
    config = json.loads(json.dumps(m.config))
    assert config == m.config and config["out_dim"] == SMALL["out_dim"] and config["encoder_weights"] == "random"
    assert config["epochs"] == 5 and config["patch_size"] == 8 and config["img_size"] == 32
    m.train()(batch())  # moves the centre
    state = m.state_dict()
    assert {"criterion.center", "teacher_head.last_layer.parametrizations.weight.original1"} <= set(state)
    fresh = make(epochs=5)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.center, m.center)
    b = batch(seed=3)
    assert torch.equal(fresh.eval()(b).loss, m.eval()(b).loss)



@pytest.mark.parametrize("part", ["teacher_encoder", "encoder"])
def test_restore_from_part_copies_the_loaded_encoder_into_the_other_and_keeps_the_heads(part):
    """After a checkpoint of one encoder is loaded (pretrained.load_pretrained), the other becomes an exact copy of it;
    the heads, which such a checkpoint does not hold, stay as initialised (the teacher head a copy of the student's)."""
    m = make()
    loaded, other = (m.teacher_encoder, m.encoder) if part == "teacher_encoder" else (m.encoder, m.teacher_encoder)
    with torch.no_grad():  # stands for the weights a checkpoint brings
        for p in loaded.parameters():
            p.add_(torch.randn_like(p))
    heads = _params(m.head, m.teacher_head)
    want = {k: v.clone() for k, v in loaded.state_dict().items()}
    m.restore_from_part(part)
    for k, v in other.state_dict().items():
        assert torch.equal(v, want[k]), k
    assert all(torch.equal(v, want[k]) for k, v in loaded.state_dict().items())  # the loaded one untouched
    assert all(torch.equal(a, b) for a, b in zip(heads, _params(m.head, m.teacher_head)))
    assert all(torch.equal(a, b) for a, b in zip(_params(m.head), _params(m.teacher_head)))
    assert not any(p.requires_grad for p in m.teacher_encoder.parameters())  # the teacher still takes no gradients
    assert all(p.requires_grad for p in m.encoder.parameters())
    with pytest.raises(ValueError, match="'teacher_encoder' or 'encoder', got 'teacher_head'"):
        m.restore_from_part("teacher_head")


# ------------------------------------------------------------------------------------------------ training
def test_short_pretrain_run_changes_the_teacher_and_logs_the_monitors():
    method = make(epochs=1, freeze_last_layer=0.5, warmup_teacher_temp=0.02, warmup_teacher_temp_epochs=1)
    teacher0 = _params(method.teacher_encoder, method.teacher_head)
    ds = make_phantom(16, 32, seed=0)
    method, history = pretrain(method, ds, epochs=1, batch_size=8, lr=1e-3,
                               views=multi_crop(32, 16, n_local=2), device="cpu", progress=False)
    last = history.last
    assert math.isfinite(last["loss"]) and {"teacher_entropy", "kl", "teacher_temp", "momentum"} <= set(last)
    assert last["teacher_temp"] == pytest.approx((0.02 + 0.03) / 2)  # steps 0 and 1 of 2: epochs 0 and 0.5
    assert 0.99 <= last["momentum"] < 1.0
    assert any(not torch.equal(a, b) for a, b in zip(teacher0, _params(method.teacher_encoder,
                                                                       method.teacher_head)))
    assert method.center.abs().sum() > 0


# ------------------------------------------------------------------------------------------------ export
@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("which", ["teacher", "student"])
def test_to_timm_loads_strictly_with_identical_features(encoder, which):
    m = make(encoder, freeze_last_layer=0)
    with torch.no_grad():  # make teacher and student differ
        for p in m.encoder.parameters():
            p.add_(0.01 * torch.randn_like(p))
    source = m.teacher_encoder if which == "teacher" else m.encoder
    exported = m.to_timm(which=which).eval()
    plain = (create_encoder("vit_micro", in_chans=1, img_size=32) if encoder == "vit_micro"
             else timm.create_model("resnet18", in_chans=1, num_classes=0, channels=(16, 32, 64, 128)))
    plain.load_state_dict(source.state_dict(), strict=True)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        reference = source.eval()(x)
        assert torch.allclose(exported(x), reference, atol=1e-6)
        assert torch.allclose(plain.eval()(x), reference, atol=1e-6)
    assert exported.init_source == f"dino({encoder}, {which})"
    assert m.to_timm(num_classes=3).get_classifier().out_features == 3
    if encoder == "vit_micro":  # trained on crops of two sizes, the export takes them too
        assert exported(torch.rand(1, 1, 16, 16)).shape == (1, 128)


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("kw, match", [
    (dict(teacher_temp=0.0), r"teacher_temp must be > 0 \(DINO: 0\.04 to 0\.07"),
    (dict(warmup_teacher_temp=-0.01), "warmup_teacher_temp must be > 0"),
    (dict(student_temp=0.0), r"student_temp must be > 0 \(DINO uses 0\.1\)"),
    (dict(momentum=1.5), r"momentum must be in \[0, 1\]"),
    (dict(center_momentum=-0.1), r"center_momentum must be in \[0, 1\]"),
    (dict(out_dim=0), "out_dim must be a positive integer"),
    (dict(hidden_dim=2.5), "hidden_dim must be a positive integer"),
    (dict(head_layers=0), "n_layers must be a positive integer"),
    (dict(freeze_last_layer=-1), r"freeze_last_layer must be a number >= 0"),
    (dict(warmup_teacher_temp_epochs=-2), r"warmup_teacher_temp_epochs must be a number >= 0"),
    (dict(epochs=0), "epochs must be a positive integer"),
])
def test_bad_configuration_says_how_to_fix_it(kw, match):
    with pytest.raises(ValueError, match=match):
        make(**kw)


def test_patch_size_is_refused_for_a_cnn():
    with pytest.raises(ValueError, match="patch_size applies to ViT encoders only.*leave patch_size=None"):
        DINO("resnet18_micro", patch_size=8, **SMALL)


def test_schedules_in_epochs_need_the_runs_epochs():
    with pytest.raises(ValueError, match="build it with epochs= the number of epochs you give pretrain"):
        make().begin_step(0, 10)  # freeze_last_layer=1 epoch by default
    with pytest.raises(ValueError, match="10 steps, not a multiple of the method's epochs=3"):
        make(epochs=3).begin_step(0, 10)
    assert make(freeze_last_layer=0).begin_step(0, 10) == pytest.approx({"teacher_temp": 0.04, "momentum": 0.99})


def test_bad_views_and_export_are_refused_with_a_hint():
    m = make()
    with pytest.raises(ValueError, match=r"multi-crop views.*got one tensor.*multi_crop"):
        m(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"two global views of one size first.*\(1, 32, 32\), \(1, 16, 16\)"):
        m([torch.rand(2, 1, 32, 32), torch.rand(2, 1, 16, 16)])
    with pytest.raises(ValueError, match="two global views"):
        m(Batch([torch.rand(2, 1, 32, 32)], torch.arange(2)))
    with pytest.raises(ValueError, match=r"which must be one of \('teacher', 'student'\)"):
        m.to_timm(which="ema")


def test_dino_loss_refuses_bad_inputs():
    z = torch.zeros(3, 8)
    with pytest.raises(ValueError, match="need 1 to 2 teacher crops for 2 student crops"):
        dino_loss([z, z], [z, z, z])
    with pytest.raises(ValueError, match="must be \\(N, K\\) of one shape"):
        dino_loss([z, torch.zeros(3, 4)], [z])
    with pytest.raises(ValueError, match="one crop gives no pair"):
        dino_loss([z], [z])
    with pytest.raises(ValueError, match="reduction must be"):
        dino_loss([z, z], [z], reduction="sum")
    with pytest.raises(ValueError, match="teacher_temp must be > 0"):
        DINOLoss(8).teacher_probs([z], 0.0)
