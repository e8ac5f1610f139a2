"""MoCo v2: InfoNCE identities, EMA key encoder, the queue, gradients, determinism, a short run, timm export."""

from __future__ import annotations

import copy
import math

import pytest
import timm
import torch

from medmae_nb.data import make_phantom, two_views
from medmae_nb.losses import info_nce
from medmae_nb.models.base import Batch
from medmae_nb.models.contrastive import MoCo, moco_v2_resnet18, momentum_at
from medmae_nb.train import pretrain

SMALL = dict(proj_hidden_dim=32, proj_dim=8, queue_size=16)


def make(**kw) -> MoCo:
    torch.manual_seed(0)
    return MoCo("resnet18", **{**SMALL, **kw})


def views(n: int = 4, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(n, 1, 32, 32, generator=g), torch.rand(n, 1, 32, 32, generator=g)]


def batch(n: int = 4, seed: int = 0) -> Batch:
    return Batch(views(n, seed), torch.arange(n))


@pytest.fixture(scope="module")
def model() -> MoCo:
    return make()


# ------------------------------------------------------------------------------------------------ InfoNCE
def test_info_nce_two_logit_closed_form():
    q = torch.tensor([[1.0, 0.0]])
    neg = torch.tensor([[0.0, 1.0]])  # orthogonal: logit 0; positive identical: logit 1/T
    for t in (0.2, 0.5, 1.0):  # (at T = 0.07 the loss is ~6e-7, below float32 resolution near log(1))
        expected = math.log(1 + math.exp((0 - 1) / t))  # -log(e^(1/T) / (e^(1/T) + e^0))
        assert info_nce(q, q, neg, t).item() == pytest.approx(expected, rel=1e-5)
    # a general 2-logit case: cos(pos) = 0.6, cos(neg) = 0.8, T = 0.5
    k, n = torch.tensor([[0.6, 0.8]]), torch.tensor([[0.8, 0.6]])
    expected = math.log(1 + math.exp((0.8 - 0.6) / 0.5))
    assert info_nce(q, k, n, 0.5).item() == pytest.approx(expected, rel=1e-5)


def test_info_nce_equal_logits_give_log_k_plus_1_and_closer_positives_lower_loss():
    for k in (1, 5, 64):
        q = torch.zeros(3, 8)
        assert info_nce(q, torch.randn(3, 8), torch.randn(k, 8), 0.2).item() == pytest.approx(math.log(k + 1))
    q = torch.tensor([[1.0, 0.0]])
    neg = torch.nn.functional.normalize(torch.tensor([[0.3, 1.0], [-1.0, 0.2]]), dim=1)
    losses = [info_nce(q, torch.tensor([[math.cos(a), math.sin(a)]]), neg, 0.2).item() for a in (1.5, 1.0, 0.5, 0.0)]
    assert all(a > b for a, b in zip(losses, losses[1:]))
    per_query = info_nce(torch.eye(2), torch.eye(2), neg, 0.2, reduction="none")
    assert per_query.shape == (2,) and per_query.mean().item() == pytest.approx(info_nce(torch.eye(2), torch.eye(2),
                                                                                         neg, 0.2).item())
    with pytest.raises(ValueError, match="temperature must be > 0"):
        info_nce(q, q, neg, 0.0)


# ------------------------------------------------------------------------------------------------ EMA
def _perturb_query(m: MoCo) -> None:
    with torch.no_grad():
        for p in [*m.encoder.parameters(), *m.projector.parameters()]:
            p.add_(torch.randn_like(p))


