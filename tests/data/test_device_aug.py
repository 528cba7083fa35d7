"""``data.augment=device``: the batched on-device multi-crop draws the crops the method asks
for, reproducibly per (seed, step), per image, with the loader pipeline's policy."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as TF

from ssl_bench.config import AugConfig, build_config
from ssl_bench.data.device_aug import CropParams, DeviceMultiCrop, apply_crops, base_transform, sample_crops
from ssl_bench.data.multicrop import CropPolicy, MultiCropTransform, ViewSpec
from ssl_bench.engine.opcount import count_ops
from ssl_bench.engine.train import build_method, make_optimizer, make_train_step, resolve
from tests.conftest import TINY

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _images(n=16, size=32, seed=0):
    """Smooth random colour images (blobs), uint8 (n, 3, size, size)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    x = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return (x * 255).round().to(torch.uint8)


def test_crop_counts_sizes_and_normalisation():
    aug = DeviceMultiCrop(CropPolicy(ViewSpec(2, 3), 32, 16), mean=MEAN, std=STD)
    crops = aug(_images(), seed=0)
    assert [tuple(c.shape) for c in crops] == [(16, 3, 32, 32)] * 2 + [(16, 3, 16, 16)] * 3
    assert all(c.dtype == torch.float32 and torch.isfinite(c).all() for c in crops)
    lo = (0 - torch.tensor(MEAN)) / torch.tensor(STD)
    hi = (1 - torch.tensor(MEAN)) / torch.tensor(STD)
    for c in crops:  # normalised values of [0, 1] pixels, per channel
        assert (c.amin(dim=(0, 2, 3)) >= lo - 1e-5).all() and (c.amax(dim=(0, 2, 3)) <= hi + 1e-5).all()


def test_same_seed_same_crops_other_seed_and_other_image_differ():
    aug = DeviceMultiCrop(CropPolicy(ViewSpec(2, 2), 32, 16), mean=MEAN, std=STD)
    x = _images(8)
    a, b, c = aug(x, seed=5), aug(x, seed=5), aug(x, seed=6)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], c[0])
    # one image repeated across the batch still gets a different crop per sample
    same = aug(x[:1].repeat(8, 1, 1, 1), seed=5)[0]
    assert not torch.equal(same[0], same[1])
    # and the global RNG is left alone
    torch.manual_seed(1)
    r0 = torch.rand(1)
    torch.manual_seed(1)
    aug(x, seed=5)
    assert torch.equal(torch.rand(1), r0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_check.sh runs it)")
def test_on_cuda_same_seed_same_crops_and_the_gpu_random_stream_is_left_alone():
    dev = torch.device("cuda")
    aug = DeviceMultiCrop(CropPolicy(ViewSpec(2, 2), 32, 16), mean=MEAN, std=STD).to(dev)
    x = _images(8).to(dev)
    a, b = aug(x, seed=5), aug(x, seed=5)
    assert all(u.is_cuda and torch.equal(u, v) for u, v in zip(a, b))
    torch.cuda.manual_seed(1)
    r0 = torch.rand(4, device=dev)
    torch.cuda.manual_seed(1)
    aug(x, seed=5)
    assert torch.equal(torch.rand(4, device=dev), r0)


def test_a_call_launches_the_same_few_ops_whatever_the_batch_and_the_crop_count():
    """Every crop of one size is drawn in one batch: the ops launched per call do not grow with the batch or
    with the number of crops (the kornia pipeline launched 955-1,443 kernels per call), and none waits for the device;
    two crops of one image from one call still differ."""
    small = DeviceMultiCrop(CropPolicy(ViewSpec(2, 2), 32, 16), mean=MEAN, std=STD)
    many = DeviceMultiCrop(CropPolicy(ViewSpec(4, 6), 32, 16), mean=MEAN, std=STD)
    x8, x64 = _images(8), _images(64)
    ops = count_ops(lambda: small(x8, 0))
    assert ops["syncs"] == 0
    assert count_ops(lambda: small(x64, 0))["kernels"] == ops["kernels"]
    assert count_ops(lambda: many(x8, 0))["kernels"] == ops["kernels"]
    assert ops["kernels"] < 700, ops  # the kornia pipeline: 1,427 for these crops, 955 for two globals alone
    crops = many(x8, seed=3)
    assert [tuple(c.shape) for c in crops] == [(8, 3, 32, 32)] * 4 + [(8, 3, 16, 16)] * 6
    assert all(c.is_contiguous() for c in crops)
    for i, j in [(0, 2), (1, 3), (4, 5), (4, 9)]:  # same policy, same images: different crops per image
        assert all(not torch.equal(crops[i][k], crops[j][k]) for k in range(8)), (i, j)


