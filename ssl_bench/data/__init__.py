"""Datasets and the shared multi-crop data layer."""
from ssl_bench.data.datasets import DataSplits, build_datasets, eval_transform
from ssl_bench.data.multicrop import CropPolicy, MultiCropTransform, ViewSpec, crop_policy

__all__ = ["CropPolicy", "DataSplits", "build_datasets", "crop_policy", "eval_transform", "MultiCropTransform", "ViewSpec"]
