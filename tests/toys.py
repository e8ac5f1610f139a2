"""Small stand-ins shared by the training tests: a toy masked autoencoder method and a two-class image set."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from medmae_nb.data.base import ImageDataset
from medmae_nb.models.base import MethodOutput, SSLMethod, as_batch


class ToyMAE(SSLMethod):
    """A stand-in masked autoencoder: per-patch MLP plus the mean token as context, per-sample random masks from the
    batch seeds, dropout (torch's global generator, so it changes the loss of the masked patches), MSE on masked
    patches; counts its hook calls."""

    def __init__(self, img_size: int = 16, patch: int = 4, dim: int = 16, drop: float = 0.1,
                 mask_ratio: float = 0.75) -> None:
        super().__init__()
        self.patch, self.num_patches, self.mask_ratio = patch, (img_size // patch) ** 2, mask_ratio
        self.config = {"img_size": img_size, "patch": patch, "dim": dim, "drop": drop, "mask_ratio": mask_ratio}
        self.embed = nn.Linear(patch * patch, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(drop)
        self.decoder = nn.Linear(dim, patch * patch)
        self.calls = {"begin": [], "before": [], "after": []}

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "mask_token"}

    def forward(self, x):
        batch = as_batch(x)
        imgs, p = batch.images, self.patch
        n = imgs.shape[0]
        x = imgs.unfold(2, p, p).unfold(3, p, p).reshape(n, -1, p * p)
        noise = batch.rand(self.num_patches)
        keep = int(self.num_patches * (1 - self.mask_ratio))
        mask = torch.ones_like(noise)
        mask.scatter_(1, noise.argsort(1)[:, :keep], 0.0)
        tokens = self.drop(self.embed(x))  # dropout draws from torch's global generator
        tokens = torch.where(mask[..., None].bool(), self.mask_token.expand_as(tokens), tokens) + self.pos_embed
        context = tokens.mean(1, keepdim=True)  # every token sees the others, as attention would
        pred = self.decoder(torch.relu(self.norm(tokens + context)))
        loss = (((pred - x) ** 2).mean(-1) * mask).sum() / mask.sum()
        return MethodOutput(loss, logs={"masked": mask.mean()}, pred=pred, mask=mask)

    def begin_step(self, step, total_steps):
        self.calls["begin"].append(step)
        return {"progress": step / total_steps}

    def before_update(self, step, total_steps):
        self.calls["before"].append(step)

    def after_update(self, step, total_steps):
        self.calls["after"].append(step)


def toy_dataset(n: int = 48, size: int = 16, seed: int = 0, name: str = "toy") -> ImageDataset:
    """Two classes: dark images with a bright top half (0) and bright images with a dark top half (1)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.uniform(0.0, 0.3, (n, 1, size, size)).astype(np.float32)
    images[labels == 1] += 0.6
    images[labels == 0, :, : size // 2] += 0.6
    images[labels == 1, :, : size // 2] -= 0.5
    return ImageDataset(images.clip(0, 1), labels, ("a", "b"), name=name)


def jitter(x: torch.Tensor) -> torch.Tensor:
    return x + 0.01 * torch.randn_like(x)


def make_mae(seed: int = 0, **kw) -> ToyMAE:
    torch.manual_seed(seed)
    return ToyMAE(**kw)