def _params(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


@pytest.mark.parametrize("m", [1.0, 0.0, 0.7])
def test_ema_update(m):
    moco = make(momentum=m)
    _perturb_query(moco)
    k0, q0 = _params(moco.key_encoder) + _params(moco.key_projector), _params(moco.encoder) + _params(moco.projector)
    assert moco.begin_step(3, 10) == {"momentum": m}
    moco.after_update(3, 10)
    k1 = _params(moco.key_encoder) + _params(moco.key_projector)
    for k_before, q, k_after in zip(k0, q0, k1):
        assert torch.equal(k_after, m * k_before + (1 - m) * q)
    if m == 1.0:
        assert all(torch.equal(a, b) for a, b in zip(k0, k1))
    if m == 0.0:
        assert all(torch.equal(q, k) for q, k in zip(q0, k1))


def test_momentum_schedules():
    assert [momentum_at(s, 10, 0.99) for s in (0, 5, 10)] == [0.99, 0.99, 0.99]
    cos = [momentum_at(s, 10, 0.99, "cosine") for s in range(11)]
    assert cos[0] == pytest.approx(0.99) and cos[-1] == 1.0 and cos[5] == pytest.approx(0.995)
    assert all(a < b for a, b in zip(cos, cos[1:]))
    moco = make(momentum=0.9, momentum_schedule="cosine")
    assert moco.begin_step(10, 20)["momentum"] == pytest.approx(0.95) and moco.momentum == pytest.approx(0.95)


# ------------------------------------------------------------------------------------------------ queue
def test_enqueue_wraps_around_and_stores_normalised_keys():
    moco = make(queue_size=6)
    keys = torch.arange(1, 9, dtype=torch.float).repeat_interleave(8).reshape(8, 8) * torch.rand(8, 8)
    unit = torch.nn.functional.normalize(keys, dim=1)
    moco.enqueue(keys[:4])
    assert int(moco.queue_ptr) == 4 and torch.allclose(moco.queue[:4], unit[:4])
    old = moco.queue[4:].clone()
    moco.enqueue(keys[4:])  # rows 4, 5, then 0, 1
    assert int(moco.queue_ptr) == (4 + 4) % 6 == 2
    assert torch.allclose(moco.queue[[4, 5, 0, 1]], unit[4:]) and torch.allclose(moco.queue[2:4], unit[2:4])
    assert not torch.allclose(moco.queue[4:], old)
    assert torch.allclose(moco.queue.norm(dim=1), torch.ones(6))
    moco.enqueue(keys)  # more keys than rows: the last 6 stay, the pointer still moves by 8
    assert int(moco.queue_ptr) == (2 + 8) % 6 and torch.allclose(moco.queue.norm(dim=1), torch.ones(6))
    assert torch.allclose(moco.queue[[4, 5, 0, 1, 2, 3]], unit[2:])


def test_training_forward_enqueues_keys_eval_forward_does_not():
    moco = make(queue_size=6)
    out = moco.train()(batch(4))
    assert int(moco.queue_ptr) == 4 and torch.allclose(moco.queue[:4], out.key)
    assert torch.allclose(moco.queue.norm(dim=1), torch.ones(6))
    state = (moco.queue.clone(), moco.queue_ptr.clone())
    moco.eval()(batch(4, seed=1))
    assert torch.equal(moco.queue, state[0]) and torch.equal(moco.queue_ptr, state[1])


def test_queue_and_pointer_are_checkpointed_and_reload():
    moco = make()
    moco.train()(batch(4))
    state = moco.state_dict()
    assert {"queue", "queue_ptr"} <= set(state) and int(state["queue_ptr"]) == 4
    fresh = make(queue_size=16)
    fresh.queue.zero_()
    fresh.load_state_dict(state)
    assert torch.equal(fresh.queue, moco.queue) and int(fresh.queue_ptr) == 4


# ------------------------------------------------------------------------------------------------ gradients
def test_gradients_reach_the_query_networks_only():
    moco = make().train()
    moco(batch(4)).loss.backward()
    for name, p in [*moco.encoder.named_parameters(), *moco.projector.named_parameters()]:
        assert p.requires_grad and p.grad is not None, name
    assert any(p.grad.abs().sum() > 0 for p in moco.encoder.parameters())
    for name, p in [*moco.key_encoder.named_parameters(), *moco.key_projector.named_parameters()]:
        assert not p.requires_grad and p.grad is None, name
    assert not moco.queue.requires_grad
    trainable = {n for n, p in moco.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("encoder.", "projector.")) for n in trainable)


