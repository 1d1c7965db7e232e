"""Data: MNIST (find, download, verify, split), IDX files, and users' own images."""

from cnnlab.data.mnist import (
    DATA_ENV,
    MNIST,
    MNIST_FILES,
    Splits,
    default_cache_dir,
    load_mnist,
    locate,
    prepare,
    scale,
    search_dirs,
    verify,
)

__all__ = [
    "DATA_ENV",
    "MNIST",
    "MNIST_FILES",
    "Splits",
    "default_cache_dir",
    "load_mnist",
    "locate",
    "prepare",
    "scale",
    "search_dirs",
    "verify",
]
