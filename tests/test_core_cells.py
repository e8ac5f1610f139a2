"""Each method chapter writes its method's core step out on the page (a code cell tagged ``core``); these tests run
that cell's code, as stored in the notebook, against the package on random inputs, so the page and the library
cannot drift apart (issue "Chapters that teach", item 1)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from medmae_nb.losses import DINOLoss, info_nce
from medmae_nb.models.contrastive import MoCo
from tools.book import ROOT


def _core(notebook: str) -> dict:
    """The names the notebook's ``core`` cell defines, executed with only torch, F and math in scope."""
    cells = json.loads((ROOT / "nbs" / notebook).read_text())["cells"]
    core = [c for c in cells if "core" in c.get("metadata", {}).get("tags", [])]
    assert len(core) == 1, f"{notebook}: one cell tagged 'core'"
    source = "".join(core[0]["source"])
    assert len(source.splitlines()) <= 30, "the core fits on a page (at most 30 lines)"
    namespace = {"torch": torch, "F": F, "math": math}
    exec(compile(source, f"{notebook}:core", "exec"), namespace)
    return namespace


def _unit(*shape: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.mark.parametrize("tau", [0.07, 0.2, 1.0])
def test_chapter_04_info_nce_matches_the_package(tau: float):
    core = _core("04-spark-vs-contrastive.ipynb")
    q, k, queue = _unit(8, 16, seed=0), _unit(8, 16, seed=1), _unit(32, 16, seed=2)
    torch.testing.assert_close(core["info_nce_with_queue"](q, k, queue, tau), info_nce(q, k, queue, tau))


def test_chapter_04_queue_update_matches_moco():
    """The written-out queue is first in, first out, oldest first; MoCo's ring buffer holds the same keys, row for
    row, read from its pointer (the oldest row) forwards."""
    core = _core("04-spark-vs-contrastive.ipynb")
    moco = MoCo("resnet18_micro", proj_hidden_dim=32, proj_dim=16, queue_size=12)
    size = len(moco.queue)

    def oldest_first() -> torch.Tensor:  # the ring's rows from the next to be overwritten onwards
        ptr = int(moco.queue_ptr)
        return moco.queue[[(ptr + i) % size for i in range(size)]]

    queue = oldest_first().clone()
    for step in range(5):  # wraps around the ring twice
        keys = _unit(5, 16, seed=10 + step)
        queue = core["enqueue"](queue, keys)
        moco.enqueue(keys)
        torch.testing.assert_close(queue, oldest_first())


@pytest.mark.parametrize("tau_t", [0.02, 0.04, 1.0])
def test_chapter_05_dino_loss_matches_the_package(tau_t: float):
    core = _core("05-dino-classical.ipynb")
    gen = torch.Generator().manual_seed(3)
    teacher = [torch.randn(4, 10, generator=gen) for _ in range(2)]
    student = [torch.randn(4, 10, generator=gen) for _ in range(6)]
    crit = DINOLoss(10, student_temp=0.1, center_momentum=0.9)
    crit.update_center([torch.randn(4, 10, generator=gen)])  # a non-zero centre
    center = crit.center.clone()
    torch.testing.assert_close(core["dino_loss_written_out"](student, teacher, center, 0.1, tau_t),
                               crit(student, teacher, tau_t))
    crit.update_center(teacher)
    torch.testing.assert_close(core["new_center"](center, teacher, 0.9), crit.center)


@pytest.mark.parametrize("direction", ["high", "low"])
@pytest.mark.parametrize("tau", [0.1, 0.5, 2.0, float("inf")])
def test_chapter_03_entropy_sampler_matches_the_package(tau: float, direction: str):
    from medmae_nb.masking import entropy_masking

    core = _core("03-entropy-masking-convnext.ipynb")
    gen = torch.Generator().manual_seed(5)
    images = torch.rand(6, 1, 64, 64, generator=gen) ** 3  # skewed intensities: unequal cell entropies
    noise = torch.rand(6, 16, generator=gen)
    ours = core["entropy_mask"](images, 16, 0.6, tau, noise, 16, direction)
    package = entropy_masking(images, 16, 0.6, tau, direction, 16, noise=noise).mask
    assert torch.equal(ours, package.float())
