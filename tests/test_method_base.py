"""Tests for medmae_nb.models.base: the Batch a method is called on, its per-sample noise, and MethodOutput."""

from __future__ import annotations

import pytest
import torch

from medmae_nb.models.base import (
    _MASK64,
    Batch,
    MethodOutput,
    as_batch,
    hash_uniform,
    sample_seed,
)


def _reference(seed: int, stream: int, j: int) -> float:
    """splitmix64 of (seed, stream, position) in plain Python integers, modulo 2**64."""
    x = (seed * 0xD1B54A32D192ED03 + j + ((stream * 0x9E3779B97F4A7C15) & _MASK64)) & _MASK64
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    x ^= x >> 31
    return (x >> 40) / (1 << 24)


def test_hash_uniform_equals_unsigned_64_bit_arithmetic():
    # int64 tensors wrap like unsigned integers; logical shifts are emulated: compare with exact integers
    seeds = torch.tensor([0, 1, 2**62 + 12345, (1 << 63) - 1])
    got = hash_uniform(seeds, (2, 3), stream=5)
    want = torch.tensor([[_reference(int(s), 5, j) for j in range(6)] for s in seeds]).view(4, 2, 3)
    assert torch.equal(got, want.float())


def test_hash_uniform_is_uniform_and_rows_are_independent_of_the_batch():
    u = hash_uniform(torch.arange(500), (2000,))
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 2e-3 and abs(u.std() - 12**-0.5) < 2e-3
    hist = torch.histc(u, bins=20, min=0, max=1) / u.numel()
    assert torch.all((hist - 0.05).abs() < 2e-3)
    corr = torch.corrcoef(torch.stack([u[:, :-1].reshape(-1), u[:, 1:].reshape(-1)]))[0, 1]
    assert abs(corr) < 0.01  # neighbouring positions are not correlated
    assert torch.equal(u[7], hash_uniform(torch.tensor([7]), (2000,))[0])
    assert not torch.equal(u[7], hash_uniform(torch.tensor([7]), (2000,), stream=1)[0])


def test_batch_rand_shapes_streams_and_devices():
    b = Batch([torch.zeros(3, 1, 4, 4)], torch.tensor([5, 6, 7]))
    r = b.rand(2, 4)
    assert r.shape == (3, 2, 4) and r.dtype == torch.float32 and torch.equal(r, b.rand(2, 4))
    assert not torch.equal(r, b.rand(2, 4, stream=1))
    assert len(b) == 3 and b.images is b.views[0] and b.to("cpu").seeds is b.seeds
    with pytest.raises(ValueError, match="share the batch size"):
        Batch([torch.zeros(3, 1, 4, 4), torch.zeros(2, 1, 4, 4)], torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="at least one view"):
        Batch([], torch.tensor([]))


def test_as_batch_draws_reproducible_seeds_from_torch():
    x = torch.zeros(4, 1, 8, 8)
    torch.manual_seed(0)
    a = as_batch(x)
    torch.manual_seed(0)
    assert torch.equal(a.seeds, as_batch(x).seeds) and len(set(a.seeds.tolist())) == 4
    assert as_batch(a) is a and len(as_batch([x, x]).views) == 2


def test_sample_seed_mixes_every_part():
    seeds = {sample_seed(s, e, i) for s in range(3) for e in range(3) for i in range(30)}
    assert len(seeds) == 270 and all(0 <= s < 2**63 for s in seeds)
    assert sample_seed(1, 2) != sample_seed(2, 1)


def test_method_output_keeps_extras_as_attributes():
    out = MethodOutput(torch.tensor(2.0, requires_grad=True), logs={"a": 1.0}, pred=torch.ones(3))
    assert out.logs == {"a": 1.0} and out.pred.shape == (3,) and "loss=2" in repr(out)
