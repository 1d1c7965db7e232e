"""Data: one interface over every source (MNIST, the UCR/UEA archive, moving digits,
Fashion-MNIST, KMNIST, CIFAR-10, your image folders and ``.npz`` arrays), the split, the
cache, and how stored values become network inputs.

Importing the package registers every source (each module registers itself).
"""

from cnnlab.data import (  # noqa: F401  (each registers its source)
    arrays,
    cifar,
    folder,
    idx_sets,
    moving_mnist,
    npz,
    ucr,
)
from cnnlab.data.base import (
    DataOptions,
    Dataset,
    Source,
    Splits,
    parse_spec,
    register_source,
    registered_sources,
    spec_help,
)
from cnnlab.data.datasets import load_dataset, scored_inputs
from cnnlab.data.images import ImageSettings, load_image, load_image_bytes
from cnnlab.data.mnist import (
    DATA_ENV,
    MNIST,
    MNIST_FILES,
    default_cache_dir,
    load_mnist,
    locate,
    prepare,
    scale,
    search_dirs,
    verify,
)
from cnnlab.data.rows import RowView
from cnnlab.data.scaling import InputScale, input_scale, iterate_batches, to_inputs
from cnnlab.data.splits import split_indices

__all__ = [
    "DATA_ENV",
    "MNIST",
    "MNIST_FILES",
    "DataOptions",
    "Dataset",
    "ImageSettings",
    "InputScale",
    "RowView",
    "Source",
    "Splits",
    "default_cache_dir",
    "input_scale",
    "iterate_batches",
    "load_dataset",
    "load_image",
    "load_image_bytes",
    "load_mnist",
    "locate",
    "parse_spec",
    "prepare",
    "register_source",
    "registered_sources",
    "scale",
    "scored_inputs",
    "search_dirs",
    "spec_help",
    "split_indices",
    "to_inputs",
    "verify",
]
