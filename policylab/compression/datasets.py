"""Image classification data for classifier teachers: a synthetic task the library generates (no download) and
CIFAR-10 read from the python-pickle files a user has on disk.

    train, validation, test = image_data("synthetic")                 # seeds 0, 2 and 1 of `synthetic_images`
    train, validation, test = image_data("cifar10:~/data/cifar-10-batches-py")
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset, Subset, TensorDataset

CIFAR10_TRAIN_FILES = tuple(f"data_batch_{index}" for index in range(1, 6))
CIFAR10_TEST_FILES = ("test_batch",)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)  # per-channel statistics of CIFAR-10's training images
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def synthetic_images(
    samples: int,
    seed: int = 0,
    classes: int = 10,
    size: int = 16,
    channels: int = 3,
    noise: float = 2.0,
    task_seed: int = 0,
) -> TensorDataset:
    """`samples` images (channels, size, size) of `classes` classes with labels. Each class is a smooth random
    pattern (fixed by `task_seed`, so sets drawn with different `seed`s are one task); an image is its class's
    pattern shifted by up to a quarter of its side, at a random contrast, over another class's pattern at a lower
    contrast, plus Gaussian pixel noise of std `noise`. Shifts call for convolutions and the distractor and noise
    keep small networks from being perfect."""
    if samples < 1 or classes < 2 or size < 4:
        raise ValueError(f"need samples >= 1, classes >= 2 and size >= 4, got {samples}, {classes}, {size}")
    task = torch.Generator().manual_seed(task_seed)
    coarse = torch.randn(classes, channels, 4, 4, generator=task)
    patterns = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    patterns = (patterns - patterns.mean(dim=(1, 2, 3), keepdim=True)) / patterns.std(dim=(1, 2, 3), keepdim=True)
    generator = torch.Generator().manual_seed(seed + 1)
    labels = torch.randint(classes, (samples,), generator=generator)
    distractors = (labels + torch.randint(1, classes, (samples,), generator=generator)) % classes
    images = torch.empty(samples, channels, size, size)
    shifts = torch.randint(-(size // 4), size // 4 + 1, (samples, 4), generator=generator).tolist()
    contrast = 0.6 + 0.8 * torch.rand(samples, generator=generator)
    distractor_contrast = 0.6 * torch.rand(samples, generator=generator)
    for index, (label, distractor, shift) in enumerate(zip(labels.tolist(), distractors.tolist(), shifts)):
        images[index] = contrast[index] * patterns[label].roll(shift[:2], dims=(1, 2))
        images[index] += distractor_contrast[index] * patterns[distractor].roll(shift[2:], dims=(1, 2))
    images += noise * torch.randn(images.shape, generator=generator)
    return TensorDataset(images, labels)


class _ArrayUnpickler(pickle.Unpickler):
    """Reads pickles of plain containers and numpy arrays only, so that a data file can never run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name}: a CIFAR-10 batch holds only arrays and lists")
        return super().find_class(module, name)


def cifar10(root: str | os.PathLike, train: bool = True) -> TensorDataset:
    """CIFAR-10 from the directory of its python-pickle batches (`cifar-10-batches-py`, as distributed by its
    authors): float images (3, 32, 32) standardised per channel, and integer labels."""
    root = Path(root).expanduser()
    names = CIFAR10_TRAIN_FILES if train else CIFAR10_TEST_FILES
    missing = [name for name in names if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{root} lacks CIFAR-10 batch file(s) {missing}: point to the extracted `cifar-10-batches-py` directory "
            "of the python version from https://www.cs.toronto.edu/~kriz/cifar.html"
        )
    images, labels = [], []
    for name in names:
        with open(root / name, "rb") as file:
            batch = _ArrayUnpickler(file, encoding="bytes").load()
        if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
            raise ValueError(f"{root / name} is not a CIFAR-10 batch (a dict with b'data' and b'labels')")
        images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
    pixels = torch.from_numpy(np.concatenate(images)).float() / 255.0
    mean, std = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    return TensorDataset((pixels - mean) / std, torch.from_numpy(np.concatenate(labels)))


def image_data(
    spec: str, train_samples: int = 10_000, validation_samples: int = 2_000, test_samples: int = 2_000
) -> tuple[Dataset, Dataset, Dataset]:
    """Training, validation and test sets named by `spec`: "synthetic" (`synthetic_images` of seeds 0, 2 and 1) or
    "cifar10:DIR" (the last `validation_samples` of CIFAR-10's 50,000 training images held out for validation)."""
    if spec == "synthetic":
        return tuple(
            synthetic_images(samples, seed=seed)
            for samples, seed in ((train_samples, 0), (validation_samples, 2), (test_samples, 1))
        )
    if spec.startswith("cifar10:"):
        root = spec.removeprefix("cifar10:")
        train = cifar10(root, train=True)
        if not 0 < validation_samples < len(train):
            raise ValueError(f"validation_samples must be in [1, {len(train) - 1}], got {validation_samples}")
        kept = len(train) - validation_samples
        return Subset(train, range(kept)), Subset(train, range(kept, len(train))), cifar10(root, train=False)
    raise ValueError(f"unknown data {spec!r}: use synthetic (generated here) or cifar10:DIR (cifar-10-batches-py)")
