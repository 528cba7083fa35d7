"""The mechanics the recipes rely on: targets without stochastic depth, MoCo's shuffle-BN and per-backbone
v3 settings, DINO's per-parameter clip, LARS with solo-learn's clip_lr, and one crop policy for both paths."""

from __future__ import annotations

import pytest
import torch

from ssl_bench.config import build_config
from ssl_bench.data.multicrop import MultiCropTransform, crop_policy
from ssl_bench.engine.optim import LARS, clip_gradients, make_optimizer
from ssl_bench.engine.train import build_method, resolve
from tests.conftest import TINY


def _method(*over):
    base = (
        [o for o in TINY if not o.startswith("backbone")]
        if any(o.startswith("backbone=resnet") for o in over)
        else TINY
    )
    cfg = resolve(build_config(base + list(over)))
    return cfg, build_method(cfg)


@pytest.mark.parametrize("name,target", [("dino", "teacher"), ("byol", "target"), ("moco", "key")])
def test_target_network_has_no_stochastic_depth(name, target):
    """The student keeps drop_path 0.1; two passes of the target (train mode, as in the references)
    on the same images are equal. Fails when the target is built from the student's config."""
    cfg, m = _method(f"method={name}", "backbone.drop_path_rate=0.1", "backbone.depth=2")
    m.train()
    net = getattr(m, target)
    x = torch.randn(16, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
        online = m.student if name == "dino" else (m.online if name == "byol" else m.query)
        torch.manual_seed(0)
        a = online(x)
        torch.manual_seed(1)
        assert not torch.equal(a, online(x))  # the student's drop path is live


def test_moco_v2_shuffle_bn_groups_keys_in_shuffled_sub_batches():
    """ResNet keys go through shuffled sub-batches with their own BN statistics (moco/builder.py
    _batch_shuffle_ddp); without shuffle-BN the key of a sample depends on its batch neighbours alone."""
    cfg, m = _method(
        "method=moco",
        "backbone=resnet18",
        "backbone.img_size=16",
        "method.out_dim=8",
        "method.hidden_dim=16",
        "method.shuffle_bn_groups=4",
        "method.symmetric=false",
    )
    assert m.shuffle and not m.sync_batchnorm()
    m.train()
    x = torch.randn(16, 3, 16, 16)
    torch.manual_seed(3)
    with torch.no_grad():
        got = m._forward_groups(m.key, x, shuffle=True)
        torch.manual_seed(3)
        perm = torch.randperm(16)
        want = torch.cat([m.key(c) for c in x[perm].chunk(4)])[torch.argsort(perm)]
        assert torch.allclose(got, want, atol=1e-5)
        assert not torch.allclose(got, m.key(x), atol=1e-3)  # not one batch's statistics
    loss = m.training_step([x, torch.randn(16, 3, 16, 16)], _state(m))["loss"]
    assert torch.isfinite(loss)
    cfg, vit = _method("method=moco", "method.out_dim=8", "method.hidden_dim=16")
    assert not vit.shuffle  # no BN in a ViT: nothing to shuffle


def _state(m):
    from ssl_bench.methods.base import StepState

    return StepState(0, 0, 10, 20, {k: f(0, 10, 20) for k, f in m.schedules().items()})


def test_moco_v3_settings_follow_the_backbone():
    """moco-v3 builder.py: ViT 3-layer projector, ResNet 2-layer; main_moco.py T 1.0 (ResNet) / CONFIG.md 0.2 (ViT)."""
    stable = ["method.vit_frozen_patch_embed=true", "method.vit_sincos_pos_embed=true"]  # off in the CPU demo recipe
    _, vit = _method("method=moco_v3", "method.hidden_dim=16", "method.out_dim=8", *stable)
    _, rn = _method(
        "method=moco_v3", "backbone=resnet18", "backbone.img_size=16", "method.hidden_dim=16", "method.out_dim=8"
    )
    linears = lambda head: sum(isinstance(x, torch.nn.Linear) for x in head.modules())  # noqa: E731
    assert (vit.temperature, linears(vit.query.head)) == (0.2, 3)
    assert (rn.temperature, linears(rn.query.head)) == (1.0, 2)
    last_bn = [x for x in vit.query.head.modules() if isinstance(x, torch.nn.BatchNorm1d)][-1]
    assert not last_bn.affine  # builder.py _build_mlp: BatchNorm1d(dim2, affine=False) last
    # the ViT stability recipe: frozen random patch projection, fixed sin-cos position embedding
    pe = vit.query.backbone.model.pos_embed
    assert not pe.requires_grad and not vit.query.backbone.model.patch_embed.proj.weight.requires_grad
    assert torch.all(pe[0, 0] == 0) and torch.allclose(pe[0, 1, : pe.shape[-1] // 4], torch.zeros(1), atol=0)
    opt = make_optimizer(build_config(TINY + ["method=moco_v3", *stable]).optim, vit)
    trained = {id(p) for g in opt.param_groups for p in g["params"]}
    assert id(pe) not in trained and id(vit.query.backbone.model.patch_embed.proj.weight) not in trained


def test_dino_per_parameter_clip_matches_the_reference():
    """DINO utils.clip_gradients: each gradient scaled by clip / (norm + 1e-6) when that is below 1."""
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 5, generator=g)) for _ in range(3)]
    grads = [torch.randn(5, 5, generator=g) * s for s in (0.1, 2.0, 10.0)]
    for p, gr in zip(params, grads):
        p.grad = gr.clone()
    clip_gradients(params, 3.0, "param")
    for p, gr in zip(params, grads):
        n = gr.norm()
        coef = 3.0 / (n + 1e-6)
        assert torch.allclose(p.grad, gr * coef if coef < 1 else gr)
    assert torch.equal(params[0].grad, grads[0])  # a small gradient is left alone; global clipping would scale it


