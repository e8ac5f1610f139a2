"""Tests for medmae_nb.losses against references written out term by term: MAE's masked MSE and its norm-pix target,
InfoNCE, DINO's cross-entropy over crop pairs and the centre of :class:`DINOLoss`; dtypes, gradients and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medmae_nb.losses import DINOLoss, dino_loss, info_nce, masked_mse, norm_pix_target, patch_stats


# ---------------------------------------------------------------------------------------------- MAE: patch stats
def test_patch_stats_are_the_mean_and_the_unbiased_std_of_each_patch():
    torch.manual_seed(0)
    target = torch.randn(2, 5, 12, dtype=torch.float64) * 3 + 1
    mean, std = patch_stats(target, eps=1e-6)
    t = target.numpy()
    assert mean.shape == std.shape == (2, 5, 1)
    np.testing.assert_allclose(mean[..., 0].numpy(), t.mean(-1), rtol=1e-12)
    np.testing.assert_allclose(std[..., 0].numpy(), np.sqrt(t.var(-1, ddof=1) + 1e-6), rtol=1e-12)
    flat_mean, flat_std = patch_stats(torch.full((1, 1, 4), 0.3), eps=1e-4)  # a flat patch: std is sqrt(eps)
    assert flat_mean.item() == pytest.approx(0.3) and flat_std.item() == pytest.approx(1e-2)


def test_norm_pix_target_standardises_each_patch_by_its_own_statistics():
    torch.manual_seed(1)
    target = torch.rand(3, 4, 16, dtype=torch.float64) * torch.arange(1, 5, dtype=torch.float64).view(1, 4, 1)
    out = norm_pix_target(target)
    t = target.numpy()
    expected = (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, ddof=1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12)
    assert torch.allclose(out.mean(-1), torch.zeros(3, 4, dtype=torch.float64), atol=1e-12)
    assert torch.all(norm_pix_target(torch.full((1, 2, 8), 5.0)) == 0)  # flat patches stay finite: all zero


# ---------------------------------------------------------------------------------------------- MAE: masked MSE
def reference_masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """The mean over hidden patches of each patch's mean squared error, one patch at a time."""
    errors = [float(((pred[n, i] - target[n, i]) ** 2).mean())
              for n in range(mask.shape[0]) for i in range(mask.shape[1]) if mask[n, i]]
    return sum(errors) / len(errors) if errors else 0.0


def test_masked_mse_averages_over_hidden_patches_only():
    torch.manual_seed(2)
    pred, target = torch.randn(2, 6, 10, dtype=torch.float64), torch.randn(2, 6, 10, dtype=torch.float64)
    mask = torch.tensor([[1, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 1]], dtype=torch.float64)
    assert masked_mse(pred, target, mask).item() == pytest.approx(reference_masked_mse(pred, target, mask), rel=1e-12)
    # a bool or integer mask means the same
    assert masked_mse(pred, target, mask.bool()).item() == pytest.approx(masked_mse(pred, target, mask).item())
    assert masked_mse(pred, target, mask.long()).item() == pytest.approx(masked_mse(pred, target, mask).item())
    # no mask: every given patch counts (the hidden-only layout the MAE trains with)
    assert masked_mse(pred, target).item() == pytest.approx(float(((pred - target) ** 2).mean()), rel=1e-12)
    # nothing hidden: 0, not a division by zero
    assert masked_mse(pred, target, torch.zeros(2, 6)).item() == 0.0


def test_masked_mse_with_norm_pix_scores_against_the_standardised_target():
    torch.manual_seed(3)
    pred, target = torch.randn(2, 4, 8), torch.rand(2, 4, 8) * 5
    mask = torch.tensor([[1.0, 1, 0, 0], [0, 1, 1, 1]])
    expected = reference_masked_mse(pred, norm_pix_target(target, 1e-3), mask)
    assert masked_mse(pred, target, mask, norm_pix=True, eps=1e-3).item() == pytest.approx(expected, rel=1e-6)
    # the hidden-only layout gives the same number as the full layout with its mask
    hidden = mask.bool()
    short = masked_mse(pred[hidden].view(1, -1, 8), target[hidden].view(1, -1, 8), norm_pix=True)
    assert short.item() == pytest.approx(masked_mse(pred, target, mask, norm_pix=True).item(), rel=1e-6)


