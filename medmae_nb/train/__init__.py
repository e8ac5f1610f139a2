"""Training: one pre-training loop for every method, the supervised loops, and their shared pieces.

* :mod:`~medmae_nb.train.pretrain` — :func:`pretrain` (any :class:`~medmae_nb.models.base.SSLMethod`; resume, cache,
  mixed precision, ``torchrun`` DDP, ``torch.compile``, gradient clipping);
* :mod:`~medmae_nb.train.supervised` — :func:`finetune`, :func:`fit_supervised`, :func:`linear_probe`;
* :mod:`~medmae_nb.train.optim` — timm's AdamW parameter groups (layer decay) and MAE's warm-up + cosine schedule;
* :mod:`~medmae_nb.train.history` — :class:`History`, what a run records;
* ``python -m medmae_nb train RECIPE`` — the book-scale recipes from the command line (:mod:`medmae_nb.pretrained`);
* :mod:`~medmae_nb.train.distributed` and :mod:`~medmae_nb.train.checkpoint` — process groups and checked checkpoints.
"""

from .checkpoint import CheckpointError
from .history import History
from .optim import build_optimizer, cosine_schedule, set_lr
from .pretrain import SeededViews, method_config, pretrain, pretrain_config
from .supervised import LinearProbe, finetune, fit_supervised, linear_probe

__all__ = [
    "CheckpointError",
    "History",
    "LinearProbe",
    "SeededViews",
    "build_optimizer",
    "cosine_schedule",
    "finetune",
    "fit_supervised",
    "linear_probe",
    "method_config",
    "pretrain",
    "pretrain_config",
    "set_lr",
]