def test_lars_clip_lr_matches_solo_learn():
    """solo/utils/lars.py with clip_lr: lars_lr = min(eta |w| / (|g| + wd |w|) / lr, 1); biases (weight decay 0)
    take the plain SGD step. Without clip_lr our LARS is lightly's."""
    torch.manual_seed(0)
    w, b = torch.nn.Parameter(torch.randn(4, 4)), torch.nn.Parameter(torch.randn(4))
    gw, gb = torch.randn(4, 4) * 0.01, torch.randn(4)
    lr, wd, eta = 0.5, 1e-4, 0.02
    opt = LARS(
        [{"params": [w], "weight_decay": wd}, {"params": [b], "weight_decay": 0.0}],
        lr=lr,
        momentum=0.0,
        trust_coefficient=eta,
        clip_lr=True,
    )
    w0, b0 = w.detach().clone(), b.detach().clone()
    w.grad, b.grad = gw.clone(), gb.clone()
    opt.step()
    trust = min(eta * w0.norm() / (gw.norm() + w0.norm() * wd + 1e-8) / lr, 1.0)
    assert torch.allclose(w, w0 - lr * trust * (gw + wd * w0), atol=1e-6)
    assert torch.allclose(b, b0 - lr * gb, atol=1e-6)


@pytest.mark.parametrize("nesterov", [False, True])
def test_lars_equals_lightly_s_step_and_never_waits_for_the_device(nesterov):
    """The multi-tensor LARS step is lightly's (utils/lars.py) over several steps with momentum, a weight and a
    gradient of norm 0 (neither adapted nor decayed) and a group without weight decay; lightly's reads two
    norms on the host per parameter, ours none."""
    from lightly.utils.lars import LARS as LightlyLARS

    from ssl_bench.engine.opcount import count_ops

    g = torch.Generator().manual_seed(0)
    shapes = [(6, 4), (4,), (3, 3), (5,), (2, 2)]
    init = [torch.randn(s, generator=g) for s in shapes]
    init[2].zero_()  # a weight of norm 0
    grads = [[torch.randn(s, generator=g) * 0.1 for s in shapes] for _ in range(3)]
    for step in grads:
        step[4].zero_()  # a gradient of norm 0

    def run(cls):
        ps = [torch.nn.Parameter(t.clone()) for t in init]
        groups = [
            {"params": [ps[0], ps[2], ps[4]], "weight_decay": 1e-2},
            {"params": [ps[1], ps[3]], "weight_decay": 0.0},
        ]
        opt = cls(groups, lr=0.3, momentum=0.9, nesterov=nesterov, trust_coefficient=0.02)
        for step in grads:
            for p, gr in zip(ps, step):
                p.grad = gr.clone()
            opt.step()
        return ps, opt

    ours, opt = run(LARS)
    ref, ref_opt = run(LightlyLARS)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert count_ops(opt.step)["syncs"] == 0
    assert count_ops(ref_opt.step)["syncs"] > 0  # what it replaces


