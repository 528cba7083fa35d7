import pytest
import torch

from ssl_bench.backbones import build_backbone
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
