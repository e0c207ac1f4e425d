"""GROOVE (Jackson et al. 2023): a learned policy gradient (LPG, Oh et al. 2020) meta-trained on a curriculum of
grid-world levels chosen by algorithmic regret.

The LPG is a small network that reads an agent's trajectory backwards in time and outputs, per step, a scalar π̂
and a target distribution ŷ; the agent (a linear softmax actor and a linear prediction vector y over the tabular
observation) then descends `mean(log π(a|s)·π̂) + 0.5·mean KL(y(s) ‖ ŷ)`. Meta-training runs many agents, each on
its own level, for K such updates, and differentiates the return of the updated agent (a policy gradient with a
separately fitted critic, plus regularisers) through the K updates into the LPG's weights; evolution strategies
are the alternative meta-optimiser. When an agent's lifetime ends its level is scored and a new one is drawn:
`uniform` draws fresh random levels (LPG), `regret` replays levels of a prioritised buffer ranked by algorithmic
regret (the return of A2C trained on the level minus that of the LPG-trained agent: GROOVE), `value-loss` ranks
them by the agent's positive value loss (PLR's score, the UED baseline).

    groove = GROOVE(GROOVEConfig(curriculum="regret"))
    groove.run(meta_updates=500, run_dir="runs/groove")                   # atomic checkpoints, resume=True
    result = meta_test(groove.lpg, named_levels("dense", 8, generator), updates=250, config=groove.config)

Every agent's parameters carry a leading agent axis, so all agents (and their envs, one `GridWorld` batch) step
and update as batched tensors; the meta-gradient is `torch.autograd.grad(..., create_graph=True)` through the K
updates, and the ES candidates run the LPG per agent with `torch.func.vmap` over `functional_call`.

The frozen LPG also trains neural agents (`NetworkAgent`: a policy network and a y network, each with its own
optimiser) through the same loss (`lpg_objective`); `meta_test_minatar` does so on a MinAtar game with the authors'
MinAtar agent settings (`MinAtarConfig`) and normalises the return by A2C's with the same networks and budget:

    result = meta_test_minatar(load_lpg("runs/groove/lpg.pt"), "breakout", updates=2000)
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn

from policylab.core.agent import restore_generator
from policylab.core.buffers import compute_gae
from policylab.core.envs.grid_worlds import NUM_ACTIONS, GridLevels, GridWorld, LevelDistribution, sample_levels
from policylab.core.envs.minatar import MinAtarVecEnv
from policylab.core.envs.vector import VecEnv
from policylab.core.files import atomic_write
from policylab.core.nets import mlp
from policylab.core.runs import RunDirectory, run_iterations

CHECKPOINT_FORMAT = "policylab-groove/1"
CURRICULA = ("uniform", "regret", "value-loss")
Params = dict[str, torch.Tensor]
"""A batch of linear heads: `table` (agents, states, outputs), `time` and `bias` (agents, outputs)"""


@dataclasses.dataclass
class GROOVEConfig:
    """Defaults are the authors' (EmptyJackson/groove) for the tabular grid worlds, except the number of agents
    (theirs: 512)."""

    curriculum: Literal["uniform", "regret", "value-loss"] = "regret"
    """uniform: fresh random levels (LPG); regret: prioritised replay by algorithmic regret (GROOVE);
    value-loss: prioritised replay by positive value loss (PLR)"""
    meta_optimizer: Literal["gradient", "es"] = "gradient"
    """gradient: back-propagation through the K agent updates; es: antithetic evolution strategies"""
    num_agents: int = 64
    """agents trained at once, each on its own level"""
    envs_per_agent: int = 64
    """parallel envs of one agent's rollouts"""
    rollout_length: int = 20
    """steps per env in one agent update's rollout"""
    agent_updates: int = 5
    """K: agent updates between meta-updates (unrolled by the meta-gradient)"""
    lifetime: int = 250
    """agent updates before an agent's level is scored and replaced (a multiple of agent_updates)"""
    target_size: int = 8
    """m: size of the prediction vector y"""
    embedding_width: int = 16
    """hidden width of φ, the MLP that embeds y for the LPG"""
    hidden_size: int = 256
    """width of the LPG's reverse-time GRU"""
    actor_learning_rate: float = 40.0
    """SGD step of the agents' linear actors (LPG and A2C)"""
    critic_learning_rate: float = 4.0
    """SGD step of the agents' prediction vectors and value critics"""
    max_grad_norm: float = 0.5
    """each agent's actor and critic gradients are clipped to this global norm"""
    target_coefficient: float = 0.5
    """weight of KL(y ‖ ŷ) in the agent's loss"""
    meta_learning_rate: float = 1e-4
    """Adam step of the LPG"""
    gamma: float = 0.99
    gae_lambda: float = 0.95
    policy_entropy_coefficient: float = 0.05
    """meta-loss: − this × H(π) of the updated agents"""
    policy_l2_coefficient: float = 5e-3
    """meta-loss: + this × E[π̂²]"""
    target_entropy_coefficient: float = 1e-3
    """meta-loss: − this × H(y) of the updated agents"""
    target_l2_coefficient: float = 1e-3
    """meta-loss: + this × E‖ŷ‖²"""
    a2c_entropy_coefficient: float = 0.01
    """entropy bonus of the A2C reference"""
    buffer_size: int = 4000
    """levels kept by the prioritised level buffer"""
    replay_probability: float = 0.5
    """chance that a new agent replays a buffered level rather than a fresh one"""
    rank_temperature: float = 0.1
    """β: replay weights ∝ (1/rank)^(1/β)"""
    score_envs: int = 16
    """envs per level when returns are measured for level scores and meta-tests (one episode each)"""
    es_sigma: float = 0.01
    """ES perturbation scale (meta_optimizer=es)"""
    es_learning_rate: float = 1e-3
    """Adam step of the LPG under ES"""
    levels: LevelDistribution = dataclasses.field(default_factory=LevelDistribution)
    """the random level distribution"""
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.curriculum not in CURRICULA:
            raise ValueError(f"unknown curriculum {self.curriculum!r}; choose one of {', '.join(CURRICULA)}")
        if self.meta_optimizer not in ("gradient", "es"):
            raise ValueError(f"meta_optimizer must be 'gradient' or 'es', got {self.meta_optimizer!r}")
        if self.lifetime < self.agent_updates or self.lifetime % self.agent_updates:
            raise ValueError(
                f"lifetime ({self.lifetime}) must be a positive multiple of agent_updates ({self.agent_updates})"
            )
        if self.meta_optimizer == "es" and self.num_agents % 2:
            raise ValueError(f"ES pairs agents: num_agents must be even, got {self.num_agents}")
        if min(self.num_agents, self.envs_per_agent, self.rollout_length, self.score_envs) < 1:
            raise ValueError("num_agents, envs_per_agent, rollout_length and score_envs must be at least 1")


# -- the agents: batched linear heads over the tabular one-hot -------------------------------------------------


def init_heads(
    num_agents: int, num_states: int, outputs: int, generator: torch.Generator, dtype: torch.dtype = torch.float32
) -> Params:
    """Linear heads over (one-hot state, time feature), LeCun-normal weights and zero biases like Flax's Dense."""
    scale = 1.0 / math.sqrt(num_states + 1)
    return {
        "table": scale * torch.randn(num_agents, num_states, outputs, generator=generator, dtype=dtype),
        "time": scale * torch.randn(num_agents, outputs, generator=generator, dtype=dtype),
        "bias": torch.zeros(num_agents, outputs, dtype=dtype),
    }