# ------------------------------------------------------------------------------------------------ determinism
def test_forward_is_deterministic_for_a_fixed_batch_and_state():
    a, b = make().train(), make().train()
    out_a, out_b = a(batch(4)), b(batch(4))
    assert torch.equal(out_a.loss, out_b.loss) and torch.equal(a.queue, b.queue)
    # in eval mode (running BN statistics) each sample's loss ignores its batch neighbours: 4 = 2 + 2
    a.eval()
    v = views(4)
    whole = a(v).loss
    halves = (a([v[0][:2], v[1][:2]]).loss + a([v[0][2:], v[1][2:]]).loss) / 2
    assert whole.item() == pytest.approx(halves.item(), rel=1e-5)


# ------------------------------------------------------------------------------------------------ training
def test_short_pretrain_run_is_finite_and_logs_the_momentum():
    method = moco_v2_resnet18(momentum=0.99, momentum_schedule="cosine", **SMALL)
    key0 = _params(method.key_encoder)
    ds = make_phantom(16, 32, seed=0)
    method, history = pretrain(method, ds, epochs=1, batch_size=4, views=two_views(32), device="cpu", progress=False)
    last = history.last
    assert math.isfinite(last["loss"]) and 0.99 <= last["momentum"] < 1.0
    assert {"acc", "pos_sim", "neg_sim"} <= set(last)
    assert int(method.queue_ptr) == (4 * 4) % 16
    assert any(not torch.equal(a, b) for a, b in zip(key0, method.key_encoder.parameters()))  # the EMA moved it


# ------------------------------------------------------------------------------------------------ export
def test_to_timm_loads_strictly_with_identical_features(model):
    exported = model.to_timm().eval()
    reference = timm.create_model("resnet18", in_chans=1, num_classes=0)
    reference.load_state_dict(model.encoder.state_dict(), strict=True)
    x = torch.rand(2, 1, 32, 32)
    enc = copy.deepcopy(model.encoder).eval()
    with torch.no_grad():
        assert torch.equal(exported.forward_features(x), enc.forward_features(x))
        assert torch.equal(reference.eval().forward_features(x), enc.forward_features(x))
    assert model.to_timm(num_classes=3).fc.out_features == 3 and exported.init_source == "moco_v2(resnet18)"


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("kw, match", [
    (dict(temperature=0.0), r"temperature must be > 0 \(MoCo v2: 0\.2"),
    (dict(temperature=-1.0), "temperature must be > 0"),
    (dict(momentum=1.5), r"momentum must be in \[0, 1\]"),
    (dict(momentum=-0.1), r"momentum must be in \[0, 1\]"),
    (dict(momentum_schedule="linear"), "momentum_schedule must be one of"),
    (dict(queue_size=0), "queue_size must be a positive integer"),
])
def test_bad_configuration_says_how_to_fix_it(kw, match):
    with pytest.raises(ValueError, match=match):
        MoCo("resnet18", **{**SMALL, **kw})


def test_one_view_is_refused_with_a_hint(model):
    with pytest.raises(ValueError, match=r"two augmented views.*two_views"):
        model(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"exactly two views per image, got 1.*two_views"):
        model(Batch([torch.rand(2, 1, 32, 32)], torch.arange(2)))
    moco = make(queue_size=6)  # a queue the batch size does not divide just wraps around
    for _ in range(2):
        moco.train()(batch(4))
    assert int(moco.queue_ptr) == 2


def test_spark_bench_has_the_moco_row(capsys):
    from medmae_nb.bench import main

    main(["spark", "--steps", "1", "--warmup", "0", "--batch-size", "2", "--img-size", "32", "--threads", "1",
          "--queue-size", "8"])
    out = capsys.readouterr().out
    assert "MoCo v2 (2 views)" in out and "MoCo v2 queue 8" in out and "SparK" in out
