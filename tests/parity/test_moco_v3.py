"""MoCo v3 ``preset=paper`` (ViT, AdamW) and ``preset=paper-resnet50`` (ResNet, LARS) step for step beside
facebookresearch/moco-v3 (builder.MoCo_ViT / MoCo_ResNet, vits.VisionTransformerMoCo, optimizer.LARS and
main_moco.train with its per-iteration LR and momentum)."""

from __future__ import annotations

import contextlib
import functools
import io
import types

import pytest
import torch

from tests.parity import harness as H
from tests.parity.test_moco import cifar_resnet18

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


def reference_run(variant: str, cfg, init):
    vit = variant == "vit"
    m, o, b = cfg.method, cfg.optim, cfg.backbone
    with H.old_timm_names():
        builder, optimizer_mod, vits, main_moco = H.import_reference(
            "moco-v3", "moco.builder", "moco.optimizer", "vits", "main_moco"
        )
        if vit:
            encoder = functools.partial(
                vits.VisionTransformerMoCo,
                stop_grad_conv1=True,
                img_size=b.img_size,
                patch_size=b.patch_size,
                embed_dim=192,
                depth=b.depth,
                num_heads=3,
                mlp_ratio=4,
                qkv_bias=True,
                norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6),
            )
            model = builder.MoCo_ViT(encoder, DIM, HIDDEN, m.temperature)
        else:
            model = builder.MoCo_ResNet(cifar_resnet18, DIM, HIDDEN, m.temperature)
    H.load_mapped(model, {_ref_name(k, vit): v for k, v in init.items() if _ref_name(k, vit)}, lambda k: k)
    args = types.SimpleNamespace(
        lr=o.lr * BATCH / 256,
        warmup_epochs=o.warmup_epochs,
        epochs=o.epochs,
        moco_m=m.momentum,
        moco_m_cos=True,
        gpu=None,
        rank=0,
        print_freq=10**9,
    )  # main_moco.py:175 args.lr = args.lr * args.batch_size / 256
    if o.optimizer == "lars":  # main_moco.py:224-230
        optimizer = optimizer_mod.LARS(model.parameters(), args.lr, weight_decay=o.weight_decay, momentum=o.momentum)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), args.lr, weight_decay=o.weight_decay)
    params = {k for k, _ in model.named_parameters()}
    records: list[H.StepRecord] = []
    losses: list[float] = []

    class Writer:  # main_moco.train logs each step's loss here; the harness keeps it
        def add_scalar(self, name, value, step):
            losses.append(value)

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

    scaler = torch.amp.GradScaler("cpu", enabled=False)  # fp32: main_moco.py's scaler is a no-op here
    with H.cpu_single_process(), contextlib.redirect_stdout(io.StringIO()):
        for epoch in range(o.epochs):
            main_moco.train(Loader(epoch), model, optimizer, scaler, Writer(), epoch, args)
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
    theirs = reference_run(variant, ours.cfg, ours.init)
    return H.compare(
        f"moco_v3 ({variant})", ours.records, theirs, LOSS_TOL, PARAM_TOL, apart=APART[variant], apart_tol=APART_TOL
    )


@pytest.mark.skipif(H.skip_reason("moco-v3") is not None, reason=str(H.skip_reason("moco-v3")))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_moco_v3_paper_step_equals_the_reference(variant):
    c = run(variant)
    print(c.line())
    assert not c.first_difference, c.line()
