"""PGA-MAP-Elites' policy-gradient emitter (Nilsson & Cully, 2021): a TD3 critic and greedy actor trained on every
transition the evaluations produce, elites improved by a few policy-gradient steps on that critic, and the
greedy actor itself proposed as one offspring.

Each `tell`: the batch's transitions join a replay buffer, then `critic_steps` TD3 critic steps (the critic's
target updated after each, the actor and its target after every `policy_delay`-th). Each `ask`: `pg_batch_size`
elites take `pg_steps` Adam steps on −Q₁(s, π_θ(s)), all at once as one batched network, and the greedy actor
joins them. The pieces that DCG-MAP-Elites conditions on descriptors are hooks (`replay_rows`, `condition_dim`,
`variation_condition`, `actor_offspring`) that `policylab.evolution.dcg_map_elites` overrides.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
from torch.nn import functional as F

from policylab.core.agent import restore_generator
from policylab.core.buffers import ReplayBuffer, TransitionBatch
from policylab.core.evaluation import PopulationTransitions
from policylab.core.nets import EnsembleCritic, PopulationMLP, adam, freeze, polyak_update
from policylab.evolution.archives import Archive
from policylab.evolution.emitters import Emitter, EvaluatedBatch, Offspring, no_intended_descriptors
from policylab.evolution.qd_tasks import QDPolicyTask


@dataclasses.dataclass
class PGAConfig:
    """The policy-gradient emitter; defaults are those DCG-MAP-Elites' paper gives PGA-MAP-Elites (127 PG
    offspring and the greedy actor beside 128 GA offspring, 3000 critic steps and 150 PG steps per iteration)."""

    pg_batch_size: int = 127
    """elites improved by policy gradient per iteration (the greedy actor is one more offspring)"""
    pg_steps: int = 150
    """Adam steps of each policy-gradient variation"""
    policy_lr: float = 1e-3
    """learning rate of the policy-gradient variation"""
    critic_steps: int = 3000
    """critic steps per iteration (the actor takes one every policy_delay)"""
    critic_hidden_sizes: tuple[int, ...] = (256, 256)
    """hidden widths of the twin critics"""
    critic_lr: float = 3e-4
    """critic learning rate"""
    actor_lr: float = 3e-4
    """learning rate of the greedy actor"""
    batch_size: int = 100
    """transitions per gradient step"""
    replay_capacity: int = 1_000_000
    """transitions the replay buffer keeps"""
    discount: float = 0.99
    """γ"""
    tau: float = 0.005
    """Polyak rate of the target networks"""
    policy_delay: int = 2
    """critic steps per actor step"""
    policy_noise: float = 0.2
    """std of the target policy smoothing noise (actions in [-1, 1])"""
    noise_clip: float = 0.5
    """clip of the target policy smoothing noise"""

    def __post_init__(self) -> None:
        self.critic_hidden_sizes = tuple(self.critic_hidden_sizes)
        if min(self.pg_batch_size, self.pg_steps, self.batch_size, self.policy_delay, self.replay_capacity) < 0:
            raise ValueError("pg_batch_size, pg_steps, batch_size, policy_delay and replay_capacity cannot be negative")
        if self.batch_size < 1 or self.policy_delay < 1:
            raise ValueError("batch_size and policy_delay must be at least 1")


class PolicyGradientEmitter(Emitter):
    """PGA-MAP-Elites' emitter for a `QDPolicyTask`: policy-gradient offspring and the greedy actor."""

    needs_transitions = True

    def __init__(
        self, task: QDPolicyTask, config: PGAConfig | None = None, device: str | torch.device = "cpu", seed: int = 0
    ) -> None:
        if not isinstance(task, QDPolicyTask):
            raise TypeError(f"policy-gradient emitters evolve policies of a QDPolicyTask, got {type(task).__name__}")
        self.task, self.config, self.device = task, config or self.default_config(), torch.device(device)
        self.observation_dim, self.action_dim = task.observation_dim, task.action_dim
        conditioned_dim = self.observation_dim + self.condition_dim
        self.actor_spec = PopulationMLP(
            conditioned_dim, self.action_dim, task.spec.hidden_sizes, task.spec.activation, "tanh"
        )
        with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the global generator
            torch.manual_seed(seed)
            self.critic = EnsembleCritic(conditioned_dim, self.action_dim, self.config.critic_hidden_sizes)
            self.actor = self.actor_spec.to_module(self.actor_spec.initial_params(1)[0])
        self.critic, self.actor = self.critic.to(self.device), self.actor.to(self.device)
        self.generator = torch.Generator(self.device).manual_seed(seed)
        """draws the target policy smoothing noise"""
        self.critic_target, self.actor_target = copy.deepcopy(self.critic), copy.deepcopy(self.actor)
        freeze([self.critic_target, self.actor_target])
        self.critic_optimizer = adam(self.critic.parameters(), self.config.critic_lr)
        self.actor_optimizer = adam(self.actor.parameters(), self.config.actor_lr)
        self.buffer = ReplayBuffer(self.config.replay_capacity, conditioned_dim, self.action_dim, self.device, seed)

    @staticmethod
    def default_config() -> PGAConfig:
        return PGAConfig()

    @property
    def batch_size(self) -> int:
        return self.config.pg_batch_size + self.actor_offspring_count

    # -- hooks that DCG-MAP-Elites overrides ---------------------------------------------------------------

    @property
    def condition_dim(self) -> int:
        """Inputs the critic and actor take besides the observation (none here)."""
        return 0

    @property
    def actor_offspring_count(self) -> int:
        """Offspring made from the actor per iteration: the greedy actor itself."""
        return 1

    def replay_rows(
        self, transitions: PopulationTransitions, batch: EvaluatedBatch, archive: Archive
    ) -> tuple[torch.Tensor, ...]:
        """(observations, actions, rewards, next observations, terminations) the replay buffer stores."""
        return tuple(
            torch.as_tensor(values, dtype=torch.float32)
            for values in (
                transitions.observations,
                transitions.actions,
                transitions.rewards,
                transitions.next_observations,
                transitions.terminations,
            )
        )

    def variation_condition(self, parent_descriptors: torch.Tensor, archive: Archive) -> torch.Tensor | None:
        """What the critic is conditioned on while a parent is improved (nothing here); returns (B, condition_dim)."""
        return None

    def actor_offspring(self, archive: Archive, generator: torch.Generator) -> Offspring:
        """The greedy actor as a policy."""
        solution = self.actor_spec.from_module(self.actor).reshape(1, -1).to(archive.solutions)
        return Offspring(solution, no_intended_descriptors(1, archive))

    # -- ask / tell ----------------------------------------------------------------------------------------

    def ask(self, archive: Archive, generator: torch.Generator) -> Offspring:
        parts = []
        if self.config.pg_batch_size:
            parents, descriptors = archive.sample(self.config.pg_batch_size, generator)
            condition = self.variation_condition(descriptors, archive)
            children = self.policy_gradient_variation(parents, condition)
            intended = no_intended_descriptors(len(parents), archive) if condition is None else descriptors
            parts.append(Offspring(children.to(archive.solutions), intended))
        parts.append(self.actor_offspring(archive, generator))
        return Offspring(
            torch.cat([part.solutions for part in parts]), torch.cat([part.intended_descriptors for part in parts])
        )

    def tell(self, batch: EvaluatedBatch, archive: Archive, own: slice) -> dict[str, float]:
        transitions = batch.evaluations.transitions
        if transitions is None:
            raise ValueError("the policy-gradient emitter learns from transitions: evaluate with record_transitions")
        self.buffer.add(*self.replay_rows(transitions, batch, archive))
        added = batch.insertion.added[own]
        successes = {"pg_added": int(added[: self.config.pg_batch_size].sum())}
        successes["actor_added"] = int(added[self.config.pg_batch_size :].sum())
        return successes | self.train()

    # -- learning ------------------------------------------------------------------------------------------

    def td_target(self, sample: TransitionBatch) -> torch.Tensor:
        """TD3's target r + γ(1 − done)·min_i Q̄_i(s', clip(π̄(s') + clipped noise, −1, 1))."""
        with torch.no_grad():
            noise = torch.randn(sample.actions.shape, generator=self.generator, device=self.device)
            noise = noise * self.config.policy_noise
            noise = noise.clamp(-self.config.noise_clip, self.config.noise_clip)
            next_actions = (self.actor_target(sample.next_observations) + noise).clamp(-1.0, 1.0)
            next_value = self.critic_target(sample.next_observations, next_actions).min(0).values
            return sample.rewards + self.config.discount * (1.0 - sample.terminals) * next_value

    def train(self) -> dict[str, float]:
        """`critic_steps` critic steps and one actor step every `policy_delay`; returns the mean losses."""
        critic_losses, actor_losses = [], []
        for step in range(1, self.config.critic_steps + 1):
            sample = self.buffer.sample(self.config.batch_size)
            target = self.td_target(sample)
            critic_loss = F.mse_loss(self.critic(sample.observations, sample.actions), target.expand(2, -1)) * 2
            self.critic_optimizer.zero_grad(set_to_none=True)
            critic_loss.backward()
            self.critic_optimizer.step()
            polyak_update(self.critic_target, self.critic, self.config.tau)
            critic_losses.append(critic_loss.detach())
            if step % self.config.policy_delay == 0:
                actor_loss = -self.critic(sample.observations, self.actor(sample.observations), member=0).mean()
                self.actor_optimizer.zero_grad(set_to_none=True)
                actor_loss.backward()
                self.actor_optimizer.step()
                polyak_update(self.actor_target, self.actor, self.config.tau)
                actor_losses.append(actor_loss.detach())
        if not critic_losses:
            return {}
        metrics = {"critic_loss": float(torch.stack(critic_losses).mean())}
        if actor_losses:
            metrics["actor_loss"] = float(torch.stack(actor_losses).mean())
        return metrics

    def policy_gradient_variation(self, parents: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        """Each parent after `pg_steps` Adam steps on −Q₁(s, π_θ(s) | condition), the whole batch as one network
        (Adam acts elementwise, so this equals one optimiser per parent); every parent sees the same samples."""
        spec, count = self.task.spec, len(parents)
        params = parents.detach().to(self.device, torch.float32).clone().requires_grad_(True)
        optimizer = torch.optim.Adam([params], lr=self.config.policy_lr)
        self.critic.requires_grad_(False)
        try:
            for _ in range(self.config.pg_steps):
                observations = self.buffer.sample(self.config.batch_size).observations[:, : self.observation_dim]
                states = observations.expand(count, -1, -1)
                actions = spec.forward(spec.stack(params), states)
                if condition is not None:
                    states = torch.cat([states, condition[:, None, :].to(states).expand(-1, len(observations), -1)], 2)
                values = self.critic(states.reshape(-1, states.shape[-1]), actions.reshape(-1, self.action_dim), 0)
                loss = -values.reshape(count, -1).mean(1).sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        finally:
            self.critic.requires_grad_(True)
        return params.detach()

    # -- state ---------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        modules = ("critic", "critic_target", "actor", "actor_target", "critic_optimizer", "actor_optimizer")
        state = {name: getattr(self, name).state_dict() for name in modules}
        return state | {"buffer": self.buffer.state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        restore_generator(self.generator, state.pop("generator"))
        for name, value in state.items():
            getattr(self, name).load_state_dict(value)
