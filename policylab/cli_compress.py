"""`policylab compress ...`: make a classifier teacher, and compress a classifier or a saved agent's actor with N2N.

policylab compress train-classifier --data synthetic --output runs/teacher.pt
policylab compress n2n --teacher runs/teacher.pt --data synthetic --removal-epochs 20 --shrinkage-epochs 20
policylab compress n2n --teacher runs/sac-Hopper-v5-s0/agent.pt --env Hopper-v5 --workers 2
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated

import tyro

import policylab
from policylab.compression import (
    N2N,
    Architecture,
    ClassifierTeacher,
    Layer,
    N2NConfig,
    PolicyTeacher,
    save_network,
    train_classifier,
)
from policylab.compression.datasets import image_data
from policylab.compression.teachers import NETWORK_FORMAT, accuracy, tensors_of
from policylab.core.data import load_dataset


@dataclasses.dataclass
class TrainClassifier:
    """Train a convolutional classifier to be compressed (a teacher for `compress n2n`)."""

    output: Path
    """where the network file goes"""
    data: str = "synthetic"
    """synthetic (an image task generated here, no download) or cifar10:DIR (the python-pickle batches in DIR)"""
    conv_widths: tuple[int, ...] = (32, 64, 64)
    """channels of the 3x3 convs (the first at stride 1, the others at stride 2)"""
    linear_widths: tuple[int, ...] = (128,)
    """hidden linear layers before the class logits"""
    epochs: int = 10
    """passes over the training set"""
    train_samples: int = 10_000
    """synthetic data: training images"""
    validation_samples: int = 2_000
    """validation images (synthetic data; cifar10: held out from the end of its training images)"""
    test_samples: int = 2_000
    """synthetic data: test images"""
    seed: int = 0
    """seed of initialisation and batches"""


@dataclasses.dataclass
class CompressN2N:
    """Compress a classifier or a saved agent's actor with N2N (layer removal, then shrinkage, by REINFORCE)."""

    teacher: Path
    """a classifier file (compress train-classifier) or a saved agent (agent.pt, whose actor is compressed)"""
    data: str = "synthetic"
    """classifier teachers: synthetic or cifar10:DIR, the data the teacher was trained on"""
    env: str | None = None
    """policy teachers: the task, e.g. Hopper-v5 (students are scored by the return they keep on it)"""
    states: str | None = None
    """policy teachers: a dataset id whose observations students are distilled on (default: teacher rollouts)"""
    num_states: int = 50_000
    """policy teachers: states collected from the teacher's rollouts"""
    eval_episodes: int = 10
    """policy teachers: episodes that score each student"""
    dagger_rounds: int = 0
    """policy teachers: rounds in which a student rolls itself out and trains on the teacher's labels of those states"""
    dagger_states: int = 10_000
    """policy teachers: states each DAgger round collects"""
    train_samples: int = 10_000
    """synthetic data: training images"""
    validation_samples: int = 2_000
    """validation images (synthetic data; cifar10: held out from the end of its training images)"""
    test_samples: int = 2_000
    """synthetic data: test images"""
    run_dir: Path | None = None
    """where config, metrics, candidates, checkpoint, the best student and pareto.png go (default: runs/n2n-<name>)"""
    resume: bool = False
    """continue the run in run_dir from its checkpoint"""
    progress: bool = True
    """show a progress bar"""
    config: Annotated[N2NConfig, tyro.conf.arg(name="")] = dataclasses.field(default_factory=N2NConfig)


COMPRESS_COMMANDS = {"n2n": CompressN2N, "train-classifier": TrainClassifier}


def run_compression(command: CompressN2N | TrainClassifier) -> None:
    """Run a `compress` command and print its summary as JSON."""
    if isinstance(command, TrainClassifier):
        _train_classifier(command)
        return
    if not command.teacher.is_file():
        raise FileNotFoundError(f"no teacher at {command.teacher}")
    test = None
    if _file_format(command.teacher) == NETWORK_FORMAT:
        train, validation, test = _image_data(command)
        teacher = ClassifierTeacher.from_file(command.teacher, train, validation)
    else:
        teacher = _policy_teacher(command)
    run_dir = command.run_dir or Path("runs") / f"n2n-{command.teacher.stem}-{command.teacher.parent.name}"
    search = N2N(teacher, command.config)
    summary = search.run(run_dir, resume=command.resume, progress=command.progress)
    student = run_dir / ("agent.pt" if teacher.kind == "policy" else "student.pt")
    summary = {"run_dir": str(run_dir), "student": str(student), **summary}
    if test is not None:  # students were selected on the validation set: their unbiased score is on the test set
        test_inputs, test_labels = tensors_of(test)
        summary["teacher_test_accuracy"] = accuracy(teacher.network, test_inputs, test_labels)
        summary["best_test_accuracy"] = accuracy(search.best_network(), test_inputs, test_labels)
    print(json.dumps(summary, indent=2))


def _image_data(command: CompressN2N | TrainClassifier):
    return image_data(command.data, command.train_samples, command.validation_samples, command.test_samples)


def _policy_teacher(command: CompressN2N) -> PolicyTeacher:
    if command.env is None:
        raise ValueError(f"{command.teacher} holds an agent: name its task with --env (e.g. --env Hopper-v5)")
    agent = policylab.load(command.teacher, device="cpu")
    states = load_dataset(command.states).observations if command.states is not None else None
    return PolicyTeacher(
        agent,
        command.env,
        states,
        command.num_states,
        command.eval_episodes,
        command.config.seed,
        command.dagger_rounds,
        command.dagger_states,
    )


def _file_format(path: Path) -> str | None:
    """The "format" recorded in a policylab file (None for anything else, which `policylab.load` then explains)."""
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a plain-data torch file: policylab.load says what is wrong with it
        return None
    return payload.get("format") if isinstance(payload, dict) else None


def _train_classifier(command: TrainClassifier) -> None:
    train, validation, test = _image_data(command)
    inputs, labels = tensors_of(train)
    convs = tuple(Layer("conv", width, 3, 1 if index == 0 else 2, 1) for index, width in enumerate(command.conv_widths))
    linears = tuple(Layer("linear", width) for width in (*command.linear_widths, int(labels.max()) + 1))
    architecture = Architecture(tuple(inputs.shape[1:]), convs + linears)
    network = train_classifier(architecture, train, command.epochs, seed=command.seed)
    accuracies = {
        f"{name}_accuracy": accuracy(network, *tensors_of(data))
        for name, data in (("validation", validation), ("test", test))
    }
    save_network(command.output, architecture, network, data=command.data, **accuracies)
    summary = {
        "output": str(command.output),
        "architecture": architecture.describe(),
        "params": architecture.num_params,
    }
    print(json.dumps(summary | accuracies, indent=2))
