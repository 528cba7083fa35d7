"""Datasets and the shared multi-crop data layer."""
from ssl_bench.data.datasets import DataSplits, build_datasets, eval_transform
from ssl_bench.data.multicrop import MultiCropTransform, ViewSpec

__all__ = ["DataSplits", "build_datasets", "eval_transform", "MultiCropTransform", "ViewSpec"]
