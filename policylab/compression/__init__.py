"""Compression: N2N (layer removal and shrinkage policies trained by policy gradient) for classifiers and for
trained policies."""

from policylab.compression.architecture import Architecture, InvalidArchitecture, Layer, describe_module
from policylab.compression.datasets import cifar10, synthetic_images
from policylab.compression.n2n import N2N, N2NConfig, RandomSearch, n2n_reward, plot_pareto, uniform_shrink
from policylab.compression.teachers import (
    ClassifierTeacher,
    CompressedPolicy,
    CompressedPolicyConfig,
    PolicyTeacher,
    load_network,
    save_network,
    train_classifier,
)

__all__ = [
    "N2N",
    "Architecture",
    "ClassifierTeacher",
    "CompressedPolicy",
    "CompressedPolicyConfig",
    "InvalidArchitecture",
    "Layer",
    "N2NConfig",
    "PolicyTeacher",
    "RandomSearch",
    "cifar10",
    "describe_module",
    "load_network",
    "n2n_reward",
    "plot_pareto",
    "save_network",
    "synthetic_images",
    "train_classifier",
    "uniform_shrink",
]
