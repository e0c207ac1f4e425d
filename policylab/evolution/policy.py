"""An evolved parameter vector as an ordinary agent: `act`, `predict`, `save`, and `policylab.load`."""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import torch

from policylab.core.agent import Agent, AgentConfig, register_agent
from policylab.core.nets import PopulationMLP


@dataclasses.dataclass
class EvolvedPolicyConfig(AgentConfig):
    """The architecture of an evolved MLP policy, and the genome it came from."""

    hidden_sizes: tuple[int, ...] = (64, 64)
    """hidden layer widths"""
    activation: str = "tanh"
    """hidden activation"""
    genome: tuple[int, ...] = ()
    """seed chain of the weights (initialisation seed, then one seed per mutation), when evolved by the Deep GA"""
    mutation_power: float = 0.0
    """σ of the genome's mutations"""


@register_agent("evolved-policy")
class EvolvedPolicy(Agent):
    """An MLP whose tanh outputs are scaled to the action box, holding weights found by a population method."""

    config_class = EvolvedPolicyConfig

    def __init__(
        self, observation_space: gym.Space, action_space: gym.Space, config: EvolvedPolicyConfig | None = None
    ) -> None:
        super().__init__(observation_space, action_space, config)
        if not isinstance(action_space, gym.spaces.Box):
            raise ValueError(f"an evolved policy acts on a Box action space, got {type(action_space).__name__}")
        self.spec = PopulationMLP(
            observation_space.shape[0], action_space.shape[0], self.config.hidden_sizes, self.config.activation, "tanh"
        )
        self.network = self.spec.to_module(torch.zeros(self.spec.num_params)).to(self.device).requires_grad_(False)
        self.action_low = torch.as_tensor(action_space.low, device=self.device)
        self.action_high = torch.as_tensor(action_space.high, device=self.device)

    @classmethod
    def from_params(
        cls,
        params: torch.Tensor,
        observation_space: gym.Space,
        action_space: gym.Space,
        config: EvolvedPolicyConfig | None = None,
    ) -> EvolvedPolicy:
        """The agent with the weights of one flat parameter vector (the layout of `PopulationMLP`)."""
        agent = cls(observation_space, action_space, config)
        agent.network = agent.spec.to_module(params.float().cpu()).to(agent.device).requires_grad_(False)
        return agent

    def _policy(self, observations: torch.Tensor, deterministic: bool) -> torch.Tensor:
        outputs = self.network(observations)
        return self.action_low + (outputs + 1) * (self.action_high - self.action_low) / 2
