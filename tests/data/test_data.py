import pytest
import torch
from PIL import Image

from ssl_bench.config import build_config
from ssl_bench.data import CropPolicy, MultiCropTransform, ViewSpec, build_datasets
from ssl_bench.errors import UserError


@pytest.mark.parametrize("n_global,n_local", [(2, 0), (2, 6), (3, 2)])
def test_multicrop_shapes_and_counts(n_global, n_local):
    t = MultiCropTransform(CropPolicy(ViewSpec(n_global, n_local), 32, 16))
    img = Image.new("RGB", (40, 30), (120, 30, 200))
    crops = t(img)
    assert len(crops) == n_global + n_local
    assert all(c.shape == (3, 32, 32) for c in crops[:n_global])
    assert all(c.shape == (3, 16, 16) for c in crops[n_global:])
    assert all(c.dtype == torch.float32 for c in crops)


def test_crops_differ_between_views():
    torch.manual_seed(0)
    t = MultiCropTransform(CropPolicy(ViewSpec(2, 0), 32, 16))
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
    cfg = build_config(["preset=default", "dataset=imagefolder", f"data.root={image_folder}", "data.train_per_class=3"])
    s = build_datasets("imagefolder", cfg.data)
    assert len(s.train) == 6 and sorted(s.train.targets) == [0, 0, 0, 1, 1, 1]
    # the first 3 sorted file names of each class
    assert [p.rsplit("/", 1)[-1] for p, _ in (s.train.base.samples[i] for i in s.train.indices)][:3] == [
        "000.png",
        "001.png",
        "002.png",
    ]


def test_validation_split_is_disjoint_from_pretraining_and_test(image_folder):
    cfg = build_config(
        ["preset=default", "dataset=imagefolder", f"data.root={image_folder}", "data.train_per_class=3", "data.val_per_class=2"]
    )
    s = build_datasets("imagefolder", cfg.data)
    names = lambda d: [d.base.samples[i][0] for i in d.indices]  # noqa: E731
    assert len(s.test) == 4 and sorted(s.test.targets) == [0, 0, 1, 1]
    assert all("/train/" in p for p in names(s.test))
    assert not set(names(s.test)) & set(names(s.train))
    assert [p.rsplit("/", 1)[-1] for p in names(s.test)][:2] == ["003.png", "004.png"]
    with pytest.raises(UserError, match="val_per_class needs data.train_per_class"):
        build_datasets(
            "imagefolder",
            build_config(["preset=default", "dataset=imagefolder", f"data.root={image_folder}", "data.val_per_class=2"]).data,
        )


def test_cifar10_accepts_image_folder_tree(image_folder):
    cfg = build_config(["preset=default", "dataset=cifar10", f"data.root={image_folder}"])
    assert len(build_datasets("cifar10", cfg.data).test) == 16


def test_missing_root_and_layout_errors(tmp_path):
    with pytest.raises(UserError, match="needs data.root"):
        build_datasets("cifar10", build_config(["preset=default", "dataset=cifar10"]).data)
    with pytest.raises(UserError, match="does not exist"):
        build_datasets("imagefolder", build_config(["preset=default", "dataset=imagefolder", f"data.root={tmp_path / 'nope'}"]).data)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no train/ folder"):
        build_datasets("imagefolder", build_config(["preset=default", "dataset=imagefolder", f"data.root={tmp_path / 'empty'}"]).data)


def test_corrupt_image_names_the_file(image_folder):
    bad = image_folder / "train" / "class0" / "000.png"
    bad.write_bytes(b"not a png")
    s = build_datasets("imagefolder", build_config(["preset=default", "dataset=imagefolder", f"data.root={image_folder}"]).data)
    with pytest.raises(UserError, match=r"cannot read image file .*class0/000\.png"):
        s.train[0]


def test_seeded_loader_samples_are_reproducible_and_leave_the_global_rng_alone():
    """Each sample's crops come from (seed, epoch, index) alone, whatever was drawn before, and drawing
    them does not move the process's own generator (the training step's randomness)."""
    import numpy as np
    from PIL import Image

    from ssl_bench.data.datasets import ListDataset
    from ssl_bench.data.loader import SeededTransformDataset
    from ssl_bench.data.multicrop import CropPolicy, MultiCropTransform, ViewSpec

    imgs = [Image.fromarray(np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8)) for i in range(3)]
    ds = SeededTransformDataset(
        ListDataset(imgs, [0] * 3), MultiCropTransform(CropPolicy(ViewSpec(2, 1), 32, 16)), seed=3, epoch=1
    )
    torch.manual_seed(5)
    expected = torch.rand(4)
    torch.manual_seed(5)
    first = ds[1][0]
    assert torch.equal(torch.rand(4), expected)
    torch.rand(100)  # other draws in between change nothing
    assert all(torch.equal(a, b) for a, b in zip(first, ds[1][0]))
    assert not torch.equal(first[0], ds[2][0][0])
    other_epoch = SeededTransformDataset(ds.base, ds.transform, seed=3, epoch=2)
    assert not torch.equal(first[0], other_epoch[1][0][0])


