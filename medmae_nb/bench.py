"""Small speed benchmarks, one subcommand each: ``python -m medmae_nb.bench data``.

To add a benchmark, write ``def bench_NAME(args: argparse.Namespace) -> None`` and register it in ``COMMANDS``
with a function that adds its options (``_add_NAME_args``); ``main`` builds the subcommands from that table.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Callable
from typing import Any

from .cli import add_compare_args


class _Lazy:
    """A module imported on first use: ``--help`` of every benchmark answers without importing torch."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        module = importlib.import_module(self._name)
        globals()[self._name] = module  # later lookups find the module itself
        return getattr(module, attr)


torch = _Lazy("torch")


def _print_table(header: tuple[str, ...], rows: list[tuple]) -> None:
    cells = [tuple(str(c) for c in header)] + [tuple(str(c) for c in row) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for k, row in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
        if k == 0:
            print("  ".join("-" * w for w in widths))


def bench_data(args: argparse.Namespace) -> None:
    """Times ``make_phantom`` on one thread for each image size; prints size, n, seconds and images per second.

    Each size is run once to warm caches (FFT plans, interpolation tables), then timed ``args.repeats`` times; the
    best wall-clock time is reported, as the least disturbed by other work on the machine.
    """
    from .data.synthetic import make_phantom

    torch.set_num_threads(1)  # the generator is numpy-only; this keeps any torch work single-threaded too
    rows = []
    for size, n in zip(args.sizes, args.n):
        make_phantom(min(n, 64), image_size=size, seed=args.seed)
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            make_phantom(n, image_size=size, seed=args.seed)
            best = min(best, time.perf_counter() - start)
        rows.append((size, n, f"{best:.3f}", f"{n / best:.0f}"))
    print(f"make_phantom, 1 thread, best of {args.repeats}")
    _print_table(("image size", "n", "seconds", "img/s"), rows)


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128], help="image sizes (default 32 64 128)")
    p.add_argument("--n", type=int, nargs="+", default=[4000, 2000, 500], help="images per size, one per size")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per size; the best is reported")
    p.add_argument("--seed", type=int, default=0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource
    import sys

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def _time_interleaved(steps: dict[str, Callable[[], None]], warmup: int, repeats: int,
                      device: torch.device) -> dict[str, float]:
    """Best (minimum) seconds per call of each step, after ``warmup`` untimed calls of each.

    The steps are run round-robin, so a burst of other work on a shared machine hits all of them alike, and the
    minimum is reported as the run least disturbed by it (as ``timeit`` advises).
    """
    for step in steps.values():
        for _ in range(warmup):
            step()
    _sync(device)
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            _sync(device)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


_VISIBLE, _ALL = "encoder fwd+bwd, visible tokens", "encoder fwd+bwd, all tokens"
_OURS, _LIGHTLY, _LIGHTLY_FUSED = "medmae_nb MAE step", "lightly MAE step", "lightly MAE step, fused AdamW"


def _autocast(args: argparse.Namespace, device: torch.device):
    """The loop's autocast for ``--precision`` (``auto``: bf16/fp16 on GPUs, none on the CPU), for both libraries."""
    from .train.pretrain import _resolve_precision

    dtype = _resolve_precision(args.precision, device)
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def _our_step(model: torch.nn.Module, imgs: torch.Tensor, args: argparse.Namespace,
              device: torch.device) -> Callable[[], None]:
    """One step as ``medmae_nb.train.pretrain`` takes it: a Batch with per-sample seeds, the method's loss under the
    loop's autocast, backward, and the loop's optimizer (timm's AdamW groups, fused where the device has it). fp16
    loss scaling is left out of both libraries' steps."""
    from .models.base import Batch
    from .train.optim import build_optimizer

    opt = build_optimizer(model, lr=1.5e-4, weight_decay=0.05, betas=(0.9, 0.95))
    seeds = torch.arange(imgs.shape[0])
    forward = torch.compile(model) if args.compile else model  # as pretrain(compile=True) does

    def step() -> None:
        with _autocast(args, device):
            loss = forward(Batch([imgs], seeds)).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _our_views_step(model: torch.nn.Module, views: list[torch.Tensor], args: argparse.Namespace,
                    device: torch.device) -> Callable[[], None]:
    """:func:`_our_step` for a method that takes several views (``Batch(views, seeds)``), with the step hooks called
    where the loop calls them (``begin_step`` before the forward, ``before_update`` between backward and AdamW,
    ``after_update`` after AdamW: e.g. an EMA update)."""
    from .models.base import Batch
    from .train.optim import build_optimizer

    opt = build_optimizer(model, lr=1.5e-4, weight_decay=0.05, betas=(0.9, 0.95))
    seeds = torch.arange(views[0].shape[0])
    forward = torch.compile(model) if args.compile else model
    hooks = model if hasattr(model, "after_update") else None

    def step() -> None:
        if hooks is not None:
            hooks.begin_step(0, 1)
        with _autocast(args, device):
            loss = forward(Batch(list(views), seeds)).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if hooks is not None:
            hooks.before_update(0, 1)
        opt.step()
        if hooks is not None:
            hooks.after_update(0, 1)

    return step


def _lightly_step(args: argparse.Namespace, patch_size: int, imgs: torch.Tensor, device: torch.device,
                  fused: bool) -> Callable[[], None]:
    """lightly's MAE of the same configuration, written as lightly's MAE example does it (timm ViT wrapped in
    ``MaskedVisionTransformerTIMM``, ``MAEDecoderTIMM``, ``random_token_mask``), with the same norm-pix target."""
    import warnings
    from functools import partial

    from lightly.models import utils
    from lightly.models.modules import MaskedVisionTransformerTIMM
    from lightly.models.modules.masked_autoencoder_timm import MAEDecoderTIMM
    from timm.models.vision_transformer import VisionTransformer

    from .models.mae import mae_vit_micro, mae_vit_tiny

    factory = {"tiny": mae_vit_tiny, "micro": mae_vit_micro}[args.model]
    cfg = factory(img_size=args.img_size, patch_size=patch_size, in_chans=args.in_chans).config
    vit = VisionTransformer(img_size=args.img_size, patch_size=patch_size, in_chans=args.in_chans,
                            embed_dim=cfg["embed_dim"], depth=cfg["depth"], num_heads=cfg["num_heads"],
                            mlp_ratio=cfg["mlp_ratio"], qkv_bias=True, num_classes=0,
                            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6))
    backbone = MaskedVisionTransformerTIMM(vit=vit)
    num_patches = (args.img_size // patch_size) ** 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MAEDecoderTIMM is deprecated in favour of a decoder without embed/head
        decoder = MAEDecoderTIMM(num_patches=num_patches, patch_size=patch_size, in_chans=args.in_chans,
                                 embed_dim=cfg["embed_dim"], decoder_embed_dim=cfg["decoder_embed_dim"],
                                 decoder_depth=cfg["decoder_depth"], decoder_num_heads=cfg["decoder_num_heads"],
                                 mlp_ratio=cfg["mlp_ratio"])
    model = torch.nn.ModuleDict({"backbone": backbone, "decoder": decoder}).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05,
                            **({"fused": True} if fused else {}))
    seq = backbone.sequence_length

    def forward(idx_keep: torch.Tensor, idx_mask: torch.Tensor) -> torch.Tensor:
        n = imgs.shape[0]
        x = decoder.embed(backbone.encode(images=imgs, idx_keep=idx_keep))
        x_masked = utils.set_at_index(utils.repeat_token(decoder.mask_token, (n, seq)), idx_keep, x.type_as(x))
        pred = decoder.predict(utils.get_at_index(decoder.decode(x_masked), idx_mask))
        target = utils.get_at_index(utils.patchify(imgs, patch_size), idx_mask - 1)
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
        return torch.nn.functional.mse_loss(pred.float(), target.float())

    if args.compile:
        forward = torch.compile(forward)

    def step() -> None:
        idx_keep, idx_mask = utils.random_token_mask(size=(imgs.shape[0], seq), mask_ratio=args.mask_ratio,
                                                     device=device)
        with _autocast(args, device):
            loss = forward(idx_keep, idx_mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _encoder_step(model: torch.nn.Module, imgs: torch.Tensor, gen: torch.Generator, ratio: float,
                  visible: bool) -> Callable[[], None]:
    def step() -> None:
        info = model.random_mask(imgs.shape[0], ratio, gen) if visible else None
        model.forward_encoder(imgs, info).pow(2).mean().backward()
        model.zero_grad(set_to_none=True)

    return step


# (category, test on an aten op name): the first match wins; see _op_breakdowns
_OP_CATEGORIES: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("matrix products (mm, addmm, bmm)", lambda n: n in {"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"}),
    ("attention kernels (scaled_dot_product_*)", lambda n: "scaled_dot_product" in n),
    ("GELU forward + backward", lambda n: "gelu" in n),
    ("LayerNorm forward + backward", lambda n: "layer_norm" in n),
    ("convolutions (a conv patch embedding)", lambda n: "conv" in n),
    ("copies, gathers, scatters, cat", lambda n: any(k in n for k in ("copy_", "gather", "scatter", "index", "cat",
                                                                        "clone", "contiguous"))),
)
_OPTIMIZER, _OTHER = "optimizer (AdamW step, zero_grad)", "everything else"


