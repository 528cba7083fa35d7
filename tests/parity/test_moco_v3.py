"""MoCo v3 ``preset=paper`` (ViT, AdamW) and ``preset=paper-resnet50`` (ResNet, LARS) step for step beside
facebookresearch/moco-v3 (builder.MoCo_ViT / MoCo_ResNet, vits.VisionTransformerMoCo, optimizer.LARS and
main_moco.train with its per-iteration LR and momentum)."""

from __future__ import annotations

import contextlib
import functools
import io
import tempfile
import warnings
from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.distributed as dist
import torchvision

from tests.parity import harness as H

# Each recipe on a tiny backbone (ViT depth 2 at 32 px / patch 4, 3 heads; ResNet-18 with the CIFAR stem),
# heads 256 -> 32, everything else the recipe's: optimizer, per-iteration warm-up + cosine LR (1 warm-up
# epoch here), cosine momentum 0.99 -> 1, temperature, summed directions, per-view forwards, the EMA at
# the start of each step, frozen patch projection and sin-cos position embedding. 3 epochs of 5 steps
# of 16 images: the warm-up ends at step 5.
BATCH, EPOCHS, SPE, HIDDEN, DIM = 16, 3, 5, 256, 32
COMMON = [
    "backbone.img_size=32",
    "data.global_size=32",
    f"method.hidden_dim={HIDDEN}",
    f"method.out_dim={DIM}",
    f"optim.batch_size={BATCH}",
    f"optim.epochs={EPOCHS}",
    "optim.warmup_epochs=1",
    "device=cpu",
    "threads=0",
]
VARIANTS = {
    "vit": ["method=moco_v3", "preset=paper", "backbone=vit_tiny", "backbone.depth=2", "backbone.drop_path_rate=0.0"],
    "resnet": ["method=moco_v3", "preset=paper-resnet50", "backbone=resnet18", "backbone.channels_last=false"],
}
# fp32 on the CPU: summation order alone: ~2e-7 relative in the loss, tensors to a few ulps. Bounded apart:
# - ViT: the key third of each qkv bias, and the final LayerNorm's bias, get no gradient (softmax is
#   shift-invariant per query; the projector's first Linear has no bias and a BatchNorm after it removes
#   any shift): AdamW steps them by about the LR (peak 9.4e-6 here) along rounding noise, and the running
#   mean of that BatchNorm follows the bias. Bounded by the LR summed over the run.
# - ResNet: the last BatchNorm of each residual branch starts at weight 0 (zero_init_residual) and LARS
#   divides by the norm of a gradient that starts at 0 there, so its parameters amplify rounding: 6e-5
#   after 15 steps (5e-3 with channels-last convolutions, whose rounding is not the reference's contiguous
#   layout's: the harness runs contiguous, backbone.channels_last=false). The BN running statistics
#   after those branches follow them at ~6e-6 of their scale, inside PARAM_TOL.
LOSS_TOL, PARAM_TOL, APART_TOL = 1e-5, 1e-5, 3e-4
APART = {
    "vit": lambda k: k.endswith(("attn.qkv.bias", "encoder.norm.bias", "head.1.running_mean")),
    "resnet": lambda k: ".bn2." in k and k.split(".")[1].startswith("layer"),
}


def views(step: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3000 + step)
    return [torch.randn(BATCH, 3, 32, 32, generator=g) for _ in range(2)]


def _ref_name(key: str, vit: bool) -> str | None:
    """suite ``query.backbone.model.X`` / ``query.head.layers.i`` / ``predictor.layers.i`` -> moco-v3
    ``base_encoder.X`` / ``base_encoder.head.i`` (ViT) or ``.fc.i`` (ResNet) / ``predictor.i``; ``key`` ->
    ``momentum_encoder``."""
    head = "head." if vit else "fc."
    for ours, theirs in (("query.", "base_encoder."), ("key.", "momentum_encoder.")):
        if key.startswith(ours):
            rest = key[len(ours) :].replace("backbone.model.", "", 1)
            return theirs + rest.replace("head.layers.", head, 1)
    if key.startswith("predictor.layers."):
        return "predictor." + key[len("predictor.layers.") :]
    return None


def _split(state: dict[str, torch.Tensor], params: set[str]) -> tuple[dict, dict]:
    """(key-encoder parameters, everything else), BN step counters dropped."""
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    key_params = {k: v for k, v in state.items() if k in params and k.startswith("momentum_encoder.")}
    return key_params, {k: v for k, v in state.items() if k not in key_params}


def _suite_state(method, vit: bool, key_encoder: bool) -> dict[str, torch.Tensor]:
    """The key encoder's parameters (read before a step: the reference updates them at its start, the suite
    at the end of the step before), or everything else (read after the step)."""
    params = {_ref_name(k, vit) for k, _ in method.named_parameters()}
    key_params, rest = _split(H.mapped(method.state_dict(), functools.partial(_ref_name, vit=vit)), params)
    return key_params if key_encoder else rest


