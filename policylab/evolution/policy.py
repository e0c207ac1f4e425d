"""An evolved parameter vector as an ordinary agent: `act`, `predict`, `save`, and `policylab.load`; and the network
a population method evolves for a task."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import torch

from policylab.core.agent import Agent, AgentConfig, register_agent
from policylab.core.evaluation import population_actions
from policylab.core.nets import PopulationMLP, PopulationNatureCNN


def population_network(
    observation_space: gym.Space, action_space: gym.Space, hidden_sizes: tuple[int, ...] = (64, 64), activation="tanh"
) -> PopulationMLP | PopulationNatureCNN:
    """The network evolved for a task: the Nature-DQN CNN on stacked frames with discrete actions (Atari), else an
    MLP (`hidden_sizes`, `activation`) whose tanh outputs are scaled to a Box action space."""
    shape = observation_space.shape
    if isinstance(action_space, gym.spaces.Discrete) and shape is not None and len(shape) == 3:
        return PopulationNatureCNN(shape[0], int(action_space.n))
    if not isinstance(action_space, gym.spaces.Box) or shape is None or len(shape) != 1:
        raise ValueError(
            "evolved policies are MLPs on flat observations with Box actions, or the Nature-DQN CNN on stacked "
            f"frames with discrete actions; got observations {observation_space} and actions {action_space}"
        )
    return PopulationMLP(shape[0], action_space.shape[0], tuple(hidden_sizes), activation, "tanh")


@dataclasses.dataclass
class EvolvedPolicyConfig(AgentConfig):
    """The architecture of an evolved MLP policy (a CNN's is fixed), and the genome it came from."""

    hidden_sizes: tuple[int, ...] = (64, 64)
    """hidden layer widths of an MLP"""
    activation: str = "tanh"
    """hidden activation of an MLP"""
    genome: tuple[int, ...] = ()
    """seed chain of the weights (initialisation seed, then one seed per mutation), when evolved by the Deep GA"""
    mutation_power: float = 0.0
    """σ of the genome's mutations"""


@register_agent("evolved-policy")
class EvolvedPolicy(Agent):
    """A network found by a population method (`population_network`): an MLP whose tanh outputs are scaled to the
    action box, or the Nature-DQN CNN acting on its best-scored action."""

    config_class = EvolvedPolicyConfig

    def __init__(
        self, observation_space: gym.Space, action_space: gym.Space, config: EvolvedPolicyConfig | None = None
    ) -> None:
        super().__init__(observation_space, action_space, config)
        self.spec = population_network(
            observation_space, action_space, self.config.hidden_sizes, self.config.activation
        )
        self.network = self.spec.to_module(torch.zeros(self.spec.num_params)).to(self.device).requires_grad_(False)

    @classmethod
    def from_params(
        cls,
        params: torch.Tensor,
        observation_space: gym.Space,
        action_space: gym.Space,
        config: EvolvedPolicyConfig | None = None,
    ) -> EvolvedPolicy:
        """The agent with the weights of one flat parameter vector (the layout of its `population_network`)."""
        agent = cls(observation_space, action_space, config)
        agent.network = agent.spec.to_module(params.float().cpu()).to(agent.device).requires_grad_(False)
        return agent

    def _policy(self, observations: torch.Tensor, deterministic: bool) -> torch.Tensor:
        return population_actions(self.network(observations), self.action_space)