def _op_breakdowns(steps: dict[str, Callable[[], None]], n_steps: int,
                   device: torch.device) -> dict[str, tuple[dict[str, float], dict[str, tuple[int, float]]]]:
    """Where each step's time goes: ``torch.profiler`` over ``n_steps`` rounds of every step, round-robin (so a burst
    of other work hits them alike), each op's *self* time (its own kernel, not its children) summed per category of
    :data:`_OP_CATEGORIES`, in ms per step. An op run inside the optimizer's ``step``/``zero_grad`` counts as
    optimizer time whatever it is. Also returns, per matrix-product shape, (calls per step, ms per call), so an
    unusually slow product shows up. CPU time on the CPU, device time on a GPU. Profiling slows a step by a few
    per cent; compare shares and libraries, not these totals with the timed rows.
    """
    from torch.profiler import ProfilerActivity, profile, record_function

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    scopes = {f"bench::{k}": name for k, name in enumerate(steps)}
    with profile(activities=activities, record_shapes=True) as prof:
        for _ in range(n_steps):
            for scope, name in scopes.items():
                with record_function(scope):
                    steps[name]()
                _sync(device)
    per_cat: dict[str, dict[str, float]] = {name: {} for name in steps}
    gemm: dict[str, dict[str, tuple[int, float]]] = {name: {} for name in steps}
    for ev in prof.events():
        if not ev.name.startswith("aten::"):
            continue  # scopes, autograd wrappers, GPU kernels: an aten op's self device time already holds its kernels
        t = (ev.self_device_time_total if cuda else ev.self_cpu_time_total) / 1e3 / n_steps  # ms per step
        owner, in_opt, parent = None, False, ev
        while parent is not None:
            in_opt = in_opt or parent.name.startswith("Optimizer.")
            owner = scopes.get(parent.name, owner)
            parent = parent.cpu_parent
        if owner is None or t <= 0:
            continue
        cat = _OPTIMIZER if in_opt else next((c for c, test in _OP_CATEGORIES if test(ev.name)), _OTHER)
        per_cat[owner][cat] = per_cat[owner].get(cat, 0.0) + t
        if cat.startswith("matrix") and ev.input_shapes:
            key = " x ".join(str(list(s)) for s in ev.input_shapes if len(s) == 2)
            calls, total = gemm[owner].get(key, (0, 0.0))
            gemm[owner][key] = (calls + 1, total + t * n_steps)
    return {name: (per_cat[name], {k: (round(c / n_steps), tot / c) for k, (c, tot) in gemm[name].items()})
            for name in steps}


