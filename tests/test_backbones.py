import pytest
import torch

from ssl_bench.backbones import ResNetConfig, build_backbone
from ssl_bench.config import build_config


def _bb(*over):
    """The backbone alone; ViTs at patch 4 (vit_tiny's own, which the DINO demo recipe changes to 8)."""
    vit = any(o.startswith("backbone=vit") for o in over)
    return build_backbone(build_config(list(over) + (["backbone.patch_size=4"] if vit else [])).backbone)


def test_vit_dynamic_size_and_attention():
    bb = _bb("backbone=vit_tiny", "backbone.img_size=16", "backbone.depth=2").eval()
    assert bb.embed_dim == 192
    assert bb(torch.randn(2, 3, 16, 16)).shape == (2, 192)
    assert bb(torch.randn(2, 3, 8, 8)).shape == (2, 192)  # local crop of another size
    attn = bb.last_attention(torch.randn(2, 3, 16, 16))
    assert attn.shape == (2, 3, 17, 17)
    assert torch.allclose(attn.sum(-1), torch.ones(2, 3, 17))
    assert bb.patch_features(torch.randn(2, 3, 16, 16)).shape == (2, 4, 4, 192)


def test_vit_attention_matches_timm_forward():
    """Our attention map recomputation gives the same block output as timm's fused attention."""
    bb = _bb("backbone=vit_tiny", "backbone.img_size=16", "backbone.depth=2").eval()
    x = torch.randn(1, 3, 16, 16)
    tokens = bb._tokens_before_last_block(x)
    blk = bb.model.blocks[-1]
    attn = bb.last_attention(x)
    y = blk.norm1(tokens)
    b, n, c = y.shape
    v = blk.attn.qkv(y).reshape(b, n, 3, 3, c // 3).permute(2, 0, 3, 1, 4)[2]
    ours = blk.attn.proj((attn @ v).transpose(1, 2).reshape(b, n, c))
    assert torch.allclose(ours, blk.attn(y), atol=1e-5)


@pytest.mark.parametrize("stem,expected_hw", [(True, 4), (False, 1)])
def test_resnet_cifar_stem(stem, expected_hw):
    bb = _bb("backbone=resnet18", f"backbone.cifar_stem={str(stem).lower()}").eval()
    x = torch.randn(2, 3, 32, 32)
    assert bb(x).shape == (2, 512)
    assert bb.patch_features(x).shape[1] == expected_hw
    with pytest.raises(NotImplementedError, match="ViT"):
        bb.last_attention(x)


def test_vit_heads_follow_the_config_and_moco_v3_s_vit_s_has_12():
    """backbone.num_heads (MoCo v3's ViT-S: 12 heads, moco-v3 vits.py; timm's: 6); a count that does not
    divide the width is a one-line error naming the key."""
    from ssl_bench.engine.train import resolve
    from ssl_bench.errors import ConfigError

    assert _bb("backbone=vit_small", "backbone.depth=1").num_heads == 6
    cfg = resolve(build_config(["method=moco_v3", "preset=paper", "backbone.depth=1"]))
    bb = build_backbone(cfg.backbone)
    assert bb.num_heads == 12 and bb.embed_dim == 384
    assert bb.last_attention(torch.randn(1, 3, 32, 32)).shape == (1, 12, 5, 5)
    with pytest.raises(ConfigError, match=r"'backbone.num_heads': 7; valid: a divisor of .* width 384"):
        _bb("backbone=vit_small", "backbone.depth=1", "backbone.num_heads=7")


def test_cifar_stem_padding_as_solo_learn():
    """backbone.stem_padding=2 is solo-learn's CIFAR stem (Conv2d(3, 64, 3, 1, padding=2)): 34 x 34 maps
    after it, 5 x 5 after the last stage (4 x 4 with the default padding 1)."""
    x = torch.randn(2, 3, 32, 32)
    solo = build_backbone(ResNetConfig(name="resnet18", stem_padding=2))
    plain = build_backbone(ResNetConfig(name="resnet18"))
    assert solo.model.conv1.padding == (2, 2) and solo.stem_padding == 2
    assert solo.patch_features(x).shape[1:3] == (5, 5) and plain.patch_features(x).shape[1:3] == (4, 4)