def _params(n, **kw) -> CropParams:
    """``n`` crops of the whole image, unflipped, no colour change; ``kw`` replaces fields."""
    base = dict(
        box=torch.tensor([[0.0, 0.0, 32.0, 32.0]]).repeat(n, 1),
        flip=torch.zeros(n, dtype=torch.bool),
        factors=torch.tensor([[1.0, 1.0, 1.0, 0.0]]).repeat(n, 1),
        order=torch.arange(4).repeat(n, 1),
        grey=torch.zeros(n, dtype=torch.bool),
        sigma=torch.zeros(n),
        solarize=torch.zeros(n, dtype=torch.bool),
    )
    return CropParams(**{**base, **kw})


def test_crop_and_flip_resample_torchvision_s_box():
    """The one sampling grid puts each crop where torchvision's resized_crop (bicubic, no antialias) + hflip
    puts it: equal inside the crop, away from its edges (there the grid reads the image around the box where
    torchvision repeats the box's edge pixels)."""
    n, size = 24, 32
    x = _images(n, seed=4).float() / 255
    g = torch.Generator().manual_seed(0)
    h = torch.randint(14, 33, (n,), generator=g).float()
    w = torch.randint(14, 33, (n,), generator=g).float()
    top = (torch.rand(n, generator=g) * (33 - h)).floor()
    left = (torch.rand(n, generator=g) * (33 - w)).floor()
    flip = torch.rand(n, generator=g) < 0.5
    out = apply_crops(x, _params(n, box=torch.stack([top, left, h, w], 1), flip=flip), size)
    for k in range(n):
        i, j, hh, ww = (int(v) for v in (top[k], left[k], h[k], w[k]))
        ref = TF.resized_crop(x[k], i, j, hh, ww, [size, size], T.InterpolationMode.BICUBIC, antialias=False)
        ref = (TF.horizontal_flip(ref) if flip[k] else ref).clamp(0, 1)
        inner = slice(size // 4, 3 * size // 4)
        torch.testing.assert_close(out[k][:, inner, inner], ref[:, inner, inner], atol=1e-4, rtol=0)
    assert not torch.equal(out[flip][:, :, :, 0], out[flip][:, :, :, -1])


def test_colour_operations_equal_torchvision_s_per_crop():
    """Jitter (each crop's own factors and order), greyscale, blur and solarisation of a batch equal
    torchvision's functional ops applied crop by crop with the same draws."""
    n = 48
    aug = AugConfig(jitter_p=0.9, grey_p=0.3)
    p = sample_crops(
        n, 32, 32, (1.0, 1.0), aug, torch.full((n,), 0.5), torch.full((n,), 0.5), torch.Generator().manual_seed(1)
    )
    p.box = _params(n).box  # the whole image: the colour operations alone
    p.flip = torch.zeros(n, dtype=torch.bool)
    x = _images(n, seed=5).float() / 255
    out = apply_crops(x, p, 32)
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for k in range(n):
        y = x[k]
        for op in p.order[k].tolist():
            f = p.factors[k, op].item()
            if f != (0.0 if op == 3 else 1.0):
                y = ops[op](y, f)
        if p.grey[k]:
            y = TF.rgb_to_grayscale(y, num_output_channels=3)
        if p.sigma[k] > 0:
            y = TF.gaussian_blur(y, [3, 3], [p.sigma[k].item()] * 2)
        if p.solarize[k]:
            y = TF.solarize(y, 128 / 255)
        torch.testing.assert_close(out[k], y, atol=2e-5, rtol=0, msg=f"crop {k}")
    # every operation occurred in the draw, in every position of the order
    assert p.grey.any() and (p.sigma > 0).any() and p.solarize.any() and (p.factors[:, 3] == 0).any()
    assert {tuple(o) for o in p.order.tolist()} >= {(0, 1, 2, 3), (3, 2, 1, 0)} or len(
        {tuple(o) for o in p.order.tolist()}
    ) > 10


def test_random_draws_follow_torchvision_s_distributions():
    """Box area and aspect ratio as torchvision's RandomResizedCrop.get_params draws them (two-sample KS),
    and each operation with the policy's probability, the jitter factors in ColorJitter's ranges and all 24
    orders equally likely."""
    from scipy.stats import ks_2samp

    n, scale = 20_000, (0.08, 1.0)
    aug = AugConfig()
    p = sample_crops(
        n, 32, 32, scale, aug, torch.full((n,), 0.1), torch.full((n,), 0.2), torch.Generator().manual_seed(0)
    )
    torch.manual_seed(0)
    img = torch.zeros(3, 32, 32)
    ref = torch.tensor([T.RandomResizedCrop.get_params(img, list(scale), [3 / 4, 4 / 3]) for _ in range(n)]).float()
    top, left, h, w = p.box.T
    assert ks_2samp((h * w).numpy(), (ref[:, 2] * ref[:, 3]).numpy()).pvalue > 0.001
    assert ks_2samp((w / h).numpy(), (ref[:, 3] / ref[:, 2]).numpy()).pvalue > 0.001
    assert ks_2samp(top.numpy(), ref[:, 0].numpy()).pvalue > 0.001
    assert ((top >= 0) & (top + h <= 32) & (left >= 0) & (left + w <= 32)).all()
    rates = {
        "flip": p.flip,
        "grey": p.grey,
        "blur": p.sigma > 0,
        "solarize": p.solarize,
        "jitter": (p.factors != torch.tensor([1.0, 1.0, 1.0, 0.0])).any(1),
    }
    want = {"flip": aug.flip_p, "grey": aug.grey_p, "blur": 0.1, "solarize": 0.2, "jitter": aug.jitter_p}
    for name, hit in rates.items():
        assert abs(hit.float().mean().item() - want[name]) < 4 * (want[name] * (1 - want[name]) / n) ** 0.5, name
    on = rates["jitter"]
    b, c, s, hue = aug.jitter
    lo, hi = torch.tensor([1 - b, 1 - c, 1 - s, -hue]), torch.tensor([1 + b, 1 + c, 1 + s, hue])
    f = p.factors[on]
    assert ((f >= lo) & (f <= hi)).all() and (f.mean(0) - (lo + hi) / 2).abs().max() < 0.01
    s_on = p.sigma[p.sigma > 0]
    assert s_on.min() >= aug.blur_sigma[0] and s_on.max() <= aug.blur_sigma[1]
    counts = torch.unique(p.order, dim=0, return_counts=True)[1]
    assert len(counts) == 24 and counts.min() > 0.8 * n / 24 and counts.max() < 1.2 * n / 24


def test_greyscale_probability_matches_the_policy():
    """p(grey) = 0.2 per crop: channels exactly equal only then (colour jitter keeps colour)."""
    aug = DeviceMultiCrop(CropPolicy(ViewSpec(1, 0), 32, 16, blur=False), mean=(0.5,) * 3, std=(0.5,) * 3)
    x = _images(256, seed=1)
    grey = (
        torch.cat(
            [
                (c[:, 0] == c[:, 1]).flatten(1).all(1) & (c[:, 1] == c[:, 2]).flatten(1).all(1)
                for s in range(4)
                for c in aug(x, seed=s)
            ]
        )
        .float()
        .mean()
        .item()
    )
    assert 0.14 < grey < 0.26, grey


def test_same_policy_as_the_loader_pipeline_in_distribution():
    """Per-crop mean and spread of the device crops match the PIL loader's on the same images."""
    x = _images(512, seed=2)
    spec = ViewSpec(2, 2)
    dev = DeviceMultiCrop(CropPolicy(spec, 32, 16), mean=MEAN, std=STD)(x, seed=0)
    t = MultiCropTransform(CropPolicy(spec, 32, 16), mean=MEAN, std=STD)
    torch.manual_seed(0)
    pil = [t(Image.fromarray(img.permute(1, 2, 0).numpy())) for img in x]
    for i in range(4):
        d = dev[i]
        p = torch.stack([crops[i] for crops in pil])
        assert d.shape == p.shape
        # measured on 1,024 images: means within 0.05, spreads within 0.011 (normalised units)
        assert abs(d.mean().item() - p.mean().item()) < 0.1, i
        assert abs(d.std(dim=(1, 2, 3)).mean().item() - p.std(dim=(1, 2, 3)).mean().item()) < 0.04, i


def test_base_transform_gives_one_size_uint8_rgb():
    t = base_transform(32)
    for img in (Image.new("L", (40, 64), 7), Image.new("RGB", (32, 32), (1, 2, 3))):
        out = t(img)
        assert out.dtype == torch.uint8 and tuple(out.shape) == (3, 32, 32)


def test_engine_step_on_an_image_batch():
    """data.augment=device: the step takes the uint8 image batch, draws the method's crops, trains;
    the same step on the same batch is reproducible; a crop list path refuses an image batch."""
    over = TINY + [
        "method=dino",
        "method.out_dim=64",
        "method.hidden_dim=32",
        "method.bottleneck_dim=16",
        "data.n_local=2",
        "data.augment=device",
    ]
    losses = []
    for _ in range(2):
        cfg = resolve(build_config(over))
        torch.manual_seed(0)
        m = build_method(cfg)
        step = make_train_step(cfg, m, make_optimizer(cfg.optim, m), 4, torch.device("cpu"), (MEAN, STD))
        out, *_ = step(_images(4, 16), 0, 0)
        losses.append(out["loss"].item())
    assert np.isfinite(losses[0]) and losses[0] == losses[1]
    cfg = resolve(build_config(TINY + ["method=simclr"]))
    m = build_method(cfg)
    step = make_train_step(cfg, m, make_optimizer(cfg.optim, m), 4, torch.device("cpu"), (MEAN, STD))
    with pytest.raises(ValueError, match="data.augment=device"):
        step(_images(4, 16), 0, 0)


def test_device_load_size_ships_small_images_and_crops_at_full_size():
    """data.device_load_size: the loader ships images at that size (here 8 px), the device still draws
    crops at global_size; a size below 1 is refused naming the key."""
    from ssl_bench.data.datasets import DataSplits, ListDataset
    from ssl_bench.engine.train import Trainer, device_augmenter
    from ssl_bench.errors import UserError

    cfg = resolve(
        build_config(TINY + ["method=simclr", "data.augment=device", "data.device_load_size=8", "optim.batch_size=4"])
    )
    pil = [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in _images(8, 32)]
    splits = DataSplits(ListDataset(pil, [0] * 8), ListDataset(pil[:1], [0]), 10, MEAN, STD)
    batch, _ = next(iter(Trainer(cfg).training_batches(splits, 0)))
    assert batch.dtype == torch.uint8 and tuple(batch.shape) == (4, 3, 8, 8)
    crops = device_augmenter(cfg, (MEAN, STD), torch.device("cpu"))(batch, 0)
    assert tuple(crops[0].shape) == (4, 3, cfg.data.global_size, cfg.data.global_size) and cfg.data.global_size > 8
    with pytest.raises(UserError, match="data.device_load_size"):
        resolve(build_config(TINY + ["data.device_load_size=0"]))
