"""The Gaussian blur of the crop policies: ``data.aug.blur_kernel=pil`` blurs as the references' PIL
transforms do (DINO, MoCo, SwAV, solo-learn), on the loader path exactly and on the device path to PIL's
strength; ``tenth`` (a kernel of ~10% of the crop) is far weaker at 32 px."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from ssl_bench.config import AugConfig, build_config
from ssl_bench.data.device_aug import gaussian_blur
from ssl_bench.data.multicrop import PILGaussianBlur, blur_kernel


def _image(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(3, 32, 32, generator=g) * 255).to(torch.uint8)


def _pil_blur(x: torch.Tensor, radius: float) -> torch.Tensor:
    pil = Image.fromarray(x.permute(1, 2, 0).numpy()).filter(ImageFilter.GaussianBlur(radius=radius))
    return torch.from_numpy(np.array(pil)).permute(2, 0, 1).float() / 255


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_device_blur_with_pil_kernel_has_pils_strength_at_32px(sigma):
    """Strength as the left-over standard deviation of a noise image: within 4% of PIL's (its box-filter
    approximation aside); the 3-tap kernel of ``tenth`` at sigma 2 leaves more than twice PIL's."""
    x = _image()
    ref = _pil_blur(x, sigma).std().item()
    k = blur_kernel(32, AugConfig(blur_kernel="pil"))
    assert k == 13
    got = gaussian_blur(x.float()[None] / 255, k, torch.tensor([sigma]))[0].std().item()
    assert got == pytest.approx(ref, rel=0.04)
    if sigma == 2.0:
        weak = gaussian_blur(x.float()[None] / 255, blur_kernel(32, AugConfig()), torch.tensor([sigma]))[0]
        assert weak.std().item() > 2 * ref


def test_loader_blur_is_pils_with_a_seeded_radius():
    x = _image(1)
    blur = PILGaussianBlur([0.1, 2.0])
    torch.manual_seed(5)
    radius = 0.1 + 1.9 * torch.rand(()).item()
    torch.manual_seed(5)
    out = blur(Image.fromarray(x.permute(1, 2, 0).numpy()))
    assert torch.equal(torch.from_numpy(np.array(out)).permute(2, 0, 1).float() / 255, _pil_blur(x, radius))
    torch.manual_seed(5)
    assert torch.equal(blur(x).float() / 255, _pil_blur(x, radius))  # uint8 tensors take the same path


def test_recipes_whose_references_blur_with_pil_say_so():
    for method, preset in [
        ("dino", "paper"),
        ("moco", "paper"),
        ("moco_v3", "paper"),
        ("moco_v3", "paper-resnet50"),
        ("swav", "paper"),
        ("simclr", "cifar10"),
        ("swav", "cifar10"),
        ("moco", "cifar10"),
    ]:
        assert build_config([f"method={method}", f"preset={preset}"]).data.aug.blur_kernel == "pil", (method, preset)
    for method, preset in [("simclr", "paper"), ("byol", "paper")]:  # TF: a kernel of 10% of the side
        assert build_config([f"method={method}", f"preset={preset}"]).data.aug.blur_kernel == "tenth"
