import pytest
import torch
from PIL import Image

from ssl_bench.config import build_config
from ssl_bench.data import MultiCropTransform, ViewSpec, build_datasets
from ssl_bench.errors import UserError


@pytest.mark.parametrize("n_global,n_local", [(2, 0), (2, 6), (3, 2)])
def test_multicrop_shapes_and_counts(n_global, n_local):
    t = MultiCropTransform(ViewSpec(n_global, n_local), 32, 16)
    img = Image.new("RGB", (40, 30), (120, 30, 200))
    crops = t(img)
    assert len(crops) == n_global + n_local
    assert all(c.shape == (3, 32, 32) for c in crops[:n_global])
    assert all(c.shape == (3, 16, 16) for c in crops[n_global:])
    assert all(c.dtype == torch.float32 for c in crops)


def test_crops_differ_between_views():
    torch.manual_seed(0)
    t = MultiCropTransform(ViewSpec(2, 0), 32, 16)
    img = Image.effect_noise((48, 48), 64).convert("RGB")
    a, b = t(img)
    assert not torch.allclose(a, b)


def test_digits_split_is_fixed_and_stratified():
    cfg = build_config([]).data
    s1, s2 = build_datasets("digits", cfg), build_datasets("digits", cfg)
    assert len(s1.train) == 1437 and len(s1.test) == 360
    assert s1.train.targets == s2.train.targets
    assert s1.train[0][0].size == (32, 32)


def test_imagefolder_and_per_class_subset(image_folder):
    cfg = build_config(["dataset=imagefolder", f"data.root={image_folder}", "data.train_per_class=3"])
    s = build_datasets("imagefolder", cfg.data)
    assert len(s.train) == 6 and sorted(s.train.targets) == [0, 0, 0, 1, 1, 1]
    # the first 3 sorted file names of each class
    assert [p.rsplit("/", 1)[-1] for p, _ in (s.train.base.samples[i] for i in s.train.indices)][:3] == [
        "000.png", "001.png", "002.png"]


def test_validation_split_is_disjoint_from_pretraining_and_test(image_folder):
    cfg = build_config(["dataset=imagefolder", f"data.root={image_folder}", "data.train_per_class=3",
                        "data.val_per_class=2"])
    s = build_datasets("imagefolder", cfg.data)
    names = lambda d: [d.base.samples[i][0] for i in d.indices]  # noqa: E731
    assert len(s.test) == 4 and sorted(s.test.targets) == [0, 0, 1, 1]
    assert all("/train/" in p for p in names(s.test))
    assert not set(names(s.test)) & set(names(s.train))
    assert [p.rsplit("/", 1)[-1] for p in names(s.test)][:2] == ["003.png", "004.png"]
    with pytest.raises(UserError, match="val_per_class needs data.train_per_class"):
        build_datasets("imagefolder", build_config(["dataset=imagefolder", f"data.root={image_folder}",
                                                    "data.val_per_class=2"]).data)


def test_cifar10_accepts_image_folder_tree(image_folder):
    cfg = build_config(["dataset=cifar10", f"data.root={image_folder}"])
    assert len(build_datasets("cifar10", cfg.data).test) == 16


def test_missing_root_and_layout_errors(tmp_path):
    with pytest.raises(UserError, match="needs data.root"):
        build_datasets("cifar10", build_config(["dataset=cifar10"]).data)
    with pytest.raises(UserError, match="does not exist"):
        build_datasets("imagefolder", build_config(["dataset=imagefolder", f"data.root={tmp_path / 'nope'}"]).data)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no train/ folder"):
        build_datasets("imagefolder", build_config(["dataset=imagefolder", f"data.root={tmp_path / 'empty'}"]).data)


def test_corrupt_image_names_the_file(image_folder):
    bad = image_folder / "train" / "class0" / "000.png"
    bad.write_bytes(b"not a png")
    s = build_datasets("imagefolder", build_config(["dataset=imagefolder", f"data.root={image_folder}"]).data)
    with pytest.raises(UserError, match=r"cannot read image file .*class0/000\.png"):
        s.train[0]
