"""Teachers: CIFAR-10 pickles, synthetic images, network files, and policy teachers from saved agents."""

import pickle

import numpy as np
import pytest
import torch

import policylab
from policylab.compression import (
    Architecture,
    Layer,
    PolicyTeacher,
    cifar10,
    load_network,
    save_network,
    synthetic_images,
)
from policylab.compression.datasets import CIFAR10_MEAN, CIFAR10_STD, image_data
from policylab.offline_rl import TD3BC
from policylab.online_rl import SAC


def write_cifar_batch(path, images, labels):
    with open(path, "wb") as file:
        pickle.dump({b"batch_label": b"test", b"data": images, b"labels": labels, b"filenames": []}, file)


def test_cifar10_reads_the_python_pickle_batches(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
    write_cifar_batch(tmp_path / "test_batch", images, [4, 0, 9])
    images_set = cifar10(tmp_path, train=False)
    pixels, labels = images_set.tensors
    assert pixels.shape == (3, 3, 32, 32) and labels.tolist() == [4, 0, 9]
    expected = (images[1].reshape(3, 32, 32)[2, 5, 7] / 255 - CIFAR10_MEAN[2]) / CIFAR10_STD[2]
    assert float(pixels[1, 2, 5, 7]) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        cifar10(tmp_path, train=True)


def test_image_data_holds_validation_out_of_cifar10_training_images(tmp_path):
    for index in range(1, 6):
        write_cifar_batch(tmp_path / f"data_batch_{index}", np.zeros((2, 3072), dtype=np.uint8), [index, index])
    write_cifar_batch(tmp_path / "test_batch", np.zeros((1, 3072), dtype=np.uint8), [7])
    train, validation, test = image_data(f"cifar10:{tmp_path}", validation_samples=3)
    labels = [[int(label) for _, label in split] for split in (train, validation, test)]
    assert labels == [[1, 1, 2, 2, 3, 3, 4], [4, 5, 5], [7]]
    with pytest.raises(ValueError, match="validation_samples"):
        image_data(f"cifar10:{tmp_path}", validation_samples=10)


def test_synthetic_validation_and_test_sets_differ():
    train, validation, test = image_data("synthetic", 20, 30, 40)
    assert [len(split) for split in (train, validation, test)] == [20, 30, 40]
    assert not torch.equal(validation.tensors[0][:20], test.tensors[0][:20])
    assert not torch.equal(validation.tensors[0][:20], train.tensors[0])


def test_cifar10_refuses_pickles_that_would_run_code(tmp_path):
    with open(tmp_path / "test_batch", "wb") as file:
        pickle.dump({b"data": pickle.loads, b"labels": []}, file)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        cifar10(tmp_path, train=False)


def test_synthetic_images_are_one_task_across_seeds():
    first, again, other = synthetic_images(50, seed=0), synthetic_images(50, seed=0), synthetic_images(50, seed=1)
    assert torch.equal(first.tensors[0], again.tensors[0]) and not torch.equal(first.tensors[0], other.tensors[0])
    assert first.tensors[0].shape == (50, 3, 16, 16) and set(first.tensors[1].tolist()) <= set(range(10))


def test_network_files_round_trip(tmp_path):
    architecture = Architecture((4,), (Layer("linear", 8), Layer("linear", 2)), "tanh")
    network = architecture.build()
    save_network(tmp_path / "net.pt", architecture, network, accuracy=0.5)
    loaded_architecture, loaded, metadata = load_network(tmp_path / "net.pt")
    inputs = torch.randn(5, 4)
    assert loaded_architecture == architecture and metadata == {"accuracy": 0.5}
    torch.testing.assert_close(loaded(inputs), network(inputs))


@pytest.mark.parametrize("make_agent", [lambda env: SAC(env), lambda env: TD3BC(*spaces(env))])
def test_a_student_with_the_teachers_weights_acts_as_the_teacher(make_agent):
    agent = make_agent("InvertedPendulum-v5")
    if hasattr(agent, "normalizer"):
        agent.normalizer.set_statistics(torch.arange(4.0), torch.arange(1.0, 5.0))
    teacher = PolicyTeacher(agent, "InvertedPendulum-v5", num_states=200, eval_episodes=2)
    assert teacher.inputs.shape == (200, 4) and teacher.targets.shape == (200, 1)
    student = teacher.student_agent(teacher.architecture, teacher.network)
    observations = np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32)
    np.testing.assert_allclose(student.act(observations), agent.act(observations, deterministic=True), atol=1e-6)


def spaces(env_id):
    from policylab.core.envs import make_env

    env = make_env(env_id)
    return env.observation_space, env.action_space


def test_student_agents_save_and_load(tmp_path):
    teacher = PolicyTeacher(SAC("InvertedPendulum-v5"), "InvertedPendulum-v5", num_states=100, eval_episodes=1)
    smaller = Architecture.mlp(4, (8,), 1)
    teacher.save_student(tmp_path / "agent.pt", smaller, smaller.build())
    loaded = policylab.load(tmp_path / "agent.pt")
    assert loaded.config.hidden_sizes == (8,) and loaded.config.teacher == "sac"
    assert loaded.act(np.zeros(4, dtype=np.float32)).shape == (1,)
