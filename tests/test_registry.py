import pytest

from ssl_bench.errors import UserError
from ssl_bench.registry import BACKBONES, DATASETS, EVALS, METHODS, Registry


def test_duplicate_name_refused():
    reg = Registry("thing")
    reg.register("a")(object)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(int)


def test_builtin_plugins_registered():
    assert "dino" in METHODS.names()
    assert {"vit_tiny", "vit_small", "resnet18", "resnet50"} <= set(BACKBONES.names())
    assert {"digits", "cifar10", "cifar100", "stl10", "imagefolder"} <= set(DATASETS.names())
    assert "knn" in EVALS.names()


def test_unknown_name_suggests():
    with pytest.raises(UserError, match="did you mean 'resnet18'"):
        BACKBONES.get("resnet19")