@pytest.mark.parametrize("shape,mode", [((32, 32), "RGB"), ((48, 40), "RGB"), ((32, 32), "RGBA")])
def test_uint8_eval_path_equals_the_float_eval_transform(shape, mode):
    """Feature extraction ships uint8 images and normalises per batch; the pixels and the arithmetic
    match the per-image float transform, on the direct-copy path (32 px RGB) and the resize path."""
    import numpy as np

    from ssl_bench.data.datasets import EvalImage, eval_transform, normalize_batch

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (shape[1], shape[0], len(mode)), dtype=np.uint8), mode=mode)
    if mode != "RGB":
        img = img.convert("RGB")
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    fast = EvalImage(32)(img)
    assert fast.dtype == torch.uint8 and fast.shape == (3, 32, 32)
    assert torch.equal(fast, EvalImage(32).slow(img).as_subclass(torch.Tensor))
    ref = eval_transform(32, mean, std)(img)
    torch.testing.assert_close(
        normalize_batch(fast[None], mean, std)[0], ref.as_subclass(torch.Tensor), rtol=0, atol=1e-6
    )


def test_one_loader_for_all_epochs_equals_per_epoch_loaders():
    """The engine's single multi-epoch loader (workers started once) yields exactly the batches and
    crops of one loader per epoch, including a first epoch entered mid-way (resume), with or without a
    worker process."""
    from ssl_bench.data.datasets import ListDataset
    from ssl_bench.data.loader import GlobalBatchSampler, RunSampler, run_loader

    sampler = RunSampler(10, 4, seed=5, start_epoch=1, end_epoch=4, start_batch=1)
    keys = list(sampler)
    expected = [(e, i) for e in (1, 2, 3) for i in GlobalBatchSampler(10, 4, 5, e, start_batch=1 if e == 1 else 0)]
    assert keys == expected and len(sampler) == len(keys) == 4 + 8 + 8
    imgs = [Image.new("RGB", (32, 32), (20 * k, 255 - 20 * k, 7 * k)) for k in range(10)]
    ds = ListDataset(imgs, list(range(10)))
    tf = MultiCropTransform(CropPolicy(ViewSpec(2, 0), 16, 8))

    def batches(loader):
        return [(torch.cat(v), y) for v, y in loader]

    whole = batches(run_loader(ds, tf, 4, 5, 1, 4, 0, 1, 1, num_workers=1, pin_memory=False))
    per_epoch = sum(
        (
            batches(run_loader(ds, tf, 4, 5, e, e + 1, 0, 1, 1 if e == 1 else 0, num_workers=0, pin_memory=False))
            for e in (1, 2, 3)
        ),
        [],
    )
    assert len(whole) == len(per_epoch) == 1 + 2 + 2
    for (a, ya), (b, yb) in zip(whole, per_epoch):
        assert torch.equal(ya, yb) and torch.equal(a, b)
    assert not torch.equal(whole[1][0], whole[3][0])  # epochs differ


def test_imagenet_style_train_val_tree_needs_no_renaming(image_folder, tmp_path):
    """ImageNet ships train/ + val/: the test split falls back to val/; data.test_split names any folder."""
    (image_folder / "test").rename(image_folder / "val")
    s = build_datasets("imagefolder", build_config(["preset=default", "dataset=imagefolder", f"data.root={image_folder}"]).data)
    assert len(s.test) == 16 and all("/val/" in p for p, _ in s.test.samples)
    s = build_datasets("cifar10", build_config(["preset=default", "dataset=cifar10", f"data.root={image_folder}"]).data)
    assert len(s.test) == 16
    (image_folder / "val").rename(image_folder / "holdout")
    cfg = build_config(["preset=default", "dataset=imagefolder", f"data.root={image_folder}", "data.test_split=holdout"])
    assert len(build_datasets("imagefolder", cfg.data).test) == 16
    with pytest.raises(
        UserError,
        match=r"no test/ folder for the test split \(it holds holdout/, train/\); name "
        r"the folder with data.test_split=NAME",
    ):
        build_datasets("imagefolder", build_config(["preset=default", "dataset=imagefolder", f"data.root={image_folder}"]).data)
    (image_folder / "train").rename(image_folder / "pretrain")
    with pytest.raises(UserError, match="no train/ folder for the train split .* data.train_split=NAME"):
        build_datasets(
            "imagefolder",
            build_config(["preset=default", "dataset=imagefolder", f"data.root={image_folder}", "data.test_split=holdout"]).data,
        )