def apply_heads(params: Params, index: torch.Tensor, time_feature: torch.Tensor) -> torch.Tensor:
    """Outputs (agents, ..., outputs) of each agent's head at states given as one-hot positions `index` and time
    features (agents, ...): a linear layer over the one-hot observation, computed as a row lookup."""
    agents, states, outputs = params["table"].shape
    rows = index.long() + states * torch.arange(agents, device=index.device).view(-1, *(1,) * (index.dim() - 1))
    table = params["table"].reshape(agents * states, outputs)[rows]
    shape = (agents, *(1,) * (index.dim() - 1), outputs)
    return table + time_feature.to(table.dtype)[..., None] * params["time"].view(shape) + params["bias"].view(shape)


def clipped_sgd_step(params: Params, grads: list[torch.Tensor], learning_rate: float, max_norm: float) -> Params:
    """One SGD step per agent with that agent's gradient clipped to `max_norm` in global norm (optax's
    clip_by_global_norm); differentiable when the gradients are."""
    squared = sum(grad.reshape(grad.shape[0], -1).pow(2).sum(1) for grad in grads)
    norm = (squared + 1e-20).sqrt()
    scale = max_norm / torch.maximum(norm, torch.full_like(norm, max_norm))
    return {
        name: value - learning_rate * scale.view(-1, *(1,) * (grad.dim() - 1)) * grad
        for (name, value), grad in zip(params.items(), grads)
    }


def with_gradients(params: Params) -> Params:
    """The parameters as tensors that record gradients (leaves when they had no graph)."""
    return {name: value if value.requires_grad else value.detach().requires_grad_() for name, value in params.items()}


def detached(params: Params) -> Params:
    return {name: value.detach() for name, value in params.items()}


@dataclasses.dataclass
class Transitions:
    """What every rollout records, tensors (agents, envs, steps)."""

    action: torch.Tensor
    reward: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor

    @property
    def done(self) -> torch.Tensor:
        return self.terminated | self.truncated


@dataclasses.dataclass
class Trajectory(Transitions):
    """One rollout of every tabular agent's envs; `next_index` / `next_time` are the states reached (the episode's
    last one where it ended, not the reset that replaced it)."""

    index: torch.Tensor
    time: torch.Tensor
    next_index: torch.Tensor
    next_time: torch.Tensor


@dataclasses.dataclass
class ObservationTrajectory(Transitions):
    """One rollout of agents that read whole observations, (agents, envs, steps, *observation shape); the next
    observation is the episode's last one where it ended."""

    observation: torch.Tensor
    next_observation: torch.Tensor


def sample_actions(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One action per row of `logits` (..., actions), flattened over the leading axes, drawn from softmax(logits)."""
    probabilities = torch.softmax(logits.float(), -1).reshape(-1, logits.shape[-1])
    return torch.multinomial(probabilities, 1, generator=generator).squeeze(1)


@torch.no_grad()
def sample_rollout(
    env: VecEnv,
    observation: torch.Tensor,
    steps: int,
    generator: torch.Generator,
    agents: int,
    policy_logits: Callable[[torch.Tensor], torch.Tensor],
    recorded: Callable[[torch.Tensor], dict[str, torch.Tensor]],
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """`steps` steps of every env (rows agent-major, as many per agent) with actions sampled from
    softmax(policy_logits(observation)); returns, stacked as (agents, envs, steps, ...), the fields `recorded` takes
    from each observation, those of the observation reached (as next_<field>), the actions, rewards and flags, and
    the observation to continue from."""
    envs = env.num_envs // agents
    records: dict[str, list[torch.Tensor]] = {}
    for _ in range(steps):
        action = sample_actions(policy_logits(observation), generator)
        fields = recorded(observation)
        observation, reward, terminated, truncated, info = env.step(action)
        reached = {f"next_{name}": value for name, value in recorded(info["final_obs"]).items()}
        step = fields | {"action": action, "reward": reward, "terminated": terminated, "truncated": truncated}
        for name, value in (step | reached).items():
            records.setdefault(name, []).append(value.view(agents, envs, *value.shape[1:]))
    return {name: torch.stack(values, 2) for name, values in records.items()}, observation


def tabular_fields(observation: torch.Tensor) -> dict[str, torch.Tensor]:
    """The one-hot's position and the time feature of GridWorld's index observations."""
    return {"index": observation[:, 0].long(), "time": observation[:, 1]}


def collect_rollout(
    env: GridWorld, observation: torch.Tensor, actor: Params, steps: int, generator: torch.Generator
) -> tuple[Trajectory, torch.Tensor]:
    """`steps` steps of every env, actions sampled from each agent's softmax policy (env rows agent-major, as
    many per agent); returns the trajectory and the observation to continue from. `env` gives index
    observations."""
    agents = actor["bias"].shape[0]
    envs = env.num_envs // agents

    def policy_logits(observation: torch.Tensor) -> torch.Tensor:
        fields = tabular_fields(observation)
        return apply_heads(actor, fields["index"].view(agents, envs), fields["time"].view(agents, envs))

    records, observation = sample_rollout(env, observation, steps, generator, agents, policy_logits, tabular_fields)
    return Trajectory(**records), observation


def taken_log_probabilities(logits: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log softmax(logits) at the taken `actions` and the softmax policy's entropy, one per row of `actions`."""
    log_probabilities = torch.log_softmax(logits, -1)
    taken = log_probabilities.gather(-1, actions[..., None]).squeeze(-1)
    return taken, -(log_probabilities.exp() * log_probabilities).sum(-1)


def action_log_probabilities(actor: Params, trajectory: Trajectory) -> tuple[torch.Tensor, torch.Tensor]:
    """log π(a_t|s_t) of the taken actions and the policy's entropy at each step, (agents, envs, steps) each."""
    return taken_log_probabilities(apply_heads(actor, trajectory.index, trajectory.time), trajectory.action)