def _print_op_breakdowns(steps: dict[str, Callable[[], None]], n_steps: int, device: torch.device,
                         patch: int, top: int = 6) -> None:
    """The category table of :func:`_op_breakdowns` for every full MAE step side by side, then the ``top`` most
    expensive matrix-product shapes with each library's ms per call."""
    results = _op_breakdowns(steps, n_steps, device)
    cats = [c for c, _ in _OP_CATEGORIES] + [_OPTIMIZER, _OTHER]
    rows = []
    for cat in cats + ["total"]:
        row = [cat]
        for per_cat, _ in results.values():
            total = sum(per_cat.values())
            ms = total if cat == "total" else per_cat.get(cat, 0.0)
            row.append(f"{ms:.1f} ({100 * ms / total:.0f} %)")
        if cat == "total" or any(results[n][0].get(cat, 0.0) > 0 for n in results):
            rows.append(tuple(row))
    print(f"\npatch {patch}: where a step's time goes (torch.profiler, {n_steps} steps, self time, ms per step)")
    _print_table(("category", *results), rows)
    first = next(iter(results.values()))[1]
    ranked = sorted(first, key=lambda k: -first[k][0] * first[k][1])[:top]
    rows = [(k, first[k][0], *(f"{res[1][k][1]:.2f}" if k in res[1] else "-" for res in results.values()))
            for k in ranked]
    print(f"the {len(rows)} costliest matrix-product shapes of the first row (ms per call)")
    _print_table(("operands", "calls/step", *results), rows)


def bench_mae(args: argparse.Namespace) -> None:
    """MAE pre-training throughput per patch size; what encoding only the visible tokens saves; and, with
    ``--against lightly``, the same step in lightly's MAE, measured side by side in one run.

    Rows per patch size: one full MAE pre-training step as the book's loop takes it (masked forward through encoder
    and decoder, backward, AdamW); the encoder alone on the visible tokens and on all tokens (forward + backward of a
    dummy loss); with ``--against lightly``, lightly's MAE step with the AdamW of lightly's examples and again with the
    fused AdamW our loop uses. All steps are timed round-robin and the fastest of ``--steps`` is reported, so a burst
    of other work on a shared machine hits every row alike. Memory, one value per patch size, is
    ``torch.cuda.max_memory_allocated`` on a GPU; on the CPU it is the process's max RSS so far (a rough upper bound).
    """
    from .models.mae import mae_vit_micro, mae_vit_tiny
    from .profiles import get_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else get_device()
    factory = {"tiny": mae_vit_tiny, "micro": mae_vit_micro}[args.model]
    gen = torch.Generator(device="cpu").manual_seed(0)
    imgs = torch.rand(args.batch_size, args.in_chans, args.img_size, args.img_size, generator=gen).to(device)
    rows, ratios, breakdowns = [], [], []
    for p in args.patch_sizes:
        torch.manual_seed(0)
        model = factory(img_size=args.img_size, patch_size=p, in_chans=args.in_chans, norm_pix_loss=True,
                        mask_ratio=args.mask_ratio).to(device)
        steps = {_OURS: _our_step(model, imgs, args, device)}
        if args.against == "lightly":
            steps[_LIGHTLY] = _lightly_step(args, p, imgs, device, fused=False)
            steps[_LIGHTLY_FUSED] = _lightly_step(args, p, imgs, device, fused=True)
        steps[_VISIBLE] = _encoder_step(model, imgs, gen, args.mask_ratio, True)
        steps[_ALL] = _encoder_step(model, imgs, gen, args.mask_ratio, False)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = _time_interleaved(steps, args.warmup, args.steps, device)
        mem = _peak_memory_mb(device)
        n_tok, n_vis = model.num_patches, model.random_mask(1).len_keep
        for k, (name, sec) in enumerate(seconds.items()):
            tok = f"{n_tok}" if name == _ALL else f"{n_vis}" if name == _VISIBLE else f"{n_vis}/{n_tok}"
            rows.append((p, tok, name, f"{args.batch_size / sec:.0f}", f"{1000 * sec:.0f}",
                         f"{mem:.0f}" if k == 0 else ""))
        ratio = [f"{seconds[_ALL] / seconds[_VISIBLE]:.2f}x"]
        if args.against == "lightly":
            ratio += [f"{seconds[_LIGHTLY] / seconds[_OURS]:.2f}x", f"{seconds[_LIGHTLY_FUSED] / seconds[_OURS]:.2f}x"]
        ratios.append((p, *ratio))
        if args.ops:
            breakdowns.append((p, {name: steps[name] for name in (_OURS, _LIGHTLY, _LIGHTLY_FUSED) if name in steps}))
    print(f"MAE pre-training, ViT-{args.model}, {args.img_size} px, {args.in_chans} ch, batch {args.batch_size}, "
          f"mask {args.mask_ratio}, device {device}, precision {args.precision}, {torch.get_num_threads()} threads, "
          f"{'torch.compile on both libraries, ' if args.compile else ''}"
          f"best of {args.steps} interleaved steps after {args.warmup} warm-up")
    mem = "peak MiB" if device.type == "cuda" else "max RSS MiB"
    _print_table(("patch", "enc tokens", "what", "img/s", "ms/step", mem), rows)
    print()
    header = ["patch", "encoder: visible vs all tokens"]
    if args.against == "lightly":
        header += ["medmae_nb vs lightly", "medmae_nb vs lightly + fused AdamW"]
    _print_table(tuple(header), ratios)
    for p, full_steps in breakdowns:
        _print_op_breakdowns(full_steps, args.ops, device, p)