def test_masked_mse_sends_no_gradient_to_visible_patches():
    pred = torch.randn(1, 4, 6, requires_grad=True)
    masked_mse(pred, torch.zeros(1, 4, 6), torch.tensor([[1.0, 0, 1, 0]])).backward()
    assert torch.all(pred.grad[0, [1, 3]] == 0) and torch.all(pred.grad[0, [0, 2]] != 0)
    # d/dpred of mean over 2 patches of mean over 6 values of pred^2 = 2 * pred / (2 * 6)
    torch.testing.assert_close(pred.grad[0, [0, 2]], pred.detach()[0, [0, 2]] / 6)


# --------------------------------------------------------------------------------------------------- InfoNCE
def reference_info_nce(q: np.ndarray, k: np.ndarray, negatives: np.ndarray, t: float) -> np.ndarray:
    out = []
    for qi, ki in zip(q, k):
        pos = np.exp(qi @ ki / t)
        out.append(-np.log(pos / (pos + np.exp(negatives @ qi / t).sum())))
    return np.array(out)


@pytest.mark.parametrize("temperature", [0.07, 0.2, 1.0])
def test_info_nce_equals_the_softmax_of_the_positive_written_out(temperature):
    rng = np.random.default_rng(0)
    q, k, neg = rng.normal(size=(5, 4)) / 2, rng.normal(size=(5, 4)) / 2, rng.normal(size=(7, 4)) / 2
    expected = reference_info_nce(q, k, neg, temperature)
    per_query = info_nce(torch.tensor(q), torch.tensor(k), torch.tensor(neg), temperature, reduction="none")
    np.testing.assert_allclose(per_query.double().numpy(), expected, rtol=1e-5)
    assert info_nce(torch.tensor(q), torch.tensor(k), torch.tensor(neg), temperature).item() == pytest.approx(
        expected.mean(), rel=1e-5)


def test_info_nce_is_computed_in_float32_and_pairs_row_i_with_key_i():
    q = torch.eye(3, dtype=torch.float16)
    out = info_nce(q, q, torch.zeros(2, 3, dtype=torch.float16), 1.0, reduction="none")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full((3,), math.log(1 + 2 / math.e)))  # exp(1) against two exp(0)
    shifted = info_nce(q.float(), q.float().roll(1, dims=0), torch.zeros(2, 3), 1.0, reduction="none")
    torch.testing.assert_close(shifted, torch.full((3,), math.log(3.0)))  # row i's key is not key i: q·k = 0


@pytest.mark.parametrize("kwargs, match", [
    ({"temperature": 0.0}, r"temperature must be > 0 \(MoCo v2 uses 0.2\), got 0.0"),
    ({"reduction": "sum"}, r"reduction must be 'mean' or 'none', got 'sum'"),
    ({"negatives": torch.zeros(4, 3)}, r"negatives \(K, D\); got \(2, 2\), \(2, 2\) and \(4, 3\)"),
    ({"keys_pos": torch.zeros(3, 2)}, r"expected query and keys_pos \(N, D\)"),
])
def test_info_nce_refuses_bad_arguments_naming_them(kwargs, match):
    args = {"query": torch.zeros(2, 2), "keys_pos": torch.zeros(2, 2), "negatives": torch.zeros(4, 2),
            "temperature": 0.2, **kwargs}
    with pytest.raises(ValueError, match=match):
        info_nce(**args)


# ------------------------------------------------------------------------------------------------------- DINO
def reference_dino_loss(students: list[torch.Tensor], teachers: list[torch.Tensor], temp: float) -> list[float]:
    """One cross-entropy per (teacher crop i, student crop v != i), batch-averaged, in that order."""
    out = []
    for i, q in enumerate(teachers):
        for v, s in enumerate(students):
            if v == i:
                continue
            p = torch.softmax(s.double() / temp, dim=-1)
            out.append(float(-(q.double() * p.log()).sum(-1).mean()))
    return out


@pytest.mark.parametrize("n_students, n_teachers", [(2, 2), (4, 2), (3, 1)])
def test_dino_loss_equals_the_pairwise_cross_entropy_written_out(n_students, n_teachers):
    torch.manual_seed(4)
    students = [torch.randn(3, 6) for _ in range(n_students)]
    teachers = [torch.softmax(torch.randn(3, 6), -1) for _ in range(n_teachers)]
    expected = reference_dino_loss(students, teachers, 0.1)
    per_pair = dino_loss(students, teachers, 0.1, reduction="none")
    assert len(expected) == n_teachers * n_students - n_teachers
    np.testing.assert_allclose(per_pair.double().numpy(), expected, rtol=1e-5)
    assert dino_loss(students, teachers, 0.1).item() == pytest.approx(np.mean(expected), rel=1e-5)
    # a (V, N, K) tensor of student crops is the same as a list
    torch.testing.assert_close(dino_loss(torch.stack(students), teachers, 0.1), dino_loss(students, teachers, 0.1))


