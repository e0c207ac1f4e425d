"""The networks N2N compresses, and what their students become.

A teacher gives N2N four things: its `architecture`; a distillation set (`inputs` and the teacher's raw outputs
`targets`, its logits); `evaluate(network)`, the score of a network on the teacher's task (accuracy on a held-out
validation set, or mean return); and `save_student`, which writes the best student where a user can load it.

    teacher = ClassifierTeacher.from_file("teacher.pt", train_set, validation_set)   # any torch Dataset
    teacher = PolicyTeacher(policylab.load("runs/sac/agent.pt"), "Hopper-v5")         # a saved agent's actor

A policy teacher's network is its actor's deterministic part (SAC's trunk and mean head, TD3+BC's MLP before its
tanh), on the agent's normalised observations; students are distilled on states of the teacher's rollouts (or a
dataset's) and scored by the return they keep. Its best student is a `CompressedPolicy`, an ordinary agent.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from policylab.compression.architecture import Architecture, describe_module
from policylab.core.agent import Agent, AgentConfig, load_checkpoint, register_agent, save_checkpoint
from policylab.core.envs import make_vec_env, to_numpy
from policylab.core.evaluation import evaluate
from policylab.core.nets import (
    ActionScaler,
    DeterministicActor,
    GaussianActor,
    ObservationNormalizer,
    TanhGaussianActor,
)

NETWORK_FORMAT = "policylab-network/1"
EVALUATION_BATCH = 1024


# ---------------------------------------------------------------------------------------------
# Classifiers


def tensors_of(dataset: Dataset, batch_size: int = EVALUATION_BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """All (input, label) pairs of a map-style torch Dataset as two stacked tensors."""
    batches = list(DataLoader(dataset, batch_size=batch_size, shuffle=False))
    if not batches:
        raise ValueError("the dataset is empty")
    inputs, labels = (torch.cat(parts) for parts in zip(*[batch[:2] for batch in batches]))
    return inputs.float(), labels.long()


@torch.no_grad()
def batched_outputs(network: nn.Module, inputs: torch.Tensor, batch_size: int = EVALUATION_BATCH) -> torch.Tensor:
    """`network(inputs)` computed in batches, without gradients."""
    network.eval()
    return torch.cat([network(part) for part in inputs.split(batch_size)])


def accuracy(network: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of `inputs` whose highest logit is the label."""
    return float((batched_outputs(network, inputs).argmax(-1) == labels).float().mean())