def _flags(variant: str, cfg, data: Path) -> list[str]:
    """The recipe as main_moco.py's flags (as CONFIG.md's ViT-S and ResNet-50 commands pass them), at the
    harness's sizes; the LR as given (main_moco.py scales it by the batch itself)."""
    m, o, d = cfg.method, cfg.optim, cfg.data
    vit = variant == "vit"
    argv = ["-a", "vit_small" if vit else "resnet18", "-b", str(BATCH), "--lr", str(o.lr), "-j", "0"]
    argv += ["--epochs", str(o.epochs), "--warmup-epochs", str(int(o.warmup_epochs)), "--wd", str(o.weight_decay)]
    argv += ["--momentum", str(o.momentum), "--optimizer", "adamw" if vit else "lars"]
    argv += ["--moco-dim", str(DIM), "--moco-mlp-dim", str(HIDDEN), "--moco-m", str(m.momentum), "--moco-m-cos"]
    argv += ["--moco-t", str(m.temperature), "--crop-min", str(d.global_scale[0]), "-p", str(10**9)]
    return argv + (["--stop-grad-conv1"] if vit else []) + [str(data)]


def reference_run(variant: str, cfg, init, tmp: Path):
    """main_moco.main_worker with the recipe's flags builds MoCo_ViT / MoCo_ResNet, scales the LR and builds
    AdamW / LARS; it is stopped where it calls train(), which then runs from the suite's weights over the
    harness's views. Shims: the harness's tiny ViT (vit_tiny's widths, ``backbone.depth`` blocks, 32 px) as
    its ``vit_small``, or ResNet-18 with the CIFAR stem; the harness's 1-process group for the one it
    starts; a TensorBoard writer that keeps each step's loss."""
    vit = variant == "vit"
    o, b = cfg.optim, cfg.backbone
    with H.old_timm_names():
        vits, main_moco = H.import_reference("moco-v3", "vits", "main_moco")

    def tiny_vit(**kwargs) -> torch.nn.Module:
        return vits.VisionTransformerMoCo(
            img_size=b.img_size,
            patch_size=b.patch_size,
            embed_dim=192,
            depth=b.depth,
            num_heads=3,
            mlp_ratio=4,
            qkv_bias=True,
            norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6),
            **kwargs,
        )

    losses: list[float] = []

    class Writer:  # main_moco.train logs each step's loss here; the harness keeps it
        def add_scalar(self, name, value, step):
            losses.append(value)

    args = main_moco.parser.parse_args(_flags(variant, cfg, H.image_folder(tmp, SPE * BATCH).parent))
    args.distributed, args.rank, args.world_size = True, 0, 1
    with contextlib.ExitStack() as stack:
        stack.enter_context(H.cpu_single_process())
        stack.enter_context(H.old_timm_names())  # VisionTransformerMoCo's __init__ reads num_tokens
        stack.enter_context(mock.patch.object(dist, "init_process_group", lambda *a, **k: None))
        stack.enter_context(mock.patch.object(vits, "vit_small", tiny_vit))
        stack.enter_context(mock.patch.object(torchvision.models, "resnet18", H.cifar_resnet18))
        stack.enter_context(mock.patch.object(main_moco, "SummaryWriter", Writer))
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")  # its torch.cuda.amp.GradScaler() on a machine without CUDA: disabled
        setup = H.setup_of(lambda: main_moco.main_worker(None, 1, args), main_moco, "train")
    model, optimizer, scaler, writer = (setup[k] for k in ("model", "optimizer", "scaler", "summary_writer"))
    assert not scaler.is_enabled()
    H.load_mapped(model, {_ref_name(k, vit): v for k, v in init.items() if _ref_name(k, vit)}, lambda k: k)
    params = {k for k, _ in model.named_parameters()}
    records: list[H.StepRecord] = []

    def record(it: int) -> None:
        g = optimizer.param_groups[0]
        # the momentum the suite reports at step s is the one the reference uses at step s + 1
        nxt = main_moco.adjust_moco_momentum((it + 1) / SPE, args)
        wd_min = 0.0 if o.optimizer == "lars" else H.min_weight_decay(optimizer)  # optimizer.py:27: not for 1-D
        vals = {"lr": g["lr"], "wd": g["weight_decay"], "wd_min": wd_min, "momentum": nxt}
        key_params, rest = _split(model.state_dict(), params)
        records.append(H.StepRecord(losses[-1], vals, H.snapshot({**key_params, **rest})))

    class Loader:
        def __init__(self, epoch):
            self.epoch = epoch

        def __len__(self):
            return SPE

        def __iter__(self):
            for i in range(SPE):
                if i:
                    record(self.epoch * SPE + i - 1)
                yield views(self.epoch * SPE + i), None
            record(self.epoch * SPE + SPE - 1)

    with H.cpu_single_process(), contextlib.redirect_stdout(io.StringIO()):
        for epoch in range(o.epochs):
            main_moco.train(Loader(epoch), model, optimizer, scaler, writer, epoch, args)
    return records


def run(variant: str = "vit") -> H.Comparison:
    vit = variant == "vit"
    ours = H.suite_steps(
        VARIANTS[variant] + COMMON,
        views,
        EPOCHS * SPE,
        SPE,
        state=lambda m: _suite_state(m, vit, key_encoder=False),
        before=lambda m: _suite_state(m, vit, key_encoder=True),
    )
    with tempfile.TemporaryDirectory(prefix="ssl-bench-parity-moco-v3-") as tmp:
        theirs = reference_run(variant, ours.cfg, ours.init, Path(tmp))
    return H.compare(
        f"moco_v3 ({variant})", ours.records, theirs, LOSS_TOL, PARAM_TOL, apart=APART[variant], apart_tol=APART_TOL
    )


@pytest.mark.skipif(H.skip_reason("moco-v3") is not None, reason=str(H.skip_reason("moco-v3")))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_moco_v3_paper_step_equals_the_reference(variant):
    c = run(variant)
    print(c.line())
    assert not c.first_difference, c.line()