def test_train_and_val_with_different_classes_are_refused(image_folder):
    (image_folder / "test").rename(image_folder / "val")
    (image_folder / "val" / "class1").rename(image_folder / "val" / "class9")
    with pytest.raises(UserError, match="train/ and val/ hold different classes"):
        build_datasets("imagefolder", build_config(["preset=default", "dataset=imagefolder", f"data.root={image_folder}"]).data)


def _unlabelled(root, n=12):
    root.mkdir(parents=True)
    for i in range(n):
        Image.effect_noise((16, 16), 40 + i).convert("RGB").save(root / f"img{i:03d}.png")
    return root.parent


def test_unlabelled_pretraining_is_evaluated_on_a_named_labelled_dataset(image_folder, tmp_path):
    from ssl_bench.data.datasets import UnlabelledFolder, run_datasets

    root = _unlabelled(tmp_path / "raw" / "train")
    cfg = build_config(
        [
            "preset=default", "dataset=imagefolder",
            f"data.root={root}",
            "eval.dataset=imagefolder",
            f"eval.data_root={image_folder}",
            "evals=knn,linear",
        ]
    )
    s = run_datasets(cfg)
    assert isinstance(s.train, UnlabelledFolder) and len(s.train) == 12
    assert len(s.bank) == 16 and len(s.test) == 16 and s.num_classes == 2
    assert sorted(set(s.bank.targets)) == [0, 1]
    with pytest.raises(
        UserError,
        match="holds unlabelled images .* the knn/linear evaluation needs labels; name a "
        "labelled dataset with eval.dataset=NAME",
    ):
        run_datasets(build_config(["preset=default", "dataset=imagefolder", f"data.root={root}", "evals=knn,linear"]))
    assert len(run_datasets(build_config(["preset=default", "dataset=imagefolder", f"data.root={root}", "evals=seg"])).train) == 12
    with pytest.raises(UserError, match="eval.dataset=imagefolder at .* holds unlabelled images"):
        run_datasets(
            build_config(
                ["preset=default", "dataset=imagefolder", f"data.root={root}", "eval.dataset=imagefolder", f"eval.data_root={root}"]
            )
        )
    with pytest.raises(UserError, match="eval.data_root needs eval.dataset"):
        run_datasets(build_config(["dataset=digits", f"eval.data_root={image_folder}"]))


def test_a_run_pretrains_on_unlabelled_images_and_scores_knn_on_another_dataset(image_folder, tmp_path, tiny):
    from ssl_bench.__main__ import main
    from ssl_bench.results import RunDir

    root = _unlabelled(tmp_path / "raw" / "train", n=32)
    assert (
        main(
            [
                "run",
                "method=simclr",
                "preset=default", "dataset=imagefolder",
                f"data.root={root}",
                "eval.dataset=imagefolder",
                f"eval.data_root={image_folder}",
                "optim.epochs=1",
                "evals=knn",
                *tiny,
            ]
        )
        == 0
    )
    run = RunDir(next((tmp_path / "runs").iterdir()))
    m = {(r["eval"], r["metric"]): r["value"] for r in run.read_metrics()}
    assert 0.0 <= m[("knn", "top1")] <= 1.0 and ("knn@init", "top1") in m


def test_a_run_trains_and_evaluates_on_a_train_val_tree(image_folder, tiny, tmp_path):
    """ImageNet's layout end to end: train/ + val/, nothing renamed, k-NN scored on val/."""
    from ssl_bench.__main__ import main
    from ssl_bench.results import RunDir

    (image_folder / "test").rename(image_folder / "val")
    over = ["method=simclr", "preset=default", "dataset=imagefolder", f"data.root={image_folder}", "optim.epochs=1", "evals=knn"]
    assert main(["run", *over, *tiny]) == 0
    rows = RunDir(next((tmp_path / "runs").iterdir())).read_metrics()
    assert {(r["eval"], r["metric"]) for r in rows} >= {("knn", "top1"), ("knn@init", "top1")}
