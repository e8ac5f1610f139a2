"""Tests for medmae_nb.train.pretrain: the method-agnostic loop — schedule, hooks, resume, cache, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from toys import ToyMAE, jitter, make_mae, toy_dataset

from medmae_nb.models.base import Batch, MethodOutput, SSLMethod
from medmae_nb.train import CheckpointError, SeededViews, cosine_schedule, pretrain

CPU = torch.device("cpu")
PRE = dict(batch_size=16, lr=1e-2, warmup_epochs=1, device=CPU, progress=False)


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_pretrain_learns_records_schedule_and_calls_the_hooks_in_order():
    ds = toy_dataset()
    model, history = pretrain(make_mae(), ds, epochs=6, **{**PRE, "lr": 3e-2})
    assert len(history) == 6 and history.column("epoch") == list(range(1, 7))
    losses = history.column("loss")
    assert losses[-1] < 0.6 * losses[0] and all(a > b for a, b in zip(losses, losses[1:]))
    steps = history.steps
    assert len(steps) == 6 * 3 and history.last["step"] == 18
    assert [s["lr"] for s in steps[:3]] == pytest.approx([0.0, 1e-2, 2e-2])  # 1 warm-up epoch = 3 steps
    assert steps[3]["lr"] == pytest.approx(3e-2)
    assert steps[-1]["lr"] == pytest.approx(cosine_schedule(17, 18, 3, 3e-2))
    assert not model.training
    # every hook once per step, with the step index and the run length
    assert model.calls["begin"] == model.calls["before"] == model.calls["after"] == list(range(18))
    # method logs and the values begin_step returns are averaged per epoch
    assert history.last["masked"] == pytest.approx(0.75) and history.column("progress")[0] == pytest.approx(1 / 18)
    assert history.info["device"] == "cpu" and history.info["processes"] == 1
    assert history.info["precision"] == "float32"


def test_the_epoch_mean_is_the_mean_of_the_step_losses():
    _, history = pretrain(make_mae(), toy_dataset(), epochs=2, **PRE)
    per_step = [s["loss"] for s in history.steps]
    assert history.column("loss") == pytest.approx([sum(per_step[:3]) / 3, sum(per_step[3:]) / 3])


def test_pretrain_is_deterministic_and_seeds_matter():
    a, _ = pretrain(make_mae(), toy_dataset(), epochs=2, views=jitter, **PRE)
    b, _ = pretrain(make_mae(), toy_dataset(), epochs=2, views=jitter, **PRE)
    c, _ = pretrain(make_mae(), toy_dataset(), epochs=2, views=jitter, **{**PRE, "seed": 1})
    assert same_weights(a, b) and not same_weights(a, c)


def test_seeded_views_depend_on_seed_epoch_and_index_only():
    ds = toy_dataset(8)
    views = SeededViews(ds, lambda x: [jitter(x), jitter(x)], seed=3)
    (v0, v1), s = views[5]
    assert not torch.equal(v0, v1)  # two views of one image differ
    torch.manual_seed(123)  # the global generator does not matter
    (w0, w1), s2 = views[5]
    assert s == s2 and torch.equal(v0, w0) and torch.equal(v1, w1)
    views.set_epoch(1)
    (u0, _), s3 = views[5]
    assert s3 != s and not torch.equal(u0, v0)
    assert SeededViews(ds, None, 0)[2][0][0].shape == (1, 16, 16)


def test_a_sample_gets_the_same_views_and_masks_in_any_batch():
    # what lets N processes equal one: the batch a sample lands in does not change its randomness
    model = make_mae().eval()
    data = SeededViews(toy_dataset(8), jitter, seed=0)
    items = [data[i] for i in range(8)]
    batch = Batch([torch.stack([v[0] for v, _ in items])], torch.tensor([s for _, s in items]))
    part = Batch([torch.stack([v[0] for v, _ in items[4:]])], torch.tensor([s for _, s in items[4:]]))
    assert torch.equal(model(batch).mask[4:], model(part).mask)
    assert torch.equal(model(batch).pred[4:], model(part).pred)


class Interrupt(Exception):
    pass


def test_resume_equals_uninterrupted_run(tmp_path, capsys):
    ds = toy_dataset()
    args = dict(epochs=4, views=jitter, **PRE)
    full, full_hist = pretrain(make_mae(), ds, **args)

    def stop_after_2(epoch, history):
        if epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        pretrain(make_mae(), ds, checkpoint_dir=tmp_path, callback=stop_after_2, **args)
    assert (tmp_path / "last.pt").exists()

    started = []
    resumed, hist = pretrain(make_mae(), ds, checkpoint_dir=tmp_path, callback=lambda e, h: started.append(e), **args)
    assert "resuming from epoch 2 of 4 (step 6)" in capsys.readouterr().out
    assert started == [3, 4] and hist.resumed_from == 2
    assert hist.column("epoch") == [1, 2, 3, 4] and hist.column("loss") == full_hist.column("loss")
    assert [s["step"] for s in hist.steps] == list(range(1, 13))
    for (name, x), y in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(x, y), name

    # A finished checkpoint is loaded, not trained again.
    again, _ = pretrain(make_mae(), ds, checkpoint_dir=tmp_path, callback=lambda e, h: started.append(e), **args)
    assert started == [3, 4] and torch.equal(again.decoder.weight, full.decoder.weight)
    # and a run from other starting weights is another run
    with pytest.raises(CheckpointError, match="init"):
        pretrain(make_mae(seed=1), ds, checkpoint_dir=tmp_path, **args)


def test_checkpoint_from_other_config_is_refused(tmp_path):
    ds = toy_dataset()
    pretrain(make_mae(), ds, epochs=1, checkpoint_dir=tmp_path, **PRE)
    with pytest.raises(CheckpointError, match=r"mask_ratio: 0\.75 \(stored\) vs 0\.5 \(now\).*new checkpoint_dir"):
        pretrain(make_mae(mask_ratio=0.5), ds, epochs=1, checkpoint_dir=tmp_path, **PRE)
    with pytest.raises(CheckpointError, match="data.sha256"):
        pretrain(make_mae(), toy_dataset(seed=1), epochs=1, checkpoint_dir=tmp_path, **PRE)
    with pytest.raises(CheckpointError, match="views"):
        pretrain(make_mae(), ds, epochs=1, checkpoint_dir=tmp_path, views=jitter, **PRE)
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        pretrain(make_mae(), ds, epochs=1, checkpoint_dir=tmp_path, **PRE)


def test_cache_loads_same_config_trains_new_one_and_leaves_no_folders(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDMAE_CACHE", str(tmp_path))
    ds = toy_dataset()
    first, hist1 = pretrain(make_mae(), ds, epochs=2, cache=True, **PRE)
    assert "saved to cache (key pretrain-" in capsys.readouterr().out and not hist1.loaded_from_cache
    files = list((tmp_path / "checkpoints").glob("pretrain-*.pt"))
    assert len(files) == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints"]  # no empty runs/

    calls = []
    second, hist2 = pretrain(make_mae(), ds, epochs=2, cache=True, callback=lambda e, h: calls.append(e), **PRE)
    assert f"loaded pre-trained weights from the cache (key {files[0].stem})" in capsys.readouterr().out
    assert hist2.loaded_from_cache and calls == [] and hist2.column("loss") == hist1.column("loss")
    assert torch.equal(first.decoder.weight, second.decoder.weight)

    _, hist3 = pretrain(make_mae(mask_ratio=0.5), ds, epochs=2, cache=True, **PRE)
    _, hist4 = pretrain(make_mae(), ds, epochs=2, cache=True, views=jitter, **PRE)  # views are part of the key
    _, hist5 = pretrain(make_mae(seed=5), ds, epochs=2, cache=True, **PRE)  # so are the starting weights
    assert not hist3.loaded_from_cache and not hist4.loaded_from_cache and not hist5.loaded_from_cache
    assert len(list((tmp_path / "checkpoints").glob("*.pt"))) == 4

    # A file whose stored config disagrees with its key is never passed off as a match.
    state = torch.load(files[0], weights_only=True)
    state["config"]["seed"] = 99
    torch.save(state, files[0])
    with pytest.raises(CheckpointError, match="seed"):
        pretrain(make_mae(), ds, epochs=2, cache=True, **PRE)


def test_gradient_clipping_bounds_the_update_and_logs_the_norm():
    _, free = pretrain(make_mae(), toy_dataset(), epochs=1, **PRE)
    _, clipped = pretrain(make_mae(), toy_dataset(), epochs=1, clip_grad=1e-3, **PRE)
    assert "grad_norm" in clipped.last and "grad_norm" not in free.last
    assert clipped.last["grad_norm"] > 1e-3  # the norm before clipping is what is logged
    assert clipped.column("loss") != free.column("loss")


class NoLoss(SSLMethod):
    def __init__(self):
        super().__init__()
        self.config = {}
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, batch):
        return {"not_loss": self.w.sum()}


class NoConfig(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, batch):
        return MethodOutput((self.w * batch.images.mean()).sum())


def test_bad_methods_and_arguments_get_clear_errors():
    ds = toy_dataset()
    with pytest.raises(TypeError, match=r"scalar tensor `\.loss`"):
        pretrain(NoLoss(), ds, epochs=1, **PRE)
    with pytest.raises(TypeError, match="has no `config` dict"):
        pretrain(NoConfig(), ds, epochs=1, **PRE)
    with pytest.raises(TypeError, match="takes no mask_ratio.*one source of truth"):
        pretrain(make_mae(), ds, epochs=1, mask_ratio=0.5, **PRE)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        pretrain(make_mae(), toy_dataset(8), epochs=1, **PRE)
    with pytest.raises(ValueError, match="precision must be one of"):
        pretrain(make_mae(), ds, epochs=1, precision="fp8", **PRE)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        pretrain(make_mae(), ds, epochs=1, precision="fp16", **PRE)
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        pretrain(make_mae(), ds, epochs=1, **{**PRE, "lr": float("inf"), "warmup_epochs": 0})


def test_world_size_that_does_not_divide_the_batch_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda **kw: None)
    with pytest.raises(ValueError, match=r"multiple of the number of processes \(3\)"):
        pretrain(make_mae(), toy_dataset(), epochs=1, **PRE)


def test_bf16_autocast_runs_on_the_cpu():
    _, history = pretrain(make_mae(), toy_dataset(), epochs=1, precision="bf16", **PRE)
    assert history.info["precision"] == "bfloat16" and history.last["loss"] < 10


def test_workers_give_the_same_result_as_the_main_process():
    a, _ = pretrain(make_mae(), toy_dataset(), epochs=1, views=jitter, **PRE)
    b, _ = pretrain(make_mae(), toy_dataset(), epochs=1, views=jitter, num_workers=2, **PRE)
    assert same_weights(a, b)


def test_toy_method_is_an_sslmethod():
    assert isinstance(ToyMAE(), SSLMethod)


def test_each_epoch_draws_a_new_order_and_new_views_for_every_sample():
    draws, order = [], []

    def record(x):
        draws.append(torch.rand(()).item())  # under the sample's own seed for this epoch
        order.append(round(float(x.sum()), 4))  # which image it is
        return x

    pretrain(make_mae(), toy_dataset(16), epochs=2, views=record, **PRE)
    first, second = draws[:16], draws[16:]
    assert len(draws) == 32 and len(set(first)) == 16 and not set(first) & set(second)
    assert sorted(order[:16]) == sorted(order[16:]) and order[:16] != order[16:]  # every image, reshuffled


class HookSpy(ToyMAE):
    """Checks what each hook sees: gradients (clipped) before the update, new weights after it."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.seen = []

    def before_update(self, step, total_steps):
        grads = [p.grad for p in self.parameters() if p.requires_grad]
        norm = torch.norm(torch.stack([g.norm() for g in grads])).item()
        self._before = self.decoder.weight.detach().clone()
        self.seen.append({"grads": all(g is not None for g in grads), "norm": norm})

    def after_update(self, step, total_steps):
        self.seen[-1]["moved"] = not torch.equal(self._before, self.decoder.weight)


def test_hooks_see_clipped_gradients_before_and_new_weights_after_the_update():
    torch.manual_seed(0)
    spy = HookSpy()
    _, history = pretrain(spy, toy_dataset(), epochs=1, clip_grad=0.05, **PRE)
    assert len(spy.seen) == 3 and all(s["grads"] for s in spy.seen)
    assert [s["moved"] for s in spy.seen] == [False, True, True]  # step 0 has lr 0: the warm-up starts at 0
    assert all(s["norm"] <= 0.05 + 1e-6 for s in spy.seen)  # the gradient the optimiser uses is clipped
    assert history.last["grad_norm"] > 0.05  # while the log keeps the norm before clipping


def test_bf16_autocast_really_computes_in_bf16_on_the_cpu():
    model = make_mae()
    dtypes = []
    model.decoder.register_forward_hook(lambda mod, inp, out: dtypes.append(out.dtype))
    _, history = pretrain(model, toy_dataset(), epochs=1, precision="bf16", **PRE)
    assert set(dtypes) == {torch.bfloat16} and history.info["precision"] == "bfloat16"
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay float32
