"""Where does the model look? Explanation maps, scored against lesion masks with controls.

* :mod:`~medmae_nb.explain.maps` — :func:`attention_maps` (last-block CLS attention per head),
  :func:`attention_rollout`, :func:`integrated_gradients` and :func:`grad_cam` (captum, with a token-grid wrapper for
  ViTs), :func:`upsample_map`.
* :mod:`~medmae_nb.explain.scores` — :func:`pointing_game`, :func:`mass_in_lesion`, :func:`mass_ratio`, summarised
  with bootstrap intervals by :func:`score_maps` (constant maps counted, never dropped) and compared with chance by
  :func:`random_map_baseline`; :func:`map_similarity` (rank correlation) for the model-randomisation check.
* controls: :func:`intensity_map` (plain darkness), :func:`randomize_weights` (Adebayo et al. 2018), and the
  :func:`blurred_baseline` that :func:`integrated_gradients` uses by default (a black baseline gives dark lesions
  no attribution).

A caveat the book makes: with global average pooling (MAE's fine-tuning default) the CLS token is never trained by
the classification loss, so its attention says little about the decision; fine-tune with ``global_pool='token'``
or prefer rollout / Grad-CAM for such models.

Example:
    >>> import timm, torch
    >>> from medmae_nb import explain
    >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, num_classes=2)
    >>> maps = explain.upsample_map(explain.attention_rollout(vit, torch.rand(2, 3, 32, 32)), 32)
    >>> lesion = torch.zeros(2, 32, 32, dtype=torch.bool); lesion[:, 8:24, 8:24] = True
    >>> sorted(explain.score_maps(maps, lesion, n_boot=50))
    ['constant_maps', 'mass_in_lesion', 'mass_ratio', 'pointing_game']
"""

from .maps import (
    attention_maps,
    attention_matrices,
    attention_rollout,
    blurred_baseline,
    grad_cam,
    integrated_gradients,
    intensity_map,
    randomize_weights,
    upsample_map,
)
from .scores import (
    constant_maps,
    map_similarity,
    mass_in_lesion,
    mass_ratio,
    pointing_game,
    random_map_baseline,
    score_maps,
)

__all__ = [
    "attention_maps",
    "attention_matrices",
    "attention_rollout",
    "integrated_gradients",
    "grad_cam",
    "upsample_map",
    "blurred_baseline",
    "intensity_map",
    "randomize_weights",
    "pointing_game",
    "mass_in_lesion",
    "mass_ratio",
    "random_map_baseline",
    "score_maps",
    "constant_maps",
    "map_similarity",
]