def train_classifier(
    architecture: Architecture,
    dataset: Dataset,
    epochs: int = 20,
    learning_rate: float = 1e-3,
    batch_size: int = 128,
    seed: int = 0,
) -> nn.Sequential:
    """A network of `architecture` trained by cross-entropy on `dataset` with Adam (how a teacher is made)."""
    inputs, labels = tensors_of(dataset)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    network = architecture.build()
    optimizer = torch.optim.Adam(network.parameters(), lr=learning_rate)
    network.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(inputs), generator=generator).split(batch_size):
            loss = F.cross_entropy(network(inputs[batch]), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return network.eval()


def distill(
    architecture: Architecture,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    settings: Any,
    seed: int,
    network: nn.Sequential | None = None,
) -> nn.Sequential:
    """A network of `architecture` (fresh, or `network` trained further) fitted to the teacher's logits `targets` on
    `inputs` by MSE, with `settings`' distill_epochs, distill_learning_rate, distill_weight_decay and
    distill_batch_size (an `N2NConfig`)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    network = network if network is not None else architecture.build()
    optimizer = torch.optim.Adam(
        network.parameters(), lr=settings.distill_learning_rate, weight_decay=settings.distill_weight_decay
    )
    network.train()
    for _ in range(settings.distill_epochs):
        for batch in torch.randperm(len(inputs), generator=generator).split(settings.distill_batch_size):
            loss = F.mse_loss(network(inputs[batch]), targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return network.eval()


def save_network(path: str | os.PathLike, architecture: Architecture, network: nn.Module, **metadata: Any) -> None:
    """Write a network built from `architecture` and plain-data `metadata` to one file, atomically."""
    payload = {
        "format": NETWORK_FORMAT,
        "architecture": architecture.to_dict(),
        "state_dict": network.state_dict(),
        "metadata": metadata,
    }
    save_checkpoint(payload, path)


def load_network(path: str | os.PathLike) -> tuple[Architecture, nn.Sequential, dict[str, Any]]:
    """Read what `save_network` wrote: the architecture, the network with its weights, and the metadata."""
    payload = load_checkpoint(path, expected_format=NETWORK_FORMAT)
    architecture = Architecture.from_dict(payload["architecture"])
    network = architecture.build()
    network.load_state_dict(payload["state_dict"])
    return architecture, network.eval(), payload["metadata"]


class ClassifierTeacher:
    """A classifier (built from an `Architecture`) with its training set, distilled from, and a held-out validation
    set, scored on; the search selects students by that score, so report their accuracy on a third, test set."""

    kind = "classifier"
    score_name = "accuracy"

    def __init__(self, architecture: Architecture, network: nn.Module, train_set: Dataset, validation_set: Dataset):
        self.architecture, self.network = architecture, network.eval()
        self.inputs, _ = tensors_of(train_set)
        self.validation_inputs, self.validation_labels = tensors_of(validation_set)
        for name, inputs in (("training", self.inputs), ("validation", self.validation_inputs)):
            if tuple(inputs.shape[1:]) != architecture.input_shape:
                raise ValueError(
                    f"the {name} set's inputs have shape {tuple(inputs.shape[1:])} but the teacher takes "
                    f"{architecture.input_shape}: give the data the teacher was trained on"
                )
        self.targets = batched_outputs(self.network, self.inputs)
        self.score = self.evaluate(self.network)

    @classmethod
    def from_file(cls, path: str | os.PathLike, train_set: Dataset, validation_set: Dataset) -> ClassifierTeacher:
        """The teacher saved by `save_network` at `path`."""
        architecture, network, _ = load_network(path)
        return cls(architecture, network, train_set, validation_set)

    def distill(self, architecture: Architecture, settings: Any, seed: int) -> nn.Sequential:
        """A student of `architecture` distilled on the training set."""
        return distill(architecture, self.inputs, self.targets, settings, seed)

    def evaluate(self, network: nn.Module) -> float:
        """Validation accuracy."""
        return accuracy(network, self.validation_inputs, self.validation_labels)

    def retained(self, score: float) -> float:
        """N2N's accuracy reward R_a: the student's accuracy over the teacher's."""
        return score / self.score

    def save_student(self, path: str | os.PathLike, architecture: Architecture, network: nn.Module, **info) -> None:
        """The student as a network file (`load_network`)."""
        save_network(path, architecture, network, **info)


# ---------------------------------------------------------------------------------------------
# Policies


@dataclasses.dataclass
class CompressedPolicyConfig(AgentConfig):
    """A compressed policy's architecture: an MLP on normalised observations, its outputs squashed and scaled."""

    hidden_sizes: tuple[int, ...] = (64, 64)
    """hidden layer widths"""
    activation: str = "relu"
    """hidden activation"""
    squash: str = "tanh"
    """output before scaling to the action bounds: tanh, or linear (the action space clips it)"""
    teacher: str = ""
    """the agent it was distilled from"""


@register_agent("compressed-policy")
class CompressedPolicy(Agent):
    """A policy distilled from a larger agent's actor by N2N: act, save, `policylab.load`, `policylab eval`."""

    config_class = CompressedPolicyConfig
    config: CompressedPolicyConfig

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, config: CompressedPolicyConfig | None):
        super().__init__(observation_space, action_space, config)
        if not isinstance(action_space, gym.spaces.Box) or len(observation_space.shape) != 1:
            raise ValueError("a compressed policy takes flat Box observations and a Box action space")
        if self.config.squash not in ("tanh", "linear"):
            raise ValueError(f"squash is tanh or linear, got {self.config.squash!r}")
        observation_dim, action_dim = observation_space.shape[0], action_space.shape[0]
        architecture = Architecture.mlp(observation_dim, self.config.hidden_sizes, action_dim, self.config.activation)
        self.normalizer = ObservationNormalizer(observation_dim).to(self.device)
        self.network = architecture.build().to(self.device).requires_grad_(False)
        self.scaler = ActionScaler(action_space.low, action_space.high).to(self.device)

    def _policy(self, observations: torch.Tensor, deterministic: bool) -> torch.Tensor:
        outputs = self.network(self.normalizer(observations))
        return self.scaler(torch.tanh(outputs) if self.config.squash == "tanh" else outputs)


