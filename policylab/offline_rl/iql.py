"""IQL: Implicit Q-Learning (Kostrikov, Nair & Levine, 2021), as CORL implements it for D4RL locomotion.

Each update, on one batch and in this order:

1. V(s) by expectile regression: minimise E[|τ − 1(u < 0)|·u²] with u = min_i Q̄_i(s, a) − V(s) (target twin Q);
2. both Q_i(s, a) by MSE to r + γ·(1 − terminal)·V(s'), with V(s') taken before step 1 (the loss is the mean of
   the two critics' MSEs);
3. the actor by advantage-weighted log-likelihood of the dataset's actions, −E[w·log π(a|s)] with
   w = min(exp(β·u), 100) and u from step 1 (target Q, V before its update);
4. the target Q by Polyak averaging.

Defaults are CORL's (`algorithms/offline/iql.py` and its D4RL locomotion configs, which follow the paper): τ = 0.7,
β = 3, weights clipped at 100, γ = 0.99, Polyak 0.005, Adam 3e-4 for V, Q and actor with the actor's learning rate
cosine-annealed to 0 over the run's steps, batch 256, 256-256 networks, states z-scored with the dataset's statistics
(std + 1e-3) and rewards scaled by 1000 / (max − min episode return of the dataset). The policy is CORL's Gaussian:
a tanh MLP mean scaled to the action bounds and a state-independent log-std clamped to [−20, 2]; deterministic
actions are its mean. The paper's AntMaze settings (τ = 0.9, β = 10, rewards − 1) are not defaults here.
"""

from __future__ import annotations

import copy
import dataclasses

import gymnasium as gym
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR

from policylab.core.agent import register_agent
from policylab.core.buffers import ReplayBuffer, TransitionBatch
from policylab.core.data import OfflineDataset
from policylab.core.nets import (
    EnsembleCritic,
    GaussianActor,
    ObservationNormalizer,
    adam,
    freeze,
    mlp,
    polyak_update,
)
from policylab.core.offline import OfflineAgent, OfflineConfig

LOG_STD_BOUNDS = (-20.0, 2.0)  # CORL's clamp of the policy's log-std


@dataclasses.dataclass
class IQLConfig(OfflineConfig):
    """IQL settings; defaults are CORL's for the D4RL MuJoCo locomotion tasks."""

    expectile: float = 0.7
    """expectile τ of the value regression (0.5 is a mean; towards 1, V approaches max Q over the data's actions)"""
    beta: float = 3.0
    """inverse temperature β of the actor's weights exp(β·advantage): small is behaviour cloning, large is greedy"""
    max_weight: float = 100.0
    """clip of the actor's weights exp(β·advantage)"""
    discount: float = 0.99
    """discount factor γ"""
    tau: float = 0.005
    """Polyak rate of the target twin Q"""
    value_lr: float = 3e-4
    """Adam learning rate of V"""
    critic_lr: float = 3e-4
    """Adam learning rate of the twin Q"""
    actor_lr: float = 3e-4
    """initial Adam learning rate of the actor, cosine-annealed to 0 over the steps of `fit`"""
    batch_size: int = 256
    """transitions per update"""
    hidden_sizes: tuple[int, ...] = (256, 256)
    """hidden layer widths of actor, V and Q"""
    normalize_observations: bool = True
    """z-score observations with the dataset's mean and std (+1e-3)"""
    normalize_rewards: bool = True
    """multiply rewards by 1000 / (max − min episode return of the dataset), CORL's scaling for locomotion"""


def expectile_loss(differences: torch.Tensor, expectile: float) -> torch.Tensor:
    """Mean asymmetric squared error |τ − 1(u < 0)|·u² of the differences u = target − prediction."""
    weights = torch.where(differences < 0, 1.0 - expectile, expectile)
    return (weights * differences.square()).mean()


def advantage_weights(advantages: torch.Tensor, beta: float, max_weight: float) -> torch.Tensor:
    """The actor's per-transition weights exp(β·advantage), clipped at `max_weight`."""
    return torch.exp(beta * advantages).clamp(max=max_weight)


def reward_scale_from_returns(dataset: OfflineDataset) -> float:
    """1000 / (max − min episode return), over the dataset's finished episodes (CORL's locomotion scaling)."""
    returns = dataset.episode_returns()
    if len(returns) > 1 and not (dataset.terminals[-1] or dataset.timeouts[-1]):
        returns = returns[:-1]  # an unfinished last episode is left out, as CORL does
    spread = float(returns.max() - returns.min())
    if spread <= 0.0:
        raise ValueError(
            f"dataset {dataset.dataset_id or ''} has {len(returns)} episode(s), all of return {returns.max():.6g}, "
            "so rewards cannot be scaled by the spread of episode returns: pass normalize_rewards=False"
        )
    return 1000.0 / spread


