"""What the parity runs established, pinned without the reference checkouts so CI guards it: each paper
recipe's schedule arithmetic (values as the reference code computed them for the harness's tiny runs),
its options, parameter groups and forwards."""

from __future__ import annotations

import pytest
import torch

from ssl_bench import schedules as S
from ssl_bench.backbones import TimmViT, ViTTinyConfig
from ssl_bench.config import build_config
from ssl_bench.data.device_aug import DeviceMultiCrop
from ssl_bench.data.multicrop import crop_policy
from ssl_bench.engine.optim import LARS, make_optimizer
from ssl_bench.engine.step import make_train_step, optim_schedules
from ssl_bench.engine.train import build_method, resolve
from tests.parity import test_byol_official, test_dino, test_moco, test_moco_v3, test_solo_learn, test_swav

# facebookresearch/dino utils.cosine_scheduler and DINOLoss.teacher_temp_schedule for tests/parity/test_dino.py's
# run (3 epochs x 5 steps, 1 warm-up epoch, batch 16): read from the reference's own arrays
DINO_REFERENCE = {
    "lr": {0: 0.0, 1: 7.8125e-06, 4: 3.125e-05, 5: 3.125e-05, 6: 3.050972981e-05, 10: 1.6125e-05, 14: 1.740270191e-06},
    "wd": {0: 0.04, 1: 0.04393343187, 5: 0.13, 10: 0.31, 14: 0.3960665681},
    "momentum": {0: 0.996, 1: 0.9960437048, 5: 0.997, 10: 0.999, 14: 0.9999562952},
    "teacher_temp": {0: 0.04, 4: 0.04, 5: 0.07, 14: 0.07},
}