def policy_network(agent: Agent) -> tuple[nn.Sequential, str, ActionScaler]:
    """An agent's deterministic actor network (on normalised observations, before squashing), its squash (tanh or
    linear) and its action scaler; refuses actors it cannot read."""
    actor = getattr(agent, "actor", None)
    if isinstance(actor, TanhGaussianActor):
        action_dim = actor.scaler.scale.numel()
        mean_head = nn.Linear(actor.head.in_features, action_dim)
        with torch.no_grad():
            mean_head.weight.copy_(actor.head.weight[:action_dim])
            mean_head.bias.copy_(actor.head.bias[:action_dim])
        return nn.Sequential(*actor.trunk, mean_head), "tanh", actor.scaler
    if isinstance(actor, DeterministicActor) or (
        isinstance(actor, GaussianActor) and isinstance(actor.net[-1], nn.Tanh)
    ):
        return nn.Sequential(*actor.net[:-1]), "tanh", actor.scaler
    if isinstance(actor, GaussianActor):
        return nn.Sequential(*actor.net), "linear", actor.scaler
    raise ValueError(
        f"N2N compresses actors of SAC, TD3+BC-style and IQL-style agents (TanhGaussianActor, DeterministicActor, "
        f"GaussianActor); this {type(agent).__name__} agent's actor is a {type(actor).__name__}"
    )


