"""``data.augment=device``: the batched on-device multi-crop (kornia) draws the crops the method asks
for, reproducibly per (seed, step), per image, with the loader pipeline's policy."""

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_bench.config import build_config
from ssl_bench.data.device_aug import DeviceMultiCrop, base_transform
from ssl_bench.data.multicrop import CropPolicy, MultiCropTransform, ViewSpec
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


def test_one_pipeline_call_per_policy_and_each_crop_drawn_afresh():
    """Crops of one policy are drawn in one kornia call (its ~2,000 small ops are per call, not per
    image): 4 globals + 6 locals make three calls, and two crops of the same image from one call differ."""
    aug = DeviceMultiCrop(CropPolicy(ViewSpec(4, 6), 32, 16), mean=MEAN, std=STD)
    calls = {"global1": 0, "global2": 0, "local": 0}
    for name in calls:
        getattr(aug, name).register_forward_hook(lambda *a, name=name: calls.__setitem__(name, calls[name] + 1))
    crops = aug(_images(8), seed=3)
    assert calls == {"global1": 1, "global2": 1, "local": 1}
    assert [tuple(c.shape) for c in crops] == [(8, 3, 32, 32)] * 4 + [(8, 3, 16, 16)] * 6
    assert all(c.is_contiguous() for c in crops)
    for i, j in [(0, 2), (1, 3), (4, 5), (4, 9)]:  # same policy, same images: different crops per image
        assert all(not torch.equal(crops[i][k], crops[j][k]) for k in range(8)), (i, j)


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