def test_dino_loss_in_float32_from_half_inputs_and_no_gradient_into_a_detached_teacher():
    s = [torch.randn(2, 4, dtype=torch.bfloat16, requires_grad=True) for _ in range(2)]
    q = [torch.softmax(torch.randn(2, 4), -1).to(torch.bfloat16) for _ in range(2)]
    loss = dino_loss(s, q)
    assert loss.dtype == torch.float32
    loss.backward()
    assert all(x.grad is not None and torch.isfinite(x.grad.float()).all() for x in s)


@pytest.mark.parametrize("students, teachers, match", [
    ([torch.zeros(2, 4)], [torch.zeros(2, 4)] * 2, r"need 1 to 1 teacher crops for 1 student crops.*got 2"),
    ([torch.zeros(2, 4)] * 2, [], r"need 1 to 2 teacher crops for 2 student crops.*got 0"),
    ([torch.zeros(2, 4), torch.zeros(2, 5)], [torch.zeros(2, 4)], r"one shape; got \(2, 4\) and \[\(2, 5\)\]"),
    ([torch.zeros(2, 4)], [torch.zeros(2, 4)], r"one crop gives no pair to compare"),
])
def test_dino_loss_refuses_crops_it_cannot_pair(students, teachers, match):
    with pytest.raises(ValueError, match=match):
        dino_loss(students, teachers)
    with pytest.raises(ValueError, match=r"student_temp must be > 0 \(DINO uses 0.1\)"):
        dino_loss([torch.zeros(2, 4)] * 2, [torch.zeros(2, 4)], student_temp=-1)


def test_dinoloss_centres_and_sharpens_the_teacher_then_scores_it():
    crit = DINOLoss(5, student_temp=0.2)
    crit.center.copy_(torch.arange(5.0).view(1, 5) / 10)
    torch.manual_seed(5)
    teacher = [torch.randn(3, 5, requires_grad=True) for _ in range(2)]
    probs = crit.teacher_probs(teacher, teacher_temp=0.04)
    for t, p in zip(teacher, probs):
        assert not p.requires_grad and p.dtype == torch.float32
        torch.testing.assert_close(p, torch.softmax((t.detach() - crit.center) / 0.04, dim=-1))
    students = [torch.randn(3, 5) for _ in range(3)]
    torch.testing.assert_close(crit(students, teacher, teacher_temp=0.04), dino_loss(students, probs, 0.2))
    assert torch.equal(crit.center, torch.arange(5.0).view(1, 5) / 10)  # scoring does not move the centre


def test_dinoloss_centre_is_an_ema_of_the_mean_teacher_logits_over_every_crop_and_sample():
    crit = DINOLoss(3, center_momentum=0.8)
    crops = [torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]), torch.tensor([[0.0, 0.0, 6.0], [4.0, 4.0, 4.0]])]
    crit.update_center(crops)  # mean over 4 rows: (2, 2, 3.5); c = 0.8 * 0 + 0.2 * mean
    torch.testing.assert_close(crit.center, torch.tensor([[0.4, 0.4, 0.7]]))
    crit.update_center([torch.zeros(1, 3)])
    torch.testing.assert_close(crit.center, torch.tensor([[0.32, 0.32, 0.56]]))
    assert "center" in crit.state_dict()  # saved with checkpoints
    still = DINOLoss(3, center_momentum=1.0)
    still.update_center(crops)
    assert torch.all(still.center == 0)


@pytest.mark.parametrize("kwargs, match", [
    ({"out_dim": 0}, r"out_dim must be a positive integer \(the number of prototypes\), got 0"),
    ({"out_dim": True}, r"out_dim must be a positive integer"),
    ({"out_dim": 4, "student_temp": 0}, r"student_temp must be > 0"),
    ({"out_dim": 4, "center_momentum": 1.5}, r"center_momentum must be in \[0, 1\].*got 1.5"),
])
def test_dinoloss_refuses_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DINOLoss(**kwargs)
    with pytest.raises(ValueError, match=r"teacher_temp must be > 0 \(DINO: 0.04 to 0.07\), got 0"):
        DINOLoss(4).teacher_probs([torch.zeros(1, 4)], 0)