@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_both_crop_paths_build_from_the_method_policy(method):
    """The recipe's policy reaches the PIL transform and the on-device crops alike."""
    cfg = resolve(build_config([f"method={method}", "preset=paper", "data.global_size=32"]))
    pol = crop_policy(cfg.data)
    t = MultiCropTransform(pol)
    jitter = t.global1.transforms[2].transforms[0]
    assert (jitter.brightness[1] - 1, jitter.saturation[1] - 1) == pytest.approx((pol.aug.jitter[0], pol.aug.jitter[2]))
    assert t.global1.transforms[0].scale == tuple(cfg.data.global_scale)
    from ssl_bench.data.device_aug import DeviceMultiCrop, sample_crops

    d = DeviceMultiCrop(pol)
    assert d.policy == pol
    assert d.global_blur_p.tolist() == pytest.approx([pol.aug.global1.blur_p, pol.aug.global2.blur_p])
    n = 4000
    p = sample_crops(n, 32, 32, pol.global_scale, pol.aug, torch.zeros(n), torch.zeros(n), torch.Generator())
    area = p.box[:, 2] * p.box[:, 3] / 32**2
    lo, hi = cfg.data.global_scale
    assert area.min() >= lo - 0.05 and area.max() <= hi and area.min() < lo + 0.05  # rounding to whole pixels
    sat = p.factors[(p.factors != torch.tensor([1.0, 1.0, 1.0, 0.0])).any(1), 2]
    assert sat.max() <= 1 + pol.aug.jitter[2] and sat.max() > 1 + 0.9 * pol.aug.jitter[2]


def test_eval_preprocessing_is_dino_s_under_the_paper_recipes():
    """eval_knn.py: Resize(256, bicubic) + CenterCrop(224); the paper presets resolve to it."""
    import numpy as np
    from PIL import Image
    from torchvision.transforms import v2 as T

    from ssl_bench.data.datasets import EvalImage

    cfg = build_config(["method=byol", "preset=paper"])
    assert (cfg.eval.crop_fraction, cfg.eval.interpolation) == (0.875, "bicubic")
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8))
    got = EvalImage(224, cfg.eval.crop_fraction, cfg.eval.interpolation)(img)
    ref = T.Compose(
        [T.ToImage(), T.Resize(256, interpolation=T.InterpolationMode.BICUBIC, antialias=True), T.CenterCrop(224)]
    )(img)
    assert got.shape == (3, 224, 224) and torch.equal(got, ref.as_subclass(torch.Tensor))


def test_linear_probe_reads_the_last_blocks_as_dino_does():
    from ssl_bench.evals.linear import ProbeFeatures

    _, m = _method("method=dino", "backbone.depth=4")
    enc = m.encoder().eval()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        four = ProbeFeatures(enc, 4, avgpool=False)(x)
        assert four.shape == (3, 4 * enc.embed_dim)
        # the last block's normed CLS is the encoder's own output, last in the concatenation
        assert torch.allclose(four[:, -enc.embed_dim :], enc(x), atol=1e-5)
        one_avg = ProbeFeatures(enc, 1, avgpool=True)(x)
        assert torch.allclose(one_avg, torch.cat([enc(x), enc.patch_features(x).mean(dim=(1, 2))], 1), atol=1e-5)


def test_attention_maps_default_to_a_14_patch_grid():
    from ssl_bench.evals.segmentation import seg_resolution

    _, m = _method("method=dino")
    assert seg_resolution(None, m.encoder()) == 14 * 4 and seg_resolution(64, m.encoder()) == 64
    assert build_config(["method=dino", "preset=paper"]).eval.seg_size is None  # 224 at /16