def _add_mae_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", choices=["tiny", "micro"], default="tiny", help="ViT size (default tiny: 192-d, 12)")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--in-chans", type=int, default=1)
    p.add_argument("--patch-sizes", type=int, nargs="+", default=[16, 8, 4])
    p.add_argument("--mask-ratio", type=float, default=0.75)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--steps", type=int, default=10, help="timed steps of each kind; the fastest is reported")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; use 1 on a machine shared with other jobs)")
    p.add_argument("--device", default=None, help="cpu / cuda / mps (default: best available)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="autocast of the pre-training loop, applied to every library (auto: none on the CPU)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the MAE forward of every library (the loop's compile=True); the encoder-only "
                        "rows stay eager")
    p.add_argument("--against", choices=["lightly"], default=None,
                   help="also time lightly's MAE of the same configuration (needs `pip install lightly`)")
    p.add_argument("--ops", type=int, default=0, metavar="N",
                   help="also profile N more steps of each full MAE step and print where the time goes (matrix "
                        "products, attention, GELU, LayerNorm, copies, optimizer) and the costliest product shapes")


def _reset_peak_memory(device: torch.device) -> bool:
    """Starts a new peak-memory window, so each row reports its own peak: CUDA's peak counter, or on Linux the
    process's peak RSS (written to ``/proc/self/clear_refs``, after glibc's ``malloc_trim`` hands freed heap back).
    Returns False where neither works; the CPU value is then the max RSS since the process started."""
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # 5 = reset the peak RSS (Linux >= 4.0)
    except OSError:
        return False
    return True


def _scale_set(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a scale set is comma-separated ints such as 1,2,4, got {text!r}") from None


def bench_miram(args: argparse.Namespace) -> None:
    """What MIRAM's extra decoders cost: one pre-training step (forward, backward, AdamW, as ``_our_step``) of MAE
    and of MIRAM per scale set and x``s`` attention, timed round-robin (the fastest of ``--steps``), with the peak
    memory of one step of each row, measured alone beforehand (``torch.cuda.max_memory_allocated`` on a GPU; on the
    CPU the process's peak RSS, reset before each row where Linux allows, else the max RSS so far).

    The MAE row is the same encoder and x1 decoder at ``--img-size``; in ``--target native`` mode MIRAM's encoder
    sees ``img_size / max(scales)``, so its rows also save encoder work.
    """
    from .models.mae import mae_vit_micro, mae_vit_tiny
    from .models.miram import miram_vit_micro, miram_vit_tiny
    from .profiles import get_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else get_device()
    mae_factory, miram_factory = {"micro": (mae_vit_micro, miram_vit_micro), "tiny": (mae_vit_tiny, miram_vit_tiny)}[
        args.model]
    imgs = torch.rand(args.batch_size, args.in_chans, args.img_size, args.img_size,
                      generator=torch.Generator().manual_seed(0)).to(device)
    common = dict(img_size=args.img_size, patch_size=args.patch_size, in_chans=args.in_chans, norm_pix_loss=True,
                  mask_ratio=args.mask_ratio)
    variants: dict[str, Callable[[], torch.nn.Module]] = {"MAE": lambda: mae_factory(**common)}
    for scales in args.scale_sets:
        for attention in args.attention:
            name = "MIRAM " + "+".join(f"x{s}" for s in scales) + (", local" if attention == "local" else "")
            variants[name] = lambda scales=scales, attention=attention: miram_factory(
                **common, scales=scales, target=args.target, scale_attention=attention,
                local_window=args.local_window, scale_decoder_depth=args.scale_decoder_depth)
    # memory first, one row at a time, each model freed before the next, so no row carries another's weights, grads
    # and optimiser state; then every row again, timed round-robin
    info, reset = {}, True
    for name, build in variants.items():
        torch.manual_seed(0)
        model = build().to(device)
        step = _our_step(model, imgs, args, device)
        reset = _reset_peak_memory(device) and reset
        step()
        _sync(device)
        grids = [model.num_patches * s * s for s in getattr(model, "scales", (1,))]
        info[name] = (model.num_patches, "+".join(map(str, grids)), _peak_memory_mb(device))
        del model, step
    steps = {}
    for name, build in variants.items():
        torch.manual_seed(0)
        steps[name] = _our_step(build().to(device), imgs, args, device)
    seconds = _time_interleaved(steps, args.warmup, args.steps, device)
    base = seconds["MAE"]
    rows = [(name, info[name][0], info[name][1], f"{args.batch_size / sec:.0f}", f"{1000 * sec:.0f}",
             f"{sec / base:.2f}x", f"{info[name][2]:.0f}") for name, sec in seconds.items()]
    print(f"MIRAM vs MAE pre-training step (fwd+bwd+AdamW), ViT-{args.model}, {args.img_size} px, patch "
          f"{args.patch_size}, {args.in_chans} ch, batch {args.batch_size}, mask {args.mask_ratio}, target "
          f"{args.target}, local window {args.local_window} x1 tokens, device {device}, precision {args.precision}, "
          f"{torch.get_num_threads()} threads, best of {args.steps} interleaved steps")
    mem = "peak MiB" if device.type == "cuda" else "peak RSS MiB" if reset else "max RSS so far MiB"
    _print_table(("method", "enc tokens", "dec tokens", "img/s", "ms/step", "vs MAE", mem), rows)


def _add_miram_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", choices=["tiny", "micro"], default="micro", help="ViT size (default micro: 128-d, 6)")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--patch-size", type=int, default=8)
    p.add_argument("--in-chans", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--mask-ratio", type=float, default=0.75)
    p.add_argument("--scale-sets", type=_scale_set, nargs="+", default=[(1, 2), (1, 2, 4)],
                   help="MIRAM scale sets, one row each (default 1,2 1,2,4)")
    p.add_argument("--attention", choices=["full", "local"], nargs="+", default=["full", "local"],
                   help="x s decoder attention, one row each per scale set (default full local)")
    p.add_argument("--local-window", type=int, default=4, help="window side in x1 tokens for local attention")
    p.add_argument("--scale-decoder-depth", type=int, default=None, help="x s decoder blocks (default: as x1)")
    p.add_argument("--target", choices=["upsampled", "native"], default="upsampled")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps of each row before timing")
    p.add_argument("--steps", type=int, default=5, help="timed steps of each row; the fastest is reported")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; use 1 on a machine shared with other jobs)")
    p.add_argument("--device", default=None, help="cpu / cuda / mps (default: best available)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="autocast of the pre-training loop (auto: none on the CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile each method's forward, as the loop can")


def _Supervised(encoder: str, in_chans: int, img_size: int | None = None) -> Any:  # noqa: N802 - used as a class
    """A plain classifier step on the same encoder (what one fine-tuning step costs), shaped like a method."""
    from .models.backbones import create_encoder
    from .models.base import MethodOutput

    class Supervised(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # CNNs ignore img_size
            self.net = create_encoder(encoder, in_chans=in_chans, num_classes=3, img_size=img_size)

        def forward(self, batch):
            labels = torch.arange(len(batch)) % 3
            return MethodOutput(torch.nn.functional.cross_entropy(self.net(batch.images), labels.to(batch.device)))

    return Supervised()


def _compare_steps(variants: dict[str, Callable[[], torch.nn.Module]],
                   make_step: Callable[[str, torch.nn.Module], Callable[[], None]], args: argparse.Namespace,
                   device: torch.device, base: str) -> None:
    """Peak memory of one step of each variant, measured alone (each model freed before the next), then every
    variant timed round-robin (the fastest of ``--steps``); prints the table, ratios against the ``base`` row."""
    info, reset = {}, True
    for name, build in variants.items():
        torch.manual_seed(0)
        model = build().to(device)
        step = make_step(name, model)
        reset = _reset_peak_memory(device) and reset
        step()
        _sync(device)
        info[name] = (sum(p.numel() for p in model.parameters()) / 1e6, _peak_memory_mb(device))
        del model, step
    steps = {}
    for name, build in variants.items():
        torch.manual_seed(0)
        steps[name] = make_step(name, build().to(device))
    seconds = _time_interleaved(steps, args.warmup, args.steps, device)
    rows = [(name, f"{info[name][0]:.2f}", f"{args.batch_size / sec:.0f}", f"{1000 * sec:.0f}",
             f"{sec / seconds[base]:.2f}x", f"{info[name][1]:.0f}") for name, sec in seconds.items()]
    mem = "peak MiB" if device.type == "cuda" else "peak RSS MiB" if reset else "max RSS so far MiB"
    _print_table(("step", "params M", "img/s", "ms/step", "vs supervised", mem), rows)


def bench_convnext(args: argparse.Namespace) -> None:
    """Masked ConvNeXt pre-training step (random and entropy-guided masks) against a plain supervised step on the same
    encoder: forward, backward, AdamW, timed round-robin (fastest of ``--steps``), peak memory per row measured alone
    (as ``bench miram``). The dense-masking hooks and the decoder are the masked rows' extra cost; entropy masking
    adds the per-patch histograms."""
    from .models.masked_convnext import MaskedConvNeXt
    from .profiles import get_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else get_device()
    imgs = torch.rand(args.batch_size, args.in_chans, args.img_size, args.img_size,
                      generator=torch.Generator().manual_seed(0)).to(device)
    common = dict(img_size=args.img_size, in_chans=args.in_chans, mask_patch=args.mask_patch,
                  mask_ratio=args.mask_ratio)
    variants: dict[str, Callable[[], torch.nn.Module]] = {
        "supervised step (no mask)": lambda: _Supervised(args.encoder, args.in_chans),
        "masked, random": lambda: MaskedConvNeXt(args.encoder, masking="random", **common),
        "masked, entropy": lambda: MaskedConvNeXt(args.encoder, masking="entropy", **common),
    }
    grid = args.img_size // args.mask_patch
    print(f"masked ConvNeXt pre-training step (fwd+bwd+AdamW), {args.encoder}, {args.img_size} px, {args.in_chans} ch, "
          f"{args.mask_patch}-px cells ({grid}x{grid}), mask {args.mask_ratio}, batch {args.batch_size}, device "
          f"{device}, precision {args.precision}, {torch.get_num_threads()} threads, best of {args.steps} "
          "interleaved steps")
    _compare_steps(variants, lambda name, model: _our_step(model, imgs, args, device), args, device,
                   "supervised step (no mask)")


def _add_step_args(p: argparse.ArgumentParser) -> None:
    """The options every step-time comparison shares: batch, warm-up and timed steps, threads, device, precision."""
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--warmup", type=int, default=1, help="untimed steps of each row before timing")
    p.add_argument("--steps", type=int, default=5, help="timed steps of each row; the fastest is reported")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default=None, help="cpu / cuda / mps (default: best available)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="autocast of the pre-training loop (auto: none on the CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile each step's forward")


def _add_convnext_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encoder", default="convnext_atto", help="timm ConvNeXt (default convnext_atto)")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--in-chans", type=int, default=1)
    p.add_argument("--mask-patch", type=int, default=16, help="mask cell side: a stage stride (8, 16, 32)")
    p.add_argument("--mask-ratio", type=float, default=0.6)
    _add_step_args(p)


def bench_texture(args: argparse.Namespace) -> None:
    """Texture statistics of the phantom at several speckle contrasts beside BUSI shrunk to the same size: how the
    default :data:`~medmae_nb.data.synthetic.SPECKLE` was chosen (match BUSI's pixel-scale grain)."""
    import os

    from .data.folders import load_busi
    from .data.synthetic import SPECKLE, make_phantom
    from .data.texture import texture_stats

    rows = []
    for speckle in args.speckle:
        ds = make_phantom(args.n, args.image_size, seed=args.seed, speckle=speckle)
        tag = " (default)" if speckle == SPECKLE else ""
        rows.append((f"phantom, speckle {speckle}{tag}", len(ds), texture_stats(ds.images)))
    root = args.data_root or os.environ.get("MEDMAE_DATA")
    if root:
        busi = load_busi(root, image_size=args.image_size, channels=1)
        rows.append(("BUSI", len(busi), texture_stats(busi.images)))
    else:
        print("no MEDMAE_DATA / --data-root: phantom rows only")
    keys = ("pixel_noise_std", "highpass_std", "acf_lateral_1", "acf_axial_1", "mean", "std")
    table = [(name, n, *(f"{st[k]:.3f}" for k in keys)) for name, n, st in rows]
    print(f"texture statistics at {args.image_size} px (mean over images)")
    _print_table(("images", "n", *keys), table)
    if args.csv:
        import csv

        from .cache import atomic_write

        def write(tmp) -> None:
            with open(tmp, "w", newline="") as f:
                csv.writer(f).writerows([("images", "n", *keys), *table])

        atomic_write(args.csv, write)
        print(f"wrote {args.csv}")


def _add_texture_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--speckle", type=float, nargs="+", default=[1.0, 0.5, 0.3, 0.0])
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--n", type=int, default=600, help="phantom images per row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", default=None, help="folder holding busi_256/ (default: $MEDMAE_DATA)")
    p.add_argument("--csv", default=None, help="also write the table to this CSV file")


def bench_spark(args: argparse.Namespace) -> None:
    """SparK pre-training step against a plain supervised step on the same encoder: forward, backward, AdamW, timed
    round-robin (fastest of ``--steps``), peak memory per row measured alone (as ``bench convnext``). The sparse
    emulation (hooks, visible-site BatchNorm) and the UNet decoder are SparK's extra cost. The MoCo v2 row is the
    contrastive step on the same encoder: two views (the images and their horizontal flips) through the query and the
    EMA key encoder, InfoNCE against the queue, AdamW, then the EMA update; its parameter count includes the frozen
    key networks."""
    from .models.contrastive import MoCo
    from .models.spark import SparK
    from .profiles import get_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else get_device()
    imgs = torch.rand(args.batch_size, args.in_chans, args.img_size, args.img_size,
                      generator=torch.Generator().manual_seed(0)).to(device)
    variants: dict[str, Callable[[], torch.nn.Module]] = {
        "supervised step (no mask)": lambda: _Supervised(args.encoder, args.in_chans),
        "SparK": lambda: SparK(args.encoder, img_size=args.img_size, in_chans=args.in_chans,
                               mask_ratio=args.mask_ratio, mask_stride=args.mask_stride,
                               decoder_width=args.decoder_width),
        "MoCo v2 (2 views)": lambda: MoCo(args.encoder, in_chans=args.in_chans, queue_size=args.queue_size),
    }
    two = [imgs, imgs.flip(-1)]

    def make_step(name: str, model: torch.nn.Module) -> Callable[[], None]:
        if name.startswith("MoCo"):
            return _our_views_step(model, two, args, device)
        return _our_step(model, imgs, args, device)

    grid = args.img_size // args.mask_stride
    print(f"SparK pre-training step (fwd+bwd+AdamW), {args.encoder}, {args.img_size} px, {args.in_chans} ch, "
          f"{args.mask_stride}-px cells ({grid}x{grid}), mask {args.mask_ratio}, decoder width {args.decoder_width}, "
          f"MoCo v2 queue {args.queue_size}, batch {args.batch_size}, device {device}, precision {args.precision}, "
          f"{torch.get_num_threads()} threads, best of {args.steps} interleaved steps")
    _compare_steps(variants, make_step, args, device, "supervised step (no mask)")


def _add_spark_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encoder", default="resnet18", help="timm ResNet or ConvNeXt (default resnet18)")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--in-chans", type=int, default=1)
    p.add_argument("--mask-stride", type=int, default=16, choices=[16, 32],
                   help="mask cell side: 32 (SparK) or 16 (small images)")
    p.add_argument("--mask-ratio", type=float, default=0.6)
    p.add_argument("--decoder-width", type=int, default=128, help="decoder width at the coarsest scale")
    p.add_argument("--queue-size", type=int, default=4096, help="MoCo v2 row: negative keys in the queue")
    _add_step_args(p)


def bench_dino(args: argparse.Namespace) -> None:
    """DINO pre-training step against a plain supervised step on the same encoder: forward, backward, AdamW and the
    teacher's EMA update, timed round-robin (fastest of ``--steps``), peak memory per row measured alone (as ``bench
    spark``). DINO's rows run the student on every crop (the backbone once per crop size) and the teacher on the two
    globals; the row with local crops shows what multi-crop adds. The supervised row is one global view of each image.
    The last layer is not frozen, so AdamW updates every student weight, as after DINO's first epoch; the parameter
    count includes the teacher."""
    from .models.dino import DINO
    from .profiles import get_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else get_device()
    gen = torch.Generator().manual_seed(0)
    imgs = torch.rand(args.batch_size, args.in_chans, args.img_size, args.img_size, generator=gen).to(device)
    local = torch.rand(args.batch_size, args.in_chans, args.local_size, args.local_size, generator=gen).to(device)
    globals_ = [imgs, imgs.flip(-1)]
    crops = {"DINO, 2 global": globals_}
    if args.n_local:
        crops[f"DINO, 2 global + {args.n_local} local"] = globals_ + [local] * args.n_local

    def dino() -> torch.nn.Module:
        return DINO(args.encoder, in_chans=args.in_chans, img_size=args.img_size, out_dim=args.out_dim,
                    freeze_last_layer=0)

    base = "supervised step (global view)"
    variants: dict[str, Callable[[], torch.nn.Module]] = {
        base: lambda: _Supervised(args.encoder, args.in_chans, img_size=args.img_size),
        **dict.fromkeys(crops, dino),
    }

    def make_step(name: str, model: torch.nn.Module) -> Callable[[], None]:
        if name in crops:
            return _our_views_step(model, crops[name], args, device)
        return _our_step(model, imgs, args, device)

    print(f"DINO pre-training step (fwd+bwd+AdamW+EMA), {args.encoder}, 2 global crops of {args.img_size} px, "
          f"{args.n_local} local of {args.local_size} px, {args.in_chans} ch, {args.out_dim} prototypes, batch "
          f"{args.batch_size}, device {device}, precision {args.precision}, {torch.get_num_threads()} threads, best of "
          f"{args.steps} interleaved steps")
    _compare_steps(variants, make_step, args, device, base)


def _add_dino_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encoder", default="vit_micro", help="book or timm encoder (default vit_micro)")
    p.add_argument("--img-size", type=int, default=64, help="global crop side")
    p.add_argument("--local-size", type=int, default=32, help="local crop side")
    p.add_argument("--n-local", type=int, default=6, help="local crops per image (0: globals only)")
    p.add_argument("--out-dim", type=int, default=2048, help="DINO prototypes K")
    p.add_argument("--in-chans", type=int, default=1)
    _add_step_args(p)


def bench_methods(args: argparse.Namespace) -> None:
    """Every method's downstream protocols on one dataset (:func:`medmae_nb.compare.run_methods`): appends to the
    results CSV (resumable) and prints the leaderboard."""
    from .compare import main_methods

    if args.threads:
        torch.set_num_threads(args.threads)
    from .data.base import DataError

    try:
        main_methods(args.data, args.profile, args.out, args.methods, args.protocols, args.seeds, args.root,
                     True if args.pretrain else "auto", args.metric, allow_leak=args.allow_leak,
                     pretrain_seeds=getattr(args, "pretrain_seeds", None),
                     seed_weights=getattr(args, "seed_weights", None), fractions=getattr(args, "fractions", None),
                     per_class=getattr(args, "per_class", None))
    except (DataError, ValueError, FileNotFoundError) as err:  # bad input: the message, not a traceback
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def _layout(text: str) -> tuple[int, int]:
    """``"PxT"`` -> ``(P processes, T threads per process)``."""
    try:
        procs, threads = (int(s) for s in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a layout is PROCESSESxTHREADS such as 2x1, got {text!r}") from None
    if procs < 1 or threads < 1:
        raise argparse.ArgumentTypeError(f"a layout needs at least 1 process and 1 thread, got {text!r}")
    return procs, threads


def _ddp_rows(results: list[tuple[int, int, int, float]]) -> list[tuple]:
    """Table rows from ``(processes, threads per process, global batch, img/s total)``, the first one the baseline.

    Speed-up is the throughput over the first row's; efficiency is the speed-up per core used, relative to the
    first row (1.00 = the extra cores gave proportionally more images per second).

    Example:
        >>> _ddp_rows([(1, 1, 64, 100.0), (2, 1, 64, 150.0)])[1]
        (2, 1, 64, '150', '75', '1.50x', '0.75')
    """
    procs0, threads0, _, base = results[0]
    rows = []
    for procs, threads, batch, img_s in results:
        speedup = img_s / base
        cores = procs * threads / (procs0 * threads0)
        rows.append((procs, threads, batch, f"{img_s:.0f}", f"{img_s / procs:.0f}", f"{speedup:.2f}x",
                     f"{speedup / cores:.2f}"))
    return rows


_DDP_TAG = "DDP_BENCH_RESULT "


def _ddp_worker(args: argparse.Namespace) -> None:
    """One process of a ``bench ddp`` layout (started by ``torchrun``): the recipe's method, views and optimiser
    settings on a pool of ``batch × steps`` phantom images, ``1 + repeats`` epochs of ``pretrain``; rank 0 prints the
    per-epoch throughput the loop measured, as JSON."""
    import json
    import os

    from .data.synthetic import make_phantom
    from .pretrained.recipes import get_recipe
    from .train import pretrain

    recipe = get_recipe(args.recipe)
    d = recipe.data
    pool = make_phantom(args.batch_size * args.steps, d.image_size * d.downsample, seed=d.seed,
                        difficulty=d.difficulty, speckle=d.speckle)
    if d.downsample != 1:
        pool = pool.downsample(d.downsample)
    _, history = pretrain(recipe.method(), pool, epochs=1 + args.repeats, batch_size=args.batch_size, lr=recipe.lr,
                          min_lr=recipe.min_lr, weight_decay=recipe.weight_decay, warmup_epochs=recipe.warmup_epochs,
                          clip_grad=recipe.clip_grad, seed=recipe.seed, views=recipe.views, device=args.device,
                          precision=args.precision, progress=False, num_threads=args.threads)
    if os.environ.get("RANK", "0") == "0":
        print(_DDP_TAG + json.dumps({"img_per_s": history.column("img_per_s"), "loss": history.column("loss"),
                                     "processes": history.info["processes"], "device": history.info["device"],
                                     "threads": torch.get_num_threads()}), flush=True)


def bench_ddp(args: argparse.Namespace) -> None:
    """Data-parallel pre-training throughput: the same recipe and global batch on each ``--layouts`` entry (P
    processes x T threads each), every layout a ``torchrun --standalone --nproc_per_node=P`` run of
    :func:`medmae_nb.train.pretrain` (gloo on the CPU, NCCL on GPUs).

    Each layout trains ``1 + --repeats`` epochs of ``--steps`` steps from the same start; the first epoch (start-up,
    first-call costs) is dropped and the fastest of the others is reported, as measured by the loop itself (images
    per epoch over the epoch's wall time, so the all-reduce and the sampler are included; start-up and process
    launch are not). The layouts are launched round-robin ``--rounds`` times and each keeps its fastest epoch, the
    one least disturbed by other work on a shared machine. The last column is the last epoch's mean loss: with the
    same global batch it should agree between layouts to rounding (the processes split each global batch, they do
    not change it).
    """
    import itertools
    import json
    import os
    import subprocess
    import sys

    if args.worker:
        _ddp_worker(args)
        return
    if min(args.repeats, args.steps, args.rounds) < 1:
        raise SystemExit("--steps, --repeats and --rounds must be at least 1")
    if args.batch_size is None:
        from .pretrained.recipes import get_recipe

        args.batch_size = get_recipe(args.recipe).batch_size
    for procs, _ in args.layouts:
        if args.batch_size % procs:
            raise SystemExit(f"--batch-size {args.batch_size} is the global batch; {procs} processes must divide it")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    best, losses = [0.0] * len(args.layouts), [""] * len(args.layouts)
    for _, (i, (procs, threads)) in itertools.product(range(args.rounds), enumerate(args.layouts)):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
               "-m", "medmae_nb.bench", "ddp", "--worker", "--recipe", args.recipe, "--batch-size",
               str(args.batch_size), "--steps", str(args.steps), "--repeats", str(args.repeats), "--threads",
               str(threads), "--precision", args.precision] + (["--device", args.device] if args.device else [])
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            env.pop(name, None)  # a layout starts its own group, even when this command runs under torchrun
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
        lines = [line for line in proc.stdout.splitlines() if line.startswith(_DDP_TAG)]
        if proc.returncode or not lines:
            raise SystemExit(f"layout {procs}x{threads} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n"
                             f"{proc.stderr[-4000:]}")
        out = json.loads(lines[-1][len(_DDP_TAG):])
        best[i] = max(best[i], *out["img_per_s"][1:])
        losses[i] = f"{out['loss'][-1]:.4f}"
        device = out["device"]
    results = [(procs, threads, args.batch_size, img_s) for (procs, threads), img_s in zip(args.layouts, best)]
    rows = [(*row, loss) for row, loss in zip(_ddp_rows(results), losses)]
    print(f"pretrain under torchrun, recipe {args.recipe} on {args.batch_size * args.steps} phantom images, global "
          f"batch {args.batch_size}, {args.steps} steps per epoch, best of {args.repeats} epochs after 1 warm-up "
          f"epoch x {args.rounds} interleaved rounds, device {device}, precision {args.precision}, torch "
          f"{torch.__version__.split('+')[0]}, {os.cpu_count()} CPUs, load average {load:.1f} at the start")
    _print_table(("processes", "threads/proc", "global batch", "img/s total", "img/s per proc", "speed-up",
                  "efficiency", "last loss"), rows)


def _add_ddp_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layouts", type=_layout, nargs="+", default=[(1, 1), (1, 2), (2, 1)], metavar="PxT",
                   help="processes x threads per process, one row each; the first is the baseline "
                   "(default 1x1 1x2 2x1)")
    p.add_argument("--recipe", default="mae-micro-p8", help="its method, views and optimiser settings "
                   "(python -m medmae_nb.train list)")
    p.add_argument("--batch-size", type=int, default=None, help="global batch (default: the recipe's)")
    p.add_argument("--steps", type=int, default=5, help="steps per epoch (the pool is batch x steps images)")
    p.add_argument("--repeats", type=int, default=2, help="timed epochs after the warm-up one; the fastest counts")
    p.add_argument("--device", default=None, help="cpu / cuda (default: best available; each process its own GPU)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="the loop's autocast (auto: none on the CPU)")
    p.add_argument("--rounds", type=int, default=2, help="times each layout is launched, round-robin, so a burst of "
                   "other work hits every layout alike; the fastest epoch of all rounds counts")
    p.add_argument("--timeout", type=float, default=600, help="seconds allowed per layout")
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)  # set per layout for the workers
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # a torchrun process of one layout


# subcommand -> (function, help, adds its options)
COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], None], str, Callable[[argparse.ArgumentParser], None]]] = {
    "data": (bench_data, "phantom generation speed", _add_data_args),
    "mae": (bench_mae, "MAE pre-training throughput; visible-only vs all-token encoder", _add_mae_args),
    "miram": (bench_miram, "MIRAM vs MAE step time and peak memory per scale set", _add_miram_args),
    "convnext": (bench_convnext, "masked ConvNeXt step time and memory vs a supervised step", _add_convnext_args),
    "spark": (bench_spark, "SparK step time and memory vs a supervised step", _add_spark_args),
    "dino": (bench_dino, "DINO multi-crop step time and memory vs a supervised step", _add_dino_args),
    "ddp": (bench_ddp, "torchrun data-parallel pre-training throughput: P processes x T threads", _add_ddp_args),
    "methods": (bench_methods, "every method and protocol on one dataset spec: a resumable results CSV (the same "
                "as `medmae compare`)", add_compare_args),
    "texture": (bench_texture, "phantom speckle vs BUSI texture statistics", _add_texture_args),
}


def main(argv: list[str] | None = None, prog: str = "python -m medmae_nb.bench") -> None:
    """Parses ``argv`` and runs the chosen benchmark."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text, add_args) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_text))
    args = parser.parse_args(argv)
    if args.command == "data" and len(args.sizes) != len(args.n):
        parser.error(f"--sizes has {len(args.sizes)} values but --n has {len(args.n)}; give one n per size")
    COMMANDS[args.command][0](args)


if __name__ == "__main__":
    main()