def per_agent_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean over every axis but the first (agents)."""
    return values.reshape(values.shape[0], -1).mean(1)


# -- advantage estimation, the value critic and the A2C reference ----------------------------------------------


def gae_per_agent(
    values: torch.Tensor, next_values: torch.Tensor, transitions: Transitions, gamma: float, gae_lambda: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE advantages and returns (agents, envs, steps) from the values of the states and of the states reached."""
    agents, envs, steps = values.shape

    def time_major(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.permute(2, 0, 1).reshape(steps, agents * envs)

    advantages, returns = compute_gae(
        time_major(transitions.reward.to(values.dtype)),
        time_major(values),
        time_major(next_values),
        time_major(transitions.terminated),
        time_major(transitions.truncated),
        gamma,
        gae_lambda,
    )

    def agent_major(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.reshape(steps, agents, envs).permute(1, 2, 0)

    return agent_major(advantages), agent_major(returns)


def advantage_estimates(
    value: Params, trajectory: Trajectory, gamma: float, gae_lambda: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE advantages and returns (agents, envs, steps) under each agent's value critic, without gradients."""
    with torch.no_grad():
        values = apply_heads(value, trajectory.index, trajectory.time).squeeze(-1)
        next_values = apply_heads(value, trajectory.next_index, trajectory.next_time).squeeze(-1)
        return gae_per_agent(values, next_values, trajectory, gamma, gae_lambda)


def value_loss(predictions: torch.Tensor, returns: torch.Tensor) -> torch.Tensor:
    """Summed over agents: 0.5·mean (V(s) − return)²."""
    return 0.5 * per_agent_mean((predictions - returns) ** 2).sum()


def policy_gradient_loss(
    log_probability: torch.Tensor, entropy: torch.Tensor, advantages: torch.Tensor, entropy_coefficient: float
) -> torch.Tensor:
    """A2C's actor loss summed over agents: −mean(log π(a|s)·A + c·H(π))."""
    return -per_agent_mean(log_probability * advantages + entropy_coefficient * entropy).sum()


def value_regression_step(value: Params, trajectory: Trajectory, returns: torch.Tensor, config: GROOVEConfig) -> Params:
    """One clipped SGD step of each value critic towards its GAE returns."""
    value = with_gradients(detached(value))
    with torch.enable_grad():
        predictions = apply_heads(value, trajectory.index, trajectory.time).squeeze(-1)
        grads = torch.autograd.grad(value_loss(predictions, returns), list(value.values()))
    return detached(clipped_sgd_step(value, list(grads), config.critic_learning_rate, config.max_grad_norm))


def a2c_update(actor: Params, value: Params, trajectory: Trajectory, config: GROOVEConfig) -> tuple[Params, Params]:
    """One A2C update of every agent: policy gradient with GAE advantages and an entropy bonus, and a value step."""
    advantages, returns = advantage_estimates(value, trajectory, config.gamma, config.gae_lambda)
    actor = with_gradients(detached(actor))
    with torch.enable_grad():
        log_probability, entropy = action_log_probabilities(actor, trajectory)
        loss = policy_gradient_loss(log_probability, entropy, advantages, config.a2c_entropy_coefficient)
        grads = torch.autograd.grad(loss, list(actor.values()))
    actor = detached(clipped_sgd_step(actor, list(grads), config.actor_learning_rate, config.max_grad_norm))
    return actor, value_regression_step(value, trajectory, returns, config)


# -- the learned policy gradient ---------------------------------------------------------------------------------


class LPGNetwork(nn.Module):
    """LPG: per step [r_t, d_t, π(a_t|s_t), φ(y_t), (1−d_t)·φ(y_{t+1})] read by a GRU running backwards in time
    (its state reset at episode ends), then π̂ = Dense(1) and ŷ = softmax(Dense(m)) of its ReLU'd outputs."""

    def __init__(self, target_size: int = 8, embedding_width: int = 16, hidden_size: int = 256) -> None:
        super().__init__()
        self.embedding = mlp(target_size, 1, (embedding_width,))
        self.input_gates = nn.Linear(5, 3 * hidden_size)
        self.hidden_gates = nn.Linear(hidden_size, 3 * hidden_size)
        self.policy_head = nn.Linear(hidden_size, 1)
        self.target_head = nn.Linear(hidden_size, target_size)
        self.hidden_size = hidden_size

    def forward(
        self,
        reward: torch.Tensor,
        done: torch.Tensor,
        action_probability: torch.Tensor,
        target: torch.Tensor,
        next_target: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (..., steps) and targets (..., steps, m); returns π̂ (..., steps) and ŷ (..., steps, m)."""
        not_done = 1.0 - done.to(reward.dtype)
        features = torch.stack(
            [
                reward,
                1.0 - not_done,
                action_probability,
                self.embedding(target).squeeze(-1),
                not_done * self.embedding(next_target).squeeze(-1),
            ],
            dim=-1,
        )
        batch_shape, steps = features.shape[:-2], features.shape[-2]
        input_gates = self.input_gates(features.reshape(-1, steps, 5))
        not_done = not_done.reshape(-1, steps)
        hidden = input_gates.new_zeros(input_gates.shape[0], self.hidden_size)
        outputs = []
        for step in reversed(range(steps)):
            hidden = hidden * not_done[:, step, None]  # a new episode starts after a done step
            reset_gate, update_gate, candidate = input_gates[:, step].chunk(3, -1)
            hidden_reset, hidden_update, hidden_candidate = self.hidden_gates(hidden).chunk(3, -1)
            reset = torch.sigmoid(reset_gate + hidden_reset)
            update = torch.sigmoid(update_gate + hidden_update)
            new = torch.tanh(candidate + reset * hidden_candidate)
            hidden = (1.0 - update) * new + update * hidden
            outputs.append(hidden)
        hidden = torch.relu(torch.stack(outputs[::-1], dim=1)).reshape(*batch_shape, steps, self.hidden_size)
        return self.policy_head(hidden).squeeze(-1), torch.softmax(self.target_head(hidden), -1)


LPG = Callable[..., tuple[torch.Tensor, torch.Tensor]]
"""Anything called like `LPGNetwork` on (agents, envs, steps) inputs"""


def per_agent_lpg(network: LPGNetwork, params: dict[str, torch.Tensor]) -> LPG:
    """The LPG with its own parameters for each agent (each entry of `params` has a leading agent axis)."""

    def single(agent_params: dict[str, torch.Tensor], *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.func.functional_call(network, agent_params, inputs)

    return lambda *inputs: torch.func.vmap(single)(params, *inputs)


@dataclasses.dataclass
class AgentUpdateOutputs:
    """What one LPG agent update produced, per agent: the LPG's outputs and the updated agent's entropies."""

    policy_target: torch.Tensor
    """π̂ (agents, envs, steps)"""
    target: torch.Tensor
    """ŷ (agents, envs, steps, m)"""
    policy_entropy: torch.Tensor
    """(agents,) H(π) of the updated actor on the rollout's states"""
    target_entropy: torch.Tensor
    """(agents,) H(y) of the updated prediction vector there"""


def lpg_objective(
    lpg: LPG,
    transitions: Transitions,
    log_probability: torch.Tensor,
    log_target: torch.Tensor,
    next_target: torch.Tensor,
    target_coefficient: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The agent's loss under the LPG, summed over agents: mean(log π(a|s)·π̂) + c·mean KL(y(s) ‖ ŷ), from the
    agent's log π(a_t|s_t) (agents, envs, steps), log y(s_t) and y(s_{t+1}) (agents, envs, steps, m), which the LPG
    reads cut from the agent's graph; returns (loss, π̂, ŷ). π̂ and ŷ keep their graph to the LPG's weights while
    gradients are recorded."""
    policy_target, target = lpg(
        transitions.reward.to(log_probability.dtype),
        transitions.done,
        log_probability.detach().exp(),
        log_target.detach().exp(),
        next_target.detach(),
    )
    kl = (log_target.exp() * (log_target - torch.log(target + 1e-8))).sum(-1)
    loss = per_agent_mean(log_probability * policy_target) + target_coefficient * per_agent_mean(kl)
    return loss.sum(), policy_target, target


def lpg_agent_loss(
    lpg: LPG, actor: Params, critic: Params, trajectory: Trajectory, target_coefficient: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`lpg_objective` of the tabular agents (linear heads `actor` for π and `critic` for y)."""
    log_probability, _ = action_log_probabilities(actor, trajectory)
    log_target = torch.log_softmax(apply_heads(critic, trajectory.index, trajectory.time), -1)
    next_target = torch.softmax(apply_heads(critic, trajectory.next_index, trajectory.next_time), -1)
    return lpg_objective(lpg, trajectory, log_probability, log_target, next_target, target_coefficient)


def lpg_agent_update(
    lpg: LPG,
    actor: Params,
    critic: Params,
    trajectory: Trajectory,
    config: GROOVEConfig,
    meta_gradient: bool = False,
) -> tuple[Params, Params, AgentUpdateOutputs]:
    """One clipped SGD step of every agent on the LPG's loss. With `meta_gradient` the step keeps its graph (the
    new parameters are differentiable functions of the LPG's weights); else the LPG runs without gradients."""
    actor, critic = with_gradients(actor), with_gradients(critic)
    with torch.enable_grad():
        if meta_gradient:
            loss, policy_target, target = lpg_agent_loss(lpg, actor, critic, trajectory, config.target_coefficient)
        else:
            frozen = _without_gradients(lpg)
            loss, policy_target, target = lpg_agent_loss(frozen, actor, critic, trajectory, config.target_coefficient)
        grads = torch.autograd.grad(loss, [*actor.values(), *critic.values()], create_graph=meta_gradient)
    actor = clipped_sgd_step(actor, list(grads[:3]), config.actor_learning_rate, config.max_grad_norm)
    critic = clipped_sgd_step(critic, list(grads[3:]), config.critic_learning_rate, config.max_grad_norm)
    if not meta_gradient:
        actor, critic = detached(actor), detached(critic)
    with torch.set_grad_enabled(meta_gradient):
        _, policy_entropy = action_log_probabilities(actor, trajectory)
        log_target = torch.log_softmax(apply_heads(critic, trajectory.index, trajectory.time), -1)
        target_entropy = -(log_target.exp() * log_target).sum(-1)
    outputs = AgentUpdateOutputs(policy_target, target, per_agent_mean(policy_entropy), per_agent_mean(target_entropy))
    return actor, critic, outputs


def _without_gradients(lpg: LPG) -> LPG:
    def call(*inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return lpg(*inputs)

    return call


def normalised_per_agent(advantages: torch.Tensor) -> torch.Tensor:
    """Advantages (agents, envs, steps) less their mean and over their standard deviation, per agent."""
    mean = per_agent_mean(advantages).view(-1, 1, 1)
    std = advantages.reshape(advantages.shape[0], -1).std(1).view(-1, 1, 1)
    return (advantages - mean) / (std + 1e-8)


def meta_loss(
    actor: Params,
    trajectory: Trajectory,
    advantages: torch.Tensor,
    updates: list[AgentUpdateOutputs],
    config: GROOVEConfig,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean over agents of −mean(log π·Â) − c_H·H(π) + c_π̂·E[π̂²] − c_Hy·H(y) + c_ŷ·E‖ŷ‖², with Â normalised per
    agent and the regularisers averaged over the K updates; returns (loss, its terms)."""
    log_probability, _ = action_log_probabilities(actor, trajectory)
    terms = {
        "policy_gradient": -per_agent_mean(log_probability * normalised_per_agent(advantages)),
        "policy_entropy": torch.stack([update.policy_entropy for update in updates]).mean(0),
        "policy_target_l2": torch.stack([per_agent_mean(update.policy_target**2) for update in updates]).mean(0),
        "target_entropy": torch.stack([update.target_entropy for update in updates]).mean(0),
        "target_l2": torch.stack([per_agent_mean((update.target**2).sum(-1)) for update in updates]).mean(0),
    }
    loss = (
        terms["policy_gradient"]
        - config.policy_entropy_coefficient * terms["policy_entropy"]
        + config.policy_l2_coefficient * terms["policy_target_l2"]
        - config.target_entropy_coefficient * terms["target_entropy"]
        + config.target_l2_coefficient * terms["target_l2"]
    )
    return loss.mean(), {name: value.mean() for name, value in terms.items()}


# -- training and scoring agents on given levels -----------------------------------------------------------------


@torch.no_grad()
def first_episode_returns(
    env: VecEnv, observation: torch.Tensor, max_steps: int, choose_action: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """The return of every env's first episode (cut after `max_steps` steps), actions from `choose_action`."""
    returns = torch.zeros(env.num_envs, device=observation.device)
    running = torch.ones(env.num_envs, dtype=torch.bool, device=observation.device)
    for _ in range(max_steps):
        observation, reward, terminated, truncated, _ = env.step(choose_action(observation))
        returns += reward * running
        running &= ~(terminated | truncated)
        if not running.any():
            break
    return returns


@torch.no_grad()
def evaluate_returns(
    levels: GridLevels, actor: Params | None, envs: int, generator: torch.Generator, device: str | torch.device
) -> torch.Tensor:
    """Mean return (per level) of one episode in each of `envs` envs per level, sampling the agents' policies
    (`actor` holds one agent per level; None: the uniform random policy)."""
    env = GridWorld(levels=levels.repeat_interleave(envs), device=device, observation="index")
    observation, _ = env.reset(seed=int(torch.randint(2**62, (1,), generator=generator)))

    def choose_action(observation: torch.Tensor) -> torch.Tensor:
        if actor is None:
            return torch.randint(NUM_ACTIONS, (env.num_envs,), generator=generator).to(device)
        fields = tabular_fields(observation)
        logits = apply_heads(actor, fields["index"].view(len(levels), envs), fields["time"].view(-1, envs))
        return sample_actions(logits, generator)

    returns = first_episode_returns(env, observation, int(levels.episode_length.max()), choose_action)
    return returns.view(len(levels), envs).mean(1)


def train_on_levels(
    levels: GridLevels,
    updates: int,
    config: GROOVEConfig,
    generator: torch.Generator,
    lpg: LPG | None = None,
) -> Params:
    """Fresh agents, one per level, trained for `updates` updates (`envs_per_agent` x `rollout_length` steps
    each) by the frozen `lpg`, or by A2C when it is None; returns their actors."""
    agents, device = len(levels), torch.device(config.device)
    env = GridWorld(levels=levels.repeat_interleave(config.envs_per_agent), device=device, observation="index")
    observation, _ = env.reset(seed=int(torch.randint(2**62, (1,), generator=generator)))
    states = env.num_states
    actor = init_heads(agents, states, NUM_ACTIONS, generator)
    second = init_heads(agents, states, 1 if lpg is None else config.target_size, generator)  # value or y
    actor, second = {k: v.to(device) for k, v in actor.items()}, {k: v.to(device) for k, v in second.items()}
    for _ in range(updates):
        trajectory, observation = collect_rollout(env, observation, actor, config.rollout_length, generator)
        if lpg is None:
            actor, second = a2c_update(actor, second, trajectory, config)
        else:
            actor, second, _ = lpg_agent_update(lpg, actor, second, trajectory, config)
    return actor


# -- the prioritised level buffer ------------------------------------------------------------------------------


def rank_weights(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """PLR's rank prioritisation: weights ∝ (1/rank)^(1/β), rank 1 for the highest score (ties by position)."""
    order = torch.argsort(scores, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(1, len(scores) + 1, device=scores.device)
    weights = (1.0 / ranks.double()) ** (1.0 / temperature)
    return weights / weights.sum()


class LevelBuffer:
    """Prioritised level replay: up to `capacity` scored levels. `sample` replays a buffered level with
    `replay_probability` (weights by rank among the levels not in use) or gives a fresh one; `update` records a
    finished level's score, a fresh level taking the place of the lowest-scoring one once the buffer is full (if
    it scores higher)."""

    def __init__(self, capacity: int, replay_probability: float, temperature: float) -> None:
        if capacity < 1 or not 0.0 <= replay_probability <= 1.0 or temperature <= 0:
            raise ValueError("the level buffer needs capacity >= 1, replay_probability in [0, 1], temperature > 0")
        self.capacity, self.replay_probability, self.temperature = capacity, replay_probability, temperature
        self.levels: GridLevels | None = None
        self.scores = torch.empty(0, dtype=torch.float64)
        self.active = torch.empty(0, dtype=torch.bool)

    def __len__(self) -> int:
        return len(self.scores)

    def replay_probabilities(self) -> torch.Tensor:
        """Chance of each slot being chosen by one replay draw (0 for slots in use)."""
        probabilities = torch.zeros(len(self), dtype=torch.float64)
        free = ~self.active
        if free.any():
            probabilities[free] = rank_weights(self.scores[free], self.temperature)
        return probabilities

    def sample(
        self, count: int, generator: torch.Generator, fresh_levels: Callable[[int], GridLevels]
    ) -> tuple[GridLevels, torch.Tensor]:
        """`count` levels and their slots (−1 for fresh levels); replayed slots are marked in use."""
        replays = int((torch.rand(count, generator=generator) < self.replay_probability).sum())
        replays = min(replays, int((~self.active).sum()))
        slots = torch.full((count,), -1, dtype=torch.long)
        parts = []
        if replays:
            chosen = torch.multinomial(self.replay_probabilities(), replays, replacement=False, generator=generator)
            slots[:replays] = chosen
            self.active[chosen] = True
            parts.append(self.levels.select(chosen))
        if count > replays:
            parts.append(fresh_levels(count - replays))
        order = torch.randperm(count, generator=generator)
        return GridLevels.cat(parts).select(order), slots[order]

    def update(self, levels: GridLevels, slots: torch.Tensor, scores: torch.Tensor) -> None:
        """Record the scores of finished levels (from `sample`) and release their slots."""
        scores = scores.detach().double().cpu()
        replayed = slots >= 0
        self.scores[slots[replayed]] = scores[replayed]
        self.active[slots[replayed]] = False
        for row in torch.nonzero(~replayed).flatten().tolist():
            level = levels.select(slice(row, row + 1))
            if len(self) < self.capacity:
                self.levels = level if self.levels is None else GridLevels.cat([self.levels, level])
                self.scores = torch.cat([self.scores, scores[row : row + 1]])
                self.active = torch.cat([self.active, torch.zeros(1, dtype=torch.bool)])
                continue
            candidates = torch.where(self.active, torch.inf, self.scores)
            lowest = int(candidates.argmin())
            if candidates[lowest] < scores[row]:
                self.levels.put(torch.tensor([lowest]), level)
                self.scores[lowest] = scores[row]

    def state_dict(self) -> dict[str, Any]:
        return {
            "levels": None if self.levels is None else self.levels.tensors(),
            "scores": self.scores,
            "active": self.active,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.levels = None if state["levels"] is None else GridLevels(**state["levels"])
        self.scores, self.active = state["scores"], state["active"]


# -- meta-training ---------------------------------------------------------------------------------------------


class GROOVE:
    """Meta-trains an `LPGNetwork` (`self.lpg`) with agents on levels from the configured curriculum.

    `step()` runs one meta-update: K LPG updates of every agent, then the LPG's update (meta-gradient or ES), then
    agents at the end of their lifetime are scored and replaced. `run()` adds checkpoints, metrics and a progress
    bar. The first agents' lifetimes are staggered (agent i lives (i+1)/num_agents of a lifetime, rounded up to K
    updates) so that agents of every age train the LPG at every meta-update.
    """

    def __init__(self, config: GROOVEConfig | None = None) -> None:
        self.config = config = config or GROOVEConfig()
        self.device = torch.device(config.device)
        self.generator = torch.Generator().manual_seed(config.seed)
        with torch.random.fork_rng(devices=[]):  # the LPG's initial weights from the seed, the global stream untouched
            torch.manual_seed(config.seed)
            self.lpg = LPGNetwork(config.target_size, config.embedding_width, config.hidden_size).to(self.device)
        learning_rate = config.meta_learning_rate if config.meta_optimizer == "gradient" else config.es_learning_rate
        self.meta_optimizer = torch.optim.Adam(self.lpg.parameters(), lr=learning_rate)
        self.buffer = LevelBuffer(config.buffer_size, config.replay_probability, config.rank_temperature)
        self.meta_updates = 0
        self.history: list[dict[str, float]] = []
        envs, distinct = config.envs_per_agent, self._distinct_agents
        levels, self.slots = self._new_levels(distinct)
        levels = self._pair_copies(levels)
        self.slots = self._pair_copies(self.slots)
        self.env = GridWorld(levels=levels.repeat_interleave(envs), device=self.device, observation="index")
        self.observation, _ = self.env.reset(seed=config.seed)
        self.levels = levels
        self.actor = self._init_agents(NUM_ACTIONS)
        self.critic = self._init_agents(config.target_size)
        self.value = self._init_agents(1)
        steps = config.agent_updates
        first = [steps * math.ceil(config.lifetime * (i + 1) / distinct / steps) for i in range(distinct)]
        self.lifetimes = self._pair_copies(torch.tensor(first))
        self.ages = torch.zeros(config.num_agents, dtype=torch.long)

    @property
    def _distinct_agents(self) -> int:
        """Agents with a level of their own (ES runs each level twice, for a pair of antithetic candidates)."""
        return self.config.num_agents // (2 if self.config.meta_optimizer == "es" else 1)

    def _pair_copies(self, values: Any) -> Any:
        if self.config.meta_optimizer != "es":
            return values
        return values.repeat_interleave(2) if isinstance(values, GridLevels) else values.repeat_interleave(2, 0)

    def _init_agents(self, outputs: int) -> Params:
        heads = init_heads(self._distinct_agents, self.env.num_states, outputs, self.generator)
        return {name: self._pair_copies(value).to(self.device) for name, value in heads.items()}

    def _new_levels(self, count: int) -> tuple[GridLevels, torch.Tensor]:
        def fresh(number: int) -> GridLevels:
            return sample_levels(number, self.generator, self.config.levels)

        if self.config.curriculum == "uniform":
            return fresh(count), torch.full((count,), -1, dtype=torch.long)
        return self.buffer.sample(count, self.generator, fresh)

    # -- one meta-update ----------------------------------------------------------------------------------------

    def step(self) -> dict[str, float]:
        """One meta-update, then the replacement of agents whose lifetime ended; returns its metrics."""
        started = time.perf_counter()
        if self.config.meta_optimizer == "gradient":
            stats = self._meta_gradient_step()
        else:
            stats = self._evolution_strategies_step()
        self.ages += self.config.agent_updates
        stats |= self._replace_finished_agents()
        self.meta_updates += 1
        stats |= {"meta_update": self.meta_updates, "seconds": time.perf_counter() - started}
        self.history.append(stats)
        return stats

    def _rollout(self, actor: Params) -> Trajectory:
        trajectory, self.observation = collect_rollout(
            self.env, self.observation, detached(actor), self.config.rollout_length, self.generator
        )
        return trajectory

    def _meta_gradient_step(self) -> dict[str, float]:
        config = self.config
        actor, critic = self.actor, self.critic
        updates, rewards = [], []
        for _ in range(config.agent_updates):
            trajectory = self._rollout(actor)
            rewards.append(trajectory.reward.mean())
            actor, critic, outputs = lpg_agent_update(self.lpg, actor, critic, trajectory, config, meta_gradient=True)
            updates.append(outputs)
        trajectory = self._rollout(actor)
        advantages, returns = advantage_estimates(self.value, trajectory, config.gamma, config.gae_lambda)
        loss, terms = meta_loss(actor, trajectory, advantages, updates, config)
        self.meta_optimizer.zero_grad()
        loss.backward()
        self.meta_optimizer.step()
        self.actor, self.critic = detached(actor), detached(critic)
        self.value = value_regression_step(self.value, trajectory, returns, config)
        stats = {"meta_loss": loss.item(), "reward_per_step": torch.stack(rewards).mean().item()}
        return stats | {name: value.item() for name, value in terms.items()}

    def _evolution_strategies_step(self) -> dict[str, float]:
        """Antithetic ES: agent 2i runs the LPG's weights + σε_i and agent 2i+1 those − σε_i on the same level;
        the pair's better agent (mean reward of a rollout after the K updates) gives ε_i a vote of ±1, and both
        copies go on from the better one."""
        config = self.config
        base = {name: value.detach() for name, value in self.lpg.named_parameters()}
        noise = {
            name: torch.randn((self._distinct_agents, *value.shape), generator=self.generator).to(self.device)
            for name, value in base.items()
        }
        candidates = {
            name: (value + config.es_sigma * torch.stack([noise[name], -noise[name]], 1).flatten(0, 1))
            for name, value in base.items()
        }
        lpg = per_agent_lpg(self.lpg, candidates)
        actor, critic = self.actor, self.critic
        for _ in range(config.agent_updates):
            trajectory = self._rollout(actor)
            actor, critic, _ = lpg_agent_update(lpg, actor, critic, trajectory, config)
        trajectory = self._rollout(actor)
        _, returns = advantage_estimates(self.value, trajectory, config.gamma, config.gae_lambda)
        value = value_regression_step(self.value, trajectory, returns, config)
        fitness = per_agent_mean(trajectory.reward.double())
        votes = torch.sign(fitness[0::2] - fitness[1::2])
        self.meta_optimizer.zero_grad()
        for name, parameter in self.lpg.named_parameters():
            estimate = (votes.view(-1, *(1,) * parameter.dim()).to(noise[name].dtype) * noise[name]).mean(0)
            parameter.grad = -estimate / config.es_sigma  # ascend the fitness
        self.meta_optimizer.step()
        better = torch.where(votes >= 0, 0, 1) + 2 * torch.arange(len(votes), device=votes.device)
        source = better.repeat_interleave(2)
        self.actor, self.critic, self.value = (
            {name: tensor[source] for name, tensor in params.items()} for params in (actor, critic, value)
        )
        envs = config.envs_per_agent
        env_rows = (source[:, None] * envs + torch.arange(envs, device=source.device)).flatten()
        self.env.state = self.env.state[env_rows]
        self.env.elapsed_steps = self.env.elapsed_steps[env_rows]
        self.observation = self.env.observations()
        return {"fitness": fitness.mean().item(), "fitness_max": fitness.max().item()}

    # -- lifetimes, level scores and the curriculum --------------------------------------------------------------

    def _replace_finished_agents(self) -> dict[str, float]:
        finished = torch.nonzero(self.ages >= self.lifetimes).flatten()
        if self.config.meta_optimizer == "es":
            finished = finished[finished % 2 == 0]  # one score per pair; both copies are replaced
        if len(finished) == 0:
            return {"finished": 0}
        config = self.config
        levels = self.levels.select(finished)
        stats: dict[str, float] = {"finished": len(finished)}
        if config.curriculum != "uniform":
            scores, score_stats = self._score_levels(finished, levels)
            self.buffer.update(levels, self.slots[finished], scores)
            stats |= score_stats | {"buffer_size": len(self.buffer)}
        new_levels, new_slots = self._new_levels(len(finished))
        agents = finished
        if config.meta_optimizer == "es":  # both copies of each pair
            agents = torch.stack([finished, finished + 1], 1).flatten()
        new_levels, new_slots = self._pair_copies(new_levels), self._pair_copies(new_slots)
        self.levels.put(agents, new_levels)
        self.slots[agents] = new_slots
        for params, outputs in ((self.actor, NUM_ACTIONS), (self.critic, config.target_size), (self.value, 1)):
            fresh = init_heads(len(finished), self.env.num_states, outputs, self.generator)
            for name, value in fresh.items():
                params[name][agents] = self._pair_copies(value).to(self.device)
        self.ages[agents] = 0
        self.lifetimes[agents] = config.lifetime
        envs = config.envs_per_agent
        env_rows = (agents[:, None] * envs + torch.arange(envs)).flatten().to(self.device)
        self.observation = self.env.set_levels(env_rows, new_levels.repeat_interleave(envs))
        return stats

    def _score_levels(self, agents: torch.Tensor, levels: GridLevels) -> tuple[torch.Tensor, dict[str, float]]:
        """Algorithmic regret (A2C's return after the same number of updates minus the agent's) or positive value
        loss (mean of the positive GAE advantages of a fresh rollout under the agent's value critic)."""
        config = self.config
        actor = {name: value[agents] for name, value in self.actor.items()}
        if config.curriculum == "regret":
            updates = int(self.lifetimes[agents].max())
            a2c_actor = train_on_levels(levels, updates, config, self.generator)
            a2c_return = evaluate_returns(levels, a2c_actor, config.score_envs, self.generator, self.device)
            lpg_return = evaluate_returns(levels, actor, config.score_envs, self.generator, self.device)
            regret = (a2c_return - lpg_return).cpu()
            stats = {"a2c_return": a2c_return.mean().item(), "lpg_return": lpg_return.mean().item()}
            return regret, stats | {"score": regret.mean().item()}
        env = GridWorld(levels=levels.repeat_interleave(config.envs_per_agent), device=self.device, observation="index")
        observation, _ = env.reset(seed=int(torch.randint(2**62, (1,), generator=self.generator)))
        trajectory, _ = collect_rollout(env, observation, actor, config.rollout_length, self.generator)
        value = {name: tensor[agents] for name, tensor in self.value.items()}
        advantages, _ = advantage_estimates(value, trajectory, config.gamma, config.gae_lambda)
        positive_value_loss = per_agent_mean(advantages.clamp(min=0)).cpu()
        return positive_value_loss, {"score": positive_value_loss.mean().item()}

    # -- the loop, checkpoints and resume ------------------------------------------------------------------------

    def run(
        self,
        meta_updates: int,
        run_dir: str | os.PathLike | None = None,
        resume: bool = False,
        progress: bool = True,
        checkpoint_every: int = 10,
    ) -> list[dict[str, float]]:
        """Meta-train until `meta_updates` are done. With `run_dir`: config.json, metrics.csv, an atomic
        checkpoint every `checkpoint_every` meta-updates and at the end, and lpg.pt (the LPG's weights)."""
        run = RunDirectory(run_dir) if run_dir is not None else None
        if run is not None and run.begin(dataclasses.asdict(self.config), resume):
            self.load_checkpoint(run.checkpoint)

        def save_checkpoint() -> None:
            self.save_checkpoint(run.checkpoint)
            save_lpg(self.lpg, run.path / "lpg.pt")

        run_iterations(
            self.step,
            lambda: self.meta_updates,
            meta_updates,
            run,
            save_checkpoint,
            description=f"GROOVE ({self.config.curriculum})",
            unit="meta-update",
            postfix=lambda stats: {"reward": f"{stats.get('reward_per_step', stats.get('fitness', 0.0)):.4f}"},
            checkpoint_every=checkpoint_every,
            index_key="meta_update",
            progress=progress,
        )
        return self.history

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs (between meta-updates)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "meta_updates": self.meta_updates,
            "lpg": self.lpg.state_dict(),
            "meta_optimizer": self.meta_optimizer.state_dict(),
            "agents": {"actor": self.actor, "critic": self.critic, "value": self.value},
            "ages": self.ages,
            "lifetimes": self.lifetimes,
            "levels": self.levels.tensors(),
            "slots": self.slots,
            "env": self.env.state_dict(),
            "buffer": self.buffer.state_dict(),
            "generator": self.generator.get_state(),
            "history": self.history,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from what `state_dict` returned."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"not a GROOVE checkpoint (format {CHECKPOINT_FORMAT!r} expected)")
        self.meta_updates = int(state["meta_updates"])
        self.lpg.load_state_dict(state["lpg"])
        self.meta_optimizer.load_state_dict(state["meta_optimizer"])
        self.actor, self.critic, self.value = (state["agents"][name] for name in ("actor", "critic", "value"))
        self.ages, self.lifetimes, self.slots = state["ages"], state["lifetimes"], state["slots"]
        self.levels = GridLevels(**state["levels"])
        envs = self.config.envs_per_agent
        self.env = GridWorld(levels=self.levels.repeat_interleave(envs), device=self.device, observation="index")
        self.env.load_state_dict(state["env"])
        self.observation = self.env.observations()
        self.buffer.load_state_dict(state["buffer"])
        restore_generator(self.generator, state["generator"])
        self.history = list(state["history"])

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Write `state_dict` to `path` atomically."""
        state = self.state_dict()
        atomic_write(path, lambda file: torch.save(state, file))

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        self.load_state_dict(torch.load(path, map_location=self.device, weights_only=False))


def save_lpg(lpg: LPGNetwork, path: str | os.PathLike) -> None:
    """Write the LPG's sizes and weights to `path` atomically (read back by `load_lpg`)."""
    sizes = {"target_size": lpg.target_head.out_features, "embedding_width": lpg.embedding[0].out_features}
    state = {"sizes": sizes | {"hidden_size": lpg.hidden_size}, "weights": lpg.state_dict()}
    atomic_write(path, lambda file: torch.save(state, file))


def load_lpg(path: str | os.PathLike, device: str | torch.device = "cpu") -> LPGNetwork:
    """An LPG saved by `save_lpg` (a run's lpg.pt)."""
    state = torch.load(path, map_location=device, weights_only=True)
    lpg = LPGNetwork(**state["sizes"]).to(device)
    lpg.load_state_dict(state["weights"])
    return lpg


# -- meta-test -----------------------------------------------------------------------------------------------------


def reference_returns(levels: GridLevels, updates: int, config: GROOVEConfig, seed: int = 0) -> dict[str, float]:
    """Mean returns over the levels of A2C agents trained for `updates` updates (the normaliser of meta-tests) and
    of the uniform random policy."""
    generator = torch.Generator().manual_seed(seed)
    a2c_actor = train_on_levels(levels, updates, config, generator)
    return {
        "a2c_return": evaluate_returns(levels, a2c_actor, config.score_envs, generator, config.device).mean().item(),
        "random_return": evaluate_returns(levels, None, config.score_envs, generator, config.device).mean().item(),
    }


def meta_test(
    lpg: LPG,
    levels: GridLevels,
    updates: int,
    config: GROOVEConfig,
    seed: int = 0,
    references: dict[str, float] | None = None,
) -> dict[str, float]:
    """Fresh agents trained for `updates` updates on each level by the frozen LPG: their mean return, and that
    return normalised as (LPG − random) / (A2C − random) with `reference_returns` (computed when not given)."""
    references = references or reference_returns(levels, updates, config, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    actor = train_on_levels(levels, updates, config, generator, lpg)
    lpg_return = evaluate_returns(levels, actor, config.score_envs, generator, config.device).mean().item()
    return normalised_result(lpg_return, references)


def normalised_result(lpg_return: float, references: dict[str, float]) -> dict[str, float]:
    """The references, the LPG's return, and that return normalised as (LPG − random) / (A2C − random) (NaN when
    A2C and random tie)."""
    gap = references["a2c_return"] - references["random_return"]
    normalised = (lpg_return - references["random_return"]) / gap if abs(gap) > 1e-8 else float("nan")
    return references | {"lpg_return": lpg_return, "normalised_return": normalised}


# -- meta-test on MinAtar: neural agents -------------------------------------------------------------------------


@dataclasses.dataclass
class MinAtarConfig:
    """The authors' agent settings for MinAtar (EmptyJackson/groove: `environments/gymnax/configs.py`, whose
    MinAtar entries use `_GYM_BLINE_MIN_ATAR_HYPERS`, and `experiments/parse_args.py`). Their MinAtar lifetime is
    100,000 agent updates (`_MIN_ATAR_LIFETIME`); the `updates` of `meta_test_minatar` set it here. Their repository
    has no meta-test script, so the protocol (one fresh agent per LPG and seed, scored by sampled-policy episodes
    after training, against A2C and the random policy on the same game) is this library's."""

    num_envs: int = 64
    """parallel envs of one agent (their --env_workers)"""
    rollout_length: int = 20
    """steps per env in one agent update (their --train_rollout_len)"""
    hidden_sizes: tuple[int, ...] = (256, 256)
    """ReLU MLP of the actor and of the second network (y for LPG agents, the value for A2C), no shared torso"""
    learning_rate: float = 5e-4
    """Adam step of both networks, LPG and A2C agents alike; no gradient clipping (their Adam ignores
    max_grad_norm)"""
    target_coefficient: float = 0.5
    """weight of KL(y ‖ ŷ) in the LPG agent's loss"""
    gamma: float = 0.99
    gae_lambda: float = 0.95
    a2c_entropy_coefficient: float = 0.01
    """entropy bonus of the A2C reference"""
    evaluation_episodes: int = 64
    """episodes (one per env, in parallel) that score a trained agent"""
    max_episode_steps: int = 1000
    """episodes truncate after this many steps, in training and evaluation"""
    sticky_action_probability: float = 0.1
    """MinAtar's default"""
    device: str = "cpu"

    def __post_init__(self) -> None:
        if min(self.num_envs, self.rollout_length, self.evaluation_episodes, self.max_episode_steps) < 1:
            raise ValueError("num_envs, rollout_length, evaluation_episodes and max_episode_steps must be at least 1")


class NetworkAgent:
    """A neural agent: `actor` maps observations (..., *shape) to policy logits, `critic` to y's logits (an LPG
    agent) or the value (A2C); each network has its own optimiser, its gradient clipped to `max_grad_norm` when
    given."""

    def __init__(
        self,
        actor: nn.Module,
        critic: nn.Module,
        actor_learning_rate: float,
        critic_learning_rate: float,
        optimizer: type[torch.optim.Optimizer] = torch.optim.Adam,
        max_grad_norm: float | None = None,
    ) -> None:
        self.actor, self.critic, self.max_grad_norm = actor, critic, max_grad_norm
        self.optimizers = [
            optimizer(actor.parameters(), lr=actor_learning_rate),
            optimizer(critic.parameters(), lr=critic_learning_rate),
        ]

    def log_probabilities(self, trajectory: ObservationTrajectory) -> tuple[torch.Tensor, torch.Tensor]:
        """log π(a_t|s_t) of the taken actions and the policy's entropy, (agents, envs, steps) each."""
        return taken_log_probabilities(self.actor(trajectory.observation), trajectory.action)

    def step(self, loss: torch.Tensor) -> None:
        """One optimiser step of both networks on `loss`."""
        for optimizer in self.optimizers:
            optimizer.zero_grad()
        loss.backward()
        for network, optimizer in zip((self.actor, self.critic), self.optimizers):
            if self.max_grad_norm is not None:
                nn.utils.clip_grad_norm_(network.parameters(), self.max_grad_norm)
            optimizer.step()


def lpg_network_update(
    lpg: LPG, agent: NetworkAgent, trajectory: ObservationTrajectory, target_coefficient: float
) -> None:
    """One step of a network agent on the frozen LPG's loss (`lpg_objective`)."""
    log_probability, _ = agent.log_probabilities(trajectory)
    log_target = torch.log_softmax(agent.critic(trajectory.observation), -1)
    with torch.no_grad():
        next_target = torch.softmax(agent.critic(trajectory.next_observation), -1)
    loss, _, _ = lpg_objective(
        _without_gradients(lpg), trajectory, log_probability, log_target, next_target, target_coefficient
    )
    agent.step(loss)


def a2c_network_update(agent: NetworkAgent, trajectory: ObservationTrajectory, config: MinAtarConfig) -> None:
    """One A2C step of a network agent, as the authors' `agents/a2c.py`: GAE advantages normalised, the entropy
    bonus, and the value regressed on the GAE returns (0.5·MSE where they take the MSE: the same steps under Adam,
    up to its ε)."""
    values = agent.critic(trajectory.observation).squeeze(-1)
    with torch.no_grad():
        next_values = agent.critic(trajectory.next_observation).squeeze(-1)
    advantages, returns = gae_per_agent(values.detach(), next_values, trajectory, config.gamma, config.gae_lambda)
    log_probability, entropy = agent.log_probabilities(trajectory)
    advantages = normalised_per_agent(advantages)
    loss = policy_gradient_loss(log_probability, entropy, advantages, config.a2c_entropy_coefficient)
    agent.step(loss + value_loss(values, returns))


def minatar_network(observation_shape: tuple[int, ...], outputs: int, hidden_sizes: tuple[int, ...]) -> nn.Module:
    """A ReLU MLP over the flattened (channels, 10, 10) observation. The authors' MinAtar agents are this MLP, but
    their generic CNN wrapper also divides the 0/1 observation by 255 (meant for pixels); this one does not."""
    return nn.Sequential(nn.Flatten(-3), mlp(math.prod(observation_shape), outputs, hidden_sizes))


def _minatar_env(game: str, num_envs: int, config: MinAtarConfig, generator: torch.Generator) -> MinAtarVecEnv:
    seed = int(torch.randint(2**31, (1,), generator=generator))
    return MinAtarVecEnv(
        game,
        num_envs,
        seed=seed,
        device=config.device,
        sticky_action_probability=config.sticky_action_probability,
        max_episode_steps=config.max_episode_steps,
    )


def train_on_minatar(
    game: str, updates: int, config: MinAtarConfig, seed: int = 0, lpg: LPGNetwork | None = None
) -> nn.Module:
    """A fresh network agent trained on MinAtar `game` for `updates` updates (`num_envs` x `rollout_length` steps
    each) by the frozen `lpg`, or by A2C when it is None; returns its actor."""
    generator = torch.Generator().manual_seed(seed)
    env = _minatar_env(game, config.num_envs, config, generator)
    observation, _ = env.reset()
    shape, actions = env.single_observation_space.shape, int(env.single_action_space.n)
    outputs = 1 if lpg is None else lpg.target_head.out_features  # the value, or y
    with torch.random.fork_rng(devices=[]):  # the networks' initial weights from the seed
        torch.manual_seed(seed)
        actor = minatar_network(shape, actions, config.hidden_sizes).to(config.device)
        critic = minatar_network(shape, outputs, config.hidden_sizes).to(config.device)
    agent = NetworkAgent(actor, critic, config.learning_rate, config.learning_rate)
    for _ in range(updates):
        records, observation = sample_rollout(
            env,
            observation,
            config.rollout_length,
            generator,
            1,
            actor,
            lambda observation: {"observation": observation},
        )
        trajectory = ObservationTrajectory(**records)
        if lpg is None:
            a2c_network_update(agent, trajectory, config)
        else:
            lpg_network_update(lpg, agent, trajectory, config.target_coefficient)
    return actor


def evaluate_on_minatar(game: str, actor: nn.Module | None, config: MinAtarConfig, seed: int = 0) -> float:
    """Mean return of `evaluation_episodes` episodes sampling `actor`'s policy (None: the uniform random policy)."""
    generator = torch.Generator().manual_seed(seed)
    env = _minatar_env(game, config.evaluation_episodes, config, generator)
    observation, _ = env.reset()
    actions = int(env.single_action_space.n)

    def choose_action(observation: torch.Tensor) -> torch.Tensor:
        if actor is None:
            return torch.randint(actions, (env.num_envs,), generator=generator)
        return sample_actions(actor(observation), generator)

    return first_episode_returns(env, observation, config.max_episode_steps, choose_action).mean().item()


def minatar_reference_returns(game: str, updates: int, config: MinAtarConfig, seed: int = 0) -> dict[str, float]:
    """The normalisers of MinAtar meta-tests: the mean return of an A2C agent trained for `updates` updates and
    that of the uniform random policy."""
    a2c_actor = train_on_minatar(game, updates, config, seed)
    return {
        "a2c_return": evaluate_on_minatar(game, a2c_actor, config, seed + 1),
        "random_return": evaluate_on_minatar(game, None, config, seed + 1),
    }


def meta_test_minatar(
    lpg: LPGNetwork,
    game: str,
    updates: int,
    config: MinAtarConfig | None = None,
    seed: int = 0,
    references: dict[str, float] | None = None,
) -> dict[str, float]:
    """A fresh network agent trained for `updates` updates on MinAtar `game` by the frozen LPG: its mean return,
    and that return normalised as (LPG − random) / (A2C − random) with `minatar_reference_returns` (computed when
    not given)."""
    config = config or MinAtarConfig()
    references = references or minatar_reference_returns(game, updates, config, seed)
    actor = train_on_minatar(game, updates, config, seed, lpg)
    return normalised_result(evaluate_on_minatar(game, actor, config, seed + 1), references)