def rollout_states(
    policy: Callable[[np.ndarray], np.ndarray],
    env_id: str,
    num_states: int,
    seed: int = 0,
    action_noise: float = 0.1,
    num_envs: int = 10,
) -> np.ndarray:
    """`num_states` observations visited by `policy` on `env_id`, with Gaussian action noise of std `action_noise`
    (a fraction of each action's half-range) so that the states cover a little around the policy's path."""
    rng = np.random.default_rng(seed)
    states = []
    with make_vec_env(env_id, num_envs, seed=seed) as envs:
        low, high = envs.single_action_space.low, envs.single_action_space.high
        observations, _ = envs.reset()
        for _ in range(-(-num_states // num_envs)):
            observations = to_numpy(observations).astype(np.float32)
            states.append(observations)
            actions = policy(observations) + action_noise * (high - low) / 2 * rng.standard_normal((num_envs, len(low)))
            observations, *_ = envs.step(np.clip(actions, low, high).astype(np.float32))
    return np.concatenate(states)[:num_states]


class PolicyTeacher:
    """A saved agent's actor on its task: students match its outputs on `states` (default: states of its own noisy
    rollouts) and are scored by their mean return over `eval_episodes` deterministic episodes. With `dagger_rounds`,
    each student then rolls itself out for `dagger_states` states, which the teacher labels and which join its
    distillation set before it trains again (DAgger), so it learns to recover from its own mistakes."""

    kind = "policy"
    score_name = "return"

    def __init__(
        self,
        agent: Agent,
        env_id: str,
        states: np.ndarray | None = None,
        num_states: int = 50_000,
        eval_episodes: int = 10,
        seed: int = 0,
        dagger_rounds: int = 0,
        dagger_states: int = 10_000,
    ) -> None:
        if dagger_rounds < 0 or dagger_states < 1:
            raise ValueError(f"dagger_rounds must be >= 0 and dagger_states >= 1, got {dagger_rounds}, {dagger_states}")
        self.dagger_rounds, self.dagger_states = dagger_rounds, dagger_states
        network, self.squash, scaler = policy_network(agent)
        normalizer = getattr(agent, "normalizer", None)
        observation_dim = agent.observation_space.shape[0]
        self.observation_mean = (
            normalizer.mean.detach().cpu() if normalizer is not None else torch.zeros(observation_dim)
        )
        self.observation_std = normalizer.std.detach().cpu() if normalizer is not None else torch.ones(observation_dim)
        self.action_scale, self.action_bias = scaler.scale.detach().cpu(), scaler.bias.detach().cpu()
        self.architecture, self.network = describe_module(network, (observation_dim,))
        self.env_id, self.eval_episodes, self.seed = env_id, eval_episodes, seed
        self.observation_space, self.action_space = agent.observation_space, agent.action_space
        self.teacher_name = agent.algorithm_name
        if states is None:
            states = rollout_states(self.policy(self.network), env_id, num_states, seed)
        states = torch.as_tensor(np.asarray(states), dtype=torch.float32)
        if tuple(states.shape[1:]) != (observation_dim,):
            raise ValueError(
                f"states of shape {tuple(states.shape)} do not fit the agent's observations ({observation_dim},)"
            )
        self.inputs = self.normalize(states)
        self.targets = batched_outputs(self.network, self.inputs)
        self.score = self.evaluate(self.network)
        if self.score <= 0:
            raise ValueError(
                f"the teacher's mean return on {env_id} is {self.score:.1f}: N2N scores students by the fraction of "
                "a positive return they keep, so compress a policy that earns one"
            )

    def policy(self, network: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
        """Raw observations to actions through `network`, with the teacher's normalisation and squashing."""

        @torch.no_grad()
        def act(observations: np.ndarray) -> np.ndarray:
            outputs = network(self.normalize(observations))
            outputs = torch.tanh(outputs) if self.squash == "tanh" else outputs
            return (outputs * self.action_scale + self.action_bias).numpy()

        return act

    def normalize(self, states: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Raw observations as the actor network takes them."""
        return (torch.as_tensor(np.asarray(states), dtype=torch.float32) - self.observation_mean) / self.observation_std

    def distill(self, architecture: Architecture, settings: Any, seed: int) -> nn.Sequential:
        """A student of `architecture` distilled on the teacher's states, then through `dagger_rounds` of its own."""
        inputs, targets = self.inputs, self.targets
        network = distill(architecture, inputs, targets, settings, seed)
        for round_index in range(self.dagger_rounds):
            states = rollout_states(self.policy(network), self.env_id, self.dagger_states, seed + round_index + 1)
            visited = self.normalize(states)
            inputs, targets = torch.cat([inputs, visited]), torch.cat([targets, batched_outputs(self.network, visited)])
            network = distill(architecture, inputs, targets, settings, seed + round_index + 1, network)
        return network

    def evaluate(self, network: nn.Module) -> float:
        """Mean return of `network` acting deterministically."""
        network.eval()
        return evaluate(self.policy(network), self.env_id, episodes=self.eval_episodes, seed=self.seed).return_mean

    def retained(self, score: float) -> float:
        """The return reward R_a: the fraction of the teacher's return the student keeps (0 for a negative one)."""
        return max(score, 0.0) / self.score

    def student_agent(self, architecture: Architecture, network: nn.Module) -> CompressedPolicy:
        """The student as an agent."""
        config = CompressedPolicyConfig(
            device="cpu",
            hidden_sizes=architecture.hidden_sizes,
            activation=architecture.activation,
            squash=self.squash,
            teacher=self.teacher_name,
        )
        agent = CompressedPolicy(self.observation_space, self.action_space, config)
        agent.network.load_state_dict(network.state_dict())
        agent.normalizer.set_statistics(self.observation_mean, self.observation_std)
        return agent

    def save_student(self, path: str | os.PathLike, architecture: Architecture, network: nn.Module, **info) -> None:
        """The student as an agent file (`policylab.load`)."""
        self.student_agent(architecture, network).save(path)
