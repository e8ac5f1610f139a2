"""Data: the embedded breast-ultrasound phantom and loaders for real data, all returning ``ImageDataset``."""

from .base import SPLITS, DataError, ImageDataset, concat_datasets
from .folders import (
    BUSI_CLASSES,
    SPLIT_FOLDERS,
    detect_folder_layout,
    find_busi,
    folder_channels,
    load_busi,
    load_image_folder,
    load_split_folders,
    load_unlabelled_folder,
)
from .medmnist import download_medmnist, load_medmnist
from .spec import (
    SPEC_FORMS,
    DataSpec,
    colour_images,
    is_grayscale,
    is_unlabelled,
    load_spec,
    native_channels,
    parse_spec,
)
from .splits import assign_splits, budget_subset, label_budget, label_fraction, stratified_sample
from .synthetic import (
    BINARY_CLASS_NAMES,
    CLASS_NAMES,
    MARGIN_TYPES,
    STEP_NAMES,
    make_phantom,
    make_phantom_splits,
    phantom_steps,
)
from .transforms import hflip, to_rgb, train_transform
from .views import MultiView, multi_crop, two_views

__all__ = [
    "SPEC_FORMS",
    "DataSpec",
    "colour_images",
    "is_grayscale",
    "is_unlabelled",
    "load_spec",
    "native_channels",
    "parse_spec",
    "detect_folder_layout",
    "find_busi",
    "folder_channels",
    "load_unlabelled_folder",
    "BUSI_CLASSES",
    "load_busi",
    "load_image_folder",
    "load_split_folders",
    "SPLIT_FOLDERS",
    "concat_datasets",
    "download_medmnist",
    "load_medmnist",
    "assign_splits",
    "budget_subset",
    "label_budget",
    "label_fraction",
    "stratified_sample",
    "hflip",
    "to_rgb",
    "train_transform",
    "MultiView",
    "multi_crop",
    "two_views",
    "BINARY_CLASS_NAMES",
    "CLASS_NAMES",
    "MARGIN_TYPES",
    "SPLITS",
    "STEP_NAMES",
    "DataError",
    "ImageDataset",
    "make_phantom",
    "make_phantom_splits",
    "phantom_steps",
]