@register_agent("iql")
class IQL(OfflineAgent):
    """Implicit Q-Learning on an offline dataset."""

    config_class = IQLConfig
    config: IQLConfig

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, config: IQLConfig | None = None):
        super().__init__(observation_space, action_space, config)
        cfg, device = self.config, self.device
        observation_dim, action_dim = observation_space.shape[0], action_space.shape[0]
        self.normalizer = ObservationNormalizer(observation_dim).to(device)
        self.actor = GaussianActor(
            observation_dim, action_space.low, action_space.high, cfg.hidden_sizes, log_std_bounds=LOG_STD_BOUNDS
        ).to(device)
        self.critic = EnsembleCritic(observation_dim, action_dim, cfg.hidden_sizes, num_critics=2).to(device)
        self.value = mlp(observation_dim, 1, cfg.hidden_sizes).to(device)
        self.critic_target = copy.deepcopy(self.critic)
        freeze([self.critic_target])
        self.actor_optimizer = adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.critic_optimizer = adam(self.critic.parameters(), lr=cfg.critic_lr)
        self.value_optimizer = adam(self.value.parameters(), lr=cfg.value_lr)
        # Made by `setup_training` for the run's steps; saved and restored with the other state, so a resumed run
        # continues the schedule where it stopped. `update` outside `fit` keeps the actor's rate constant.
        self.actor_lr_schedule: CosineAnnealingLR | None = None
        self.reward_scale = 1.0

    def setup_training(self, steps: int) -> None:
        """Cosine-anneal the actor's learning rate from `actor_lr` to 0 over the run's `steps` (a resumed run then
        continues the schedule its checkpoint holds)."""
        for group in self.actor_optimizer.param_groups:
            group["lr"] = group["initial_lr"] = self.config.actor_lr
        self.actor_lr_schedule = CosineAnnealingLR(self.actor_optimizer, T_max=steps)

    def prepare(self, dataset: OfflineDataset) -> ReplayBuffer:
        """Scale the rewards and record the state statistics; the buffer holds scaled rewards and normalised states."""
        if self.config.normalize_rewards:
            self.reward_scale = reward_scale_from_returns(dataset)
            dataset = dataclasses.replace(dataset, rewards=dataset.rewards * self.reward_scale)
        buffer = super().prepare(dataset)
        if self.config.normalize_observations:
            self.normalize_states(dataset, buffer)
        return buffer

    def _policy(self, observations: torch.Tensor, deterministic: bool) -> torch.Tensor:
        return self.actor.act(self.normalizer(observations), deterministic)

    def action_log_likelihood(
        self, observations: torch.Tensor, actions: torch.Tensor, deterministic_std: float = 1.0
    ) -> torch.Tensor:
        """The policy's own density (`deterministic_std` is not used: the policy is stochastic)."""
        return self.actor.log_prob(self.normalizer(observations), actions)

    def update(self, batch: TransitionBatch) -> dict[str, torch.Tensor]:
        """One V step, one twin-Q step, one actor step and a target update, in CORL's order."""
        cfg = self.config
        observations, actions, rewards, next_observations, terminals, _ = batch
        with torch.no_grad():
            next_values = self.value(next_observations).squeeze(-1)
            target_q = self.critic_target(observations, actions).min(dim=0).values

        values = self.value(observations).squeeze(-1)
        advantages = target_q - values
        value_loss = expectile_loss(advantages, cfg.expectile)
        self.value_optimizer.zero_grad(set_to_none=True)
        value_loss.backward()
        self.value_optimizer.step()

        q_values = self.critic(observations, actions)
        q_target = rewards + cfg.discount * (1.0 - terminals) * next_values
        q_loss = (q_values - q_target).pow(2).mean()  # (MSE(Q1, y) + MSE(Q2, y)) / 2
        self.critic_optimizer.zero_grad(set_to_none=True)
        q_loss.backward()
        self.critic_optimizer.step()

        weights = advantage_weights(advantages.detach(), cfg.beta, cfg.max_weight)
        actor_loss = -(weights * self.actor.log_prob(observations, actions)).mean()
        actor_lr = torch.full((), self.actor_optimizer.param_groups[0]["lr"], device=self.device)
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optimizer.step()
        if self.actor_lr_schedule is not None:
            self.actor_lr_schedule.step()

        polyak_update(self.critic_target, self.critic, cfg.tau)
        self.num_updates += 1
        return {
            "train/value_loss": value_loss.detach(),
            "train/q_loss": q_loss.detach(),
            "train/actor_loss": actor_loss.detach(),
            "train/advantage_mean": advantages.detach().mean(),
            "train/weight_mean": weights.mean(),
            "train/actor_lr": actor_lr,
        }