def test_dino_paper_schedules_step_as_the_reference():
    """The suite's own engine step, run on the harness's config, uses the reference's values at every
    pinned step (the suite's ``endpoints`` convention gives lr 6.25e-6 at step 1, caught here)."""
    cfg = resolve(build_config(test_dino.OVERRIDES))
    method = build_method(cfg)
    step_fn = make_train_step(cfg, method, make_optimizer(cfg.optim, method), test_dino.SPE, torch.device("cpu"))
    method.train()
    for step in range(test_dino.EPOCHS * test_dino.SPE):
        _, values, lr, wd = step_fn(test_dino.views(step), step, step // test_dino.SPE)
        got = {"lr": lr, "wd": wd, **values}
        for key, pins in DINO_REFERENCE.items():
            if step in pins:
                assert got[key] == pytest.approx(pins[step], rel=1e-9, abs=1e-15), f"step {step}: {key}"


def test_conventions_differ_where_the_references_do():
    warm = dict(base=1.0, final=0.0, warmup_epochs=1)
    f = {c: S.warmup_cosine(**warm, convention=c) for c in S.CONVENTIONS}
    assert [f["linspace"](s, 5, 15) for s in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]  # np.linspace(0, 1, 5)
    assert [f["continuous"](s, 5, 15) for s in range(5)] == [0.0, 0.2, 0.4, 0.6, 0.8]  # moco-v3: epoch / warmup
    assert f["endpoints"](14, 5, 15) == pytest.approx(0.0)  # the suite's reaches the final value
    assert f["linspace"](14, 5, 15) == pytest.approx(0.5 * (1 + torch.cos(torch.tensor(0.9 * torch.pi)).item()))
    per_epoch = S.with_unit(S.warmup_cosine(1.0, 0.0, 0, convention="continuous"), "epoch")
    assert [per_epoch(s, 5, 15) for s in (0, 4, 5, 9, 10)] == pytest.approx([1.0, 1.0, 0.75, 0.75, 0.25])


def test_dino_paper_recipe_names_the_reference_conventions():
    cfg = resolve(build_config(["method=dino", "preset=paper"]))
    assert cfg.optim.schedule_convention == "linspace" and cfg.optim.schedule_unit == "step"
    assert cfg.method.teacher_temp_unit == "epoch"
    assert cfg.backbone.pos_embed_interp == "dino"
    assert not cfg.optim.decay_norm_and_bias  # utils.get_params_groups: no decay on biases and norms


def test_dino_position_embedding_interpolation():
    """Same-size crops keep the position embedding as it is; 16 px crops of a 32 px ViT/4 take DINO's
    bicubic resampling by the factor 4.1 / 8 (not timm's exact-size antialiased resampling), computed here
    on the embedding itself."""
    torch.manual_seed(0)
    timm_vit = TimmViT("vit_tiny_patch16_224", ViTTinyConfig(depth=1, drop_path_rate=0.0))
    dino_vit = TimmViT("vit_tiny_patch16_224", ViTTinyConfig(depth=1, drop_path_rate=0.0, pos_embed_interp="dino"))
    dino_vit.load_state_dict(timm_vit.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(timm_vit(x), dino_vit(x))
    tokens = torch.randn(2, 4, 4, 192)
    pos = dino_vit.model.pos_embed
    grid = pos[:, 1:].reshape(1, 8, 8, 192).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(grid, scale_factor=(4.1 / 8, 4.1 / 8), mode="bicubic")
    want = torch.cat((dino_vit.model.cls_token.expand(2, -1, -1), tokens.reshape(2, 16, 192)), 1)
    want = want + torch.cat((pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, 16, 192)), 1)
    assert torch.allclose(dino_vit.model._pos_embed(tokens), want, atol=1e-6)
    assert not torch.allclose(timm_vit.model._pos_embed(tokens), want, atol=1e-4)


def test_moco_v2_paper_steps_bn_once_per_encoder_and_decays_every_parameter():
    """builder.py forward: view 1 through the query encoder, view 2 through the key encoder, once each
    (a second forward moved the BN running statistics twice: 1.5e-3 off after one step); SGD decays
    every parameter (main_moco.py:291-296) and the LR steps once per epoch."""
    cfg = resolve(build_config(test_moco.OVERRIDES))
    assert cfg.optim.decay_norm_and_bias and cfg.optim.schedule_unit == "epoch"
    assert cfg.optim.schedule_convention == "continuous"
    method = build_method(cfg)
    opt = make_optimizer(cfg.optim, method)
    assert all(g["regularize"] for g in opt.param_groups)
    step_fn = make_train_step(cfg, method, opt, test_moco.SPE, torch.device("cpu"))
    method.train()
    lrs = [step_fn(test_moco.views(s), s, s // test_moco.SPE)[2] for s in range(test_moco.SPE + 1)]
    assert len(set(lrs[: test_moco.SPE])) == 1 and lrs[test_moco.SPE] < lrs[0]
    for enc in (method.query, method.key):
        assert int(enc.backbone.model.bn1.num_batches_tracked) == test_moco.SPE + 1


@pytest.mark.parametrize("variant", list(test_moco_v3.VARIANTS))
def test_moco_v3_paper_recipes_name_the_reference_choices(variant):
    cfg = resolve(build_config(test_moco_v3.VARIANTS[variant] + test_moco_v3.COMMON))
    m, o = cfg.method, cfg.optim
    assert m.bn_per_view and m.ema_timing == "before_forward" and o.schedule_convention == "continuous"
    if variant == "vit":  # AdamW(model.parameters()): every parameter decayed; VisionTransformerMoCo's init
        assert o.decay_norm_and_bias and m.vit_init == "moco_v3" and m.predictor_last_bn
    else:  # moco/optimizer.py LARS: the decayed-gradient trust ratio, 1-D parameters exempt inside it
        assert o.lars_trust == "update" and not o.decay_norm_and_bias and m.predictor_last_bn is False


def test_moco_v3_forwards_each_view_on_its_own_and_takes_the_next_momentum():
    """builder.py forward: q1, q2, k1, k2 each a forward of its own (every BatchNorm steps twice per step),
    and the key encoder update before the keys with this step's momentum: the engine's after-step EMA
    takes the next step's value."""
    cfg = resolve(build_config(test_moco_v3.VARIANTS["vit"] + test_moco_v3.COMMON))
    method = build_method(cfg)
    opt = make_optimizer(cfg.optim, method)
    step_fn = make_train_step(cfg, method, opt, test_moco_v3.SPE, torch.device("cpu"))
    method.train()
    _, values, _, _ = step_fn(test_moco_v3.views(0), 0, 0)
    bns = [m for m in method.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert bns and all(int(bn.num_batches_tracked) == 2 for bn in bns)
    assert isinstance(method.predictor.layers[-1], torch.nn.BatchNorm1d)  # builder.py:122 (ViT)
    f = S.cosine(0.99, 1.0, "continuous")
    assert values["momentum"] == pytest.approx(f(1, test_moco_v3.SPE, test_moco_v3.SPE * test_moco_v3.EPOCHS))


def test_moco_v3_vit_init_is_the_references():
    """vits.py:30-49: patch projection uniform within sqrt(6 / (3 p^2 + dim)) with zero bias, Q/K/V each
    within sqrt(6 / (dim + dim)), zero biases, cls token N(0, 1e-6)."""
    cfg = resolve(build_config(test_moco_v3.VARIANTS["vit"] + test_moco_v3.COMMON))
    vit = build_method(cfg).query.backbone.model
    proj = vit.patch_embed.proj
    bound = (6.0 / (3 * 4 * 4 + 192)) ** 0.5
    assert proj.weight.abs().max() <= bound and proj.weight.abs().max() > 0.9 * bound
    assert not proj.bias.any() and not proj.weight.requires_grad
    qkv = vit.blocks[0].attn.qkv
    q_bound = (6.0 / (192 + 192)) ** 0.5
    assert qkv.weight.abs().max() <= q_bound and qkv.weight.abs().max() > 0.9 * q_bound and not qkv.bias.any()
    assert vit.cls_token.abs().max() < 1e-5


def test_lars_update_trust_is_the_decayed_gradient_norm():
    """moco-v3 optimizer.py: d = (g + wd w) * eta |w| / |g + wd w| for 2-D weights, so a weight whose
    gradient is 0 still moves by lr * eta * |w| along -w (lightly's form leaves it at lr * wd * w)."""
    w = torch.nn.Parameter(torch.full((4, 4), 0.5))
    w.grad = torch.zeros(4, 4)
    opt = LARS([{"params": [w], "weight_decay": 1e-6}], lr=0.1, momentum=0.9, trust_coefficient=1e-3, trust="update")
    opt.step()
    assert torch.allclose(w.detach(), torch.full((4, 4), 0.5 - 0.1 * 1e-3 * 2.0 * 0.5 / 2.0), rtol=0, atol=1e-9)


# deepmind-research@82a3474 byol/utils/schedules.py learning_schedule (batch 4096, base 0.2) and target_ema
# (0.996) over 15 steps with 5 of warm-up, as tests/parity/test_byol_official.py runs them (float32 LR there)
BYOL_OFFICIAL = {
    "lr": {
        0: 0.0,
        1: 0.64000004529953,
        4: 2.56000018119812,
        5: 3.200000047683716,
        6: 3.121690511703491,
        10: 1.600000023841858,
        14: 0.0783095732331276,
    },
    "momentum": {0: 0.996, 1: 0.9960437047985324, 5: 0.997, 6: 0.9973819660112501, 10: 0.999, 14: 0.9999562952014676},
}


def test_byol_paper_schedules_and_lars_are_the_officials():
    cfg = resolve(build_config(["method=byol", "preset=paper", "optim.epochs=3", "optim.warmup_epochs=1"]))
    assert cfg.optim.lars_trust == "update" and cfg.optim.schedule_convention == "continuous"
    lr_s, _ = optim_schedules(cfg.optim)
    tau_s = build_method(cfg).schedules()["momentum"]
    for step, want in BYOL_OFFICIAL["lr"].items():
        assert lr_s(step, 5, 15) == pytest.approx(want, rel=1e-7, abs=1e-15), step
    for step, want in BYOL_OFFICIAL["momentum"].items():
        assert tau_s(step, 5, 15) == pytest.approx(want, rel=1e-12), step


def test_simclr_paper_lars_keeps_each_steps_lr_in_the_buffer():
    """tf2/lars_optimizer.py classic momentum: v = m v + lr * trust * (g + wd w), w -= v; with two LRs in a
    row the second step moves by lr2 d2 + m lr1 d1, where PyTorch's form moves by lr2 (d2 + m d1)."""
    cfg = resolve(build_config(["method=simclr", "preset=paper"]))
    assert (cfg.optim.lars_trust, cfg.optim.lars_momentum_lr, cfg.optim.schedule_convention) == (
        "update",
        "inside",
        "continuous",
    )
    w = torch.nn.Parameter(torch.zeros(3))  # a 1-D parameter: no decay, no adaptation (group weight_decay 0)
    opt = LARS([{"params": [w], "weight_decay": 0.0}], lr=1.0, momentum=0.9, momentum_lr="inside")
    for lr, grad in ((0.1, 1.0), (0.5, 2.0)):
        opt.param_groups[0]["lr"] = lr
        w.grad = torch.full((3,), grad)
        opt.step()
    assert torch.allclose(w.detach(), torch.full((3,), -(0.5 * 2.0 + 0.9 * 0.1 * 1.0) - 0.1 * 1.0))


def test_byol_paper_forwards_each_view_on_its_own():
    """byol_experiment.py:182-185 applies the online and target networks to view1 and view2 one at a time:
    every BatchNorm of both networks steps twice per step."""
    cfg = resolve(build_config(["method=byol", "preset=paper", *test_byol_official.OVERRIDES[2:]]))
    method = build_method(cfg)
    opt = make_optimizer(cfg.optim, method)
    step_fn = make_train_step(cfg, method, opt, 1, torch.device("cpu"))
    method.train()
    g = torch.Generator().manual_seed(0)
    step_fn([torch.randn(4, 3, 32, 32, generator=g) for _ in range(2)], 0, 0)
    bns = [m for m in method.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert len(bns) > 20 and all(int(bn.num_batches_tracked) == 2 for bn in bns)


def test_swav_paper_projects_all_crops_together_and_adapts_every_parameter():
    """src/resnet50.py:308-322: the backbone per crop size, the projector once over every crop (its
    BatchNorm steps once a step, over global and local crops alike); LARC adapts and decays every
    parameter (main_swav.py:171-177); the warm-up starts at --start_warmup with np.linspace's end points."""
    cfg = resolve(build_config(test_swav.OVERRIDES))
    assert cfg.method.head_on_all_crops and cfg.optim.decay_norm_and_bias
    assert cfg.optim.schedule_convention == "linspace"
    method = build_method(cfg)
    opt = make_optimizer(cfg.optim, method)
    assert all(g["regularize"] for g in opt.param_groups)
    step_fn = make_train_step(cfg, method, opt, test_swav.SPE, torch.device("cpu"))
    method.train()
    lrs = [step_fn(test_swav.views(s), s, 0)[2] for s in range(test_swav.SPE)]
    bn = method.projector.layers[1]
    assert int(bn.num_batches_tracked) == test_swav.SPE
    peak = cfg.optim.lr * test_swav.BATCH / 256
    assert lrs[0] == pytest.approx(cfg.optim.warmup_start_lr) and lrs[-1] == pytest.approx(peak)
    assert resolve(build_config(["method=swav", "preset=paper"])).optim.warmup_start_lr == 0.3


def test_simclr_cifar10_projector_has_no_batchnorm_as_solo_learn():
    """solo/methods/simclr.py:48-52: Linear, ReLU, Linear; the paper recipe keeps the BN projector."""
    small = ["backbone.img_size=32", "method.hidden_dim=16", "method.out_dim=8"]
    solo = build_method(resolve(build_config(["method=simclr", "preset=cifar10", *small])))
    paper = build_method(resolve(build_config(["method=simclr", "preset=paper", "backbone=resnet18", *small])))
    has_bn = lambda m: any(isinstance(x, torch.nn.BatchNorm1d) for x in m.projector.modules())  # noqa: E731
    assert not has_bn(solo) and has_bn(paper)


# solo/utils/lr_scheduler.py LinearWarmupCosineAnnealingLR for tests/parity/test_solo_learn.py's SimCLR run
# (lr 0.4 at batch 16, 1 warm-up epoch of 5 steps, 15 steps, warmup_start_lr 3e-5): the scheduler's own values
SOLO_SIMCLR_LR = {0: 3e-05, 1: 0.0062725, 4: 0.025, 5: 0.025, 6: 0.02438820645, 10: 0.0125, 14: 0.0006117935463}


@pytest.mark.parametrize("method", ["simclr", "byol", "moco", "moco_v3", "swav", "dino"])
def test_cifar10_recipes_step_and_forward_as_solo_learn(method):
    """solo-learn's training_step forwards each crop on its own; its scheduler and momentum updater step
    with np.linspace-like end points from warmup_start_lr 3e-5."""
    cfg = resolve(build_config([f"method={method}", "preset=cifar10"]))
    assert cfg.method.bn_per_view and cfg.optim.schedule_convention == "linspace"
    assert cfg.optim.warmup_start_lr == 3e-5 and cfg.optim.lr_scaling == "linear"
    if method == "simclr":
        o = resolve(build_config(["method=simclr", "preset=cifar10", *test_solo_learn.TINY])).optim
        lr_s, _ = optim_schedules(o)
        for step, want in SOLO_SIMCLR_LR.items():
            assert lr_s(step, 5, 15) == pytest.approx(want, rel=1e-9), step


def test_paper_crops_resample_as_their_references():
    """torchvision's RandomResizedCrop default (bilinear) in MoCo v2 / v3 and SwAV, bicubic in DINO; both
    crop paths follow data.aug.interpolation."""
    want = {
        ("moco", "paper"): "bilinear",
        ("moco_v3", "paper"): "bilinear",
        ("moco_v3", "paper-resnet50"): "bilinear",
        ("swav", "paper"): "bilinear",
        ("dino", "paper"): "bicubic",
        ("simclr", "cifar10"): "bicubic",
    }
    for (method, preset), mode in want.items():
        assert build_config([f"method={method}", f"preset={preset}"]).data.aug.interpolation == mode
    x = (torch.rand(4, 3, 48, 48, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    outs = []
    for mode in ("bicubic", "bilinear"):
        cfg = resolve(
            build_config(
                [
                    "method=swav",
                    "preset=paper",
                    "data.global_size=32",
                    "data.local_size=16",
                    f"data.aug.interpolation={mode}",
                    "data.n_local=0",
                ]
            )
        )
        outs.append(DeviceMultiCrop(crop_policy(cfg.data), (0.5,) * 3, (0.25,) * 3)(x, 3))
    assert all(a.shape == b.shape for a, b in zip(*outs)) and not torch.allclose(outs[0][0], outs[1][0])
