"""DCG-MAP-Elites (Faldor et al., 2023; the DCRL-MAP-Elites variant with actor injection): PGA-MAP-Elites whose
critic and actor are conditioned on a descriptor, so that policy gradients push a parent towards better returns
*while keeping its descriptor*, and the actor distils the whole archive into one descriptor-conditioned policy.

What changes from `PolicyGradientEmitter` (the rest is shared):

- replay: each transition is stored with its intended descriptor d′ (the parent's for a policy-gradient
  offspring, the conditioning one for an injected actor, its own achieved one otherwise), and its reward becomes
  S(d, d′)·(r + offset), where d is the episode's achieved descriptor and S(d, d′) = exp(−‖d − d′‖₂ / l), both
  descriptors normalised to [-1, 1] and the reward offset making rewards non-negative; critic and actor then
  see [s, d′] as their state, so TD3's target is y = S(d, d′)·(r + offset) + γ(1 − done)·min Q̄(s′, π̄(s′, d′) + ε | d′);
- variation: a parent with descriptor d_p takes Adam steps on −Q₁(s, π_θ(s) | d_p);
- actor offspring: for descriptors of elites drawn from the archive, the actor with d′ folded into its first
  layer's bias (`inject_descriptor`), a plain policy of the archive's architecture.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from policylab.core.evaluation import PopulationTransitions
from policylab.core.nets import PopulationMLP
from policylab.evolution.archives import Archive
from policylab.evolution.emitters import EvaluatedBatch, Offspring
from policylab.evolution.pga_map_elites import PGAConfig, PolicyGradientEmitter
from policylab.evolution.tasks import Evaluations


@dataclasses.dataclass
class DCGConfig(PGAConfig):
    """The descriptor-conditioned emitter; defaults are DCRL-MAP-Elites' (64 policy-gradient and 64 actor-injection
    offspring beside 128 GA offspring, length scale 0.1, policy-gradient learning rate 5e-3)."""

    pg_batch_size: int = 64
    """elites improved by descriptor-conditioned policy gradient per iteration"""
    injection_batch_size: int = 64
    """policies made from the actor conditioned on descriptors of elites, per iteration"""
    lengthscale: float = 0.1
    """l of the similarity S(d, d') = exp(-||d - d'|| / l), on descriptors normalised to [-1, 1]"""
    policy_lr: float = 5e-3
    """learning rate of the policy-gradient variation"""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lengthscale <= 0 or self.injection_batch_size < 0:
            raise ValueError("lengthscale must be positive and injection_batch_size non-negative")


def similarity(descriptors: torch.Tensor, intended: torch.Tensor, lengthscale: float) -> torch.Tensor:
    """S(d, d') = exp(-||d - d'||₂ / l), row by row."""
    return torch.exp(-torch.linalg.vector_norm(descriptors - intended, dim=-1) / lengthscale)


def inject_descriptor(actor_params: torch.Tensor, actor_spec: PopulationMLP, descriptors: torch.Tensor) -> torch.Tensor:
    """Plain policies (K, num_params of the actor without the descriptor inputs) equal to the descriptor-
    conditioned actor at each row of `descriptors` (K, D): the first layer's weights on the descriptor inputs,
    times the descriptor, are folded into its bias."""
    descriptor_dim = descriptors.shape[1]
    observation_dim = actor_spec.input_dim - descriptor_dim
    first_in, first_out = actor_spec.layer_shapes[0]
    weight = actor_params[: first_in * first_out].reshape(first_in, first_out)
    bias = actor_params[first_in * first_out : (first_in + 1) * first_out]
    folded_bias = bias + descriptors.to(weight) @ weight[observation_dim:]
    rest = actor_params[(first_in + 1) * first_out :]
    count = len(descriptors)
    kept_weight = weight[:observation_dim].reshape(1, -1).expand(count, -1)
    return torch.cat([kept_weight, folded_bias, rest.reshape(1, -1).expand(count, -1)], dim=1)


class DescriptorConditionedEmitter(PolicyGradientEmitter):
    """DCG-MAP-Elites' emitter: descriptor-conditioned policy-gradient offspring and actor injection."""

    config: DCGConfig

    @staticmethod
    def default_config() -> DCGConfig:
        return DCGConfig()

    @property
    def condition_dim(self) -> int:
        return len(self.task.lower)

    @property
    def actor_offspring_count(self) -> int:
        return self.config.injection_batch_size

    def replay_rows(
        self, transitions: PopulationTransitions, batch: EvaluatedBatch, archive: Archive
    ) -> tuple[torch.Tensor, ...]:
        members = torch.as_tensor(transitions.members)
        achieved = archive.normalize(batch.descriptors.to(archive.device))[members].float().cpu()
        intended = archive.normalize(batch.intended_descriptors.to(archive.device))[members].float().cpu()
        scale = similarity(achieved, intended, self.config.lengthscale)
        rewards = scale * (torch.as_tensor(transitions.rewards, dtype=torch.float32) + self.task.reward_offset)
        observations = torch.as_tensor(transitions.observations, dtype=torch.float32)
        next_observations = torch.as_tensor(transitions.next_observations, dtype=torch.float32)
        return (
            torch.cat([observations, intended], 1),
            torch.as_tensor(transitions.actions, dtype=torch.float32),
            rewards,
            torch.cat([next_observations, intended], 1),
            torch.as_tensor(transitions.terminations, dtype=torch.float32),
        )

    def variation_condition(self, parent_descriptors: torch.Tensor, archive: Archive) -> torch.Tensor:
        return archive.normalize(parent_descriptors).float()

    def actor_offspring(self, archive: Archive, generator: torch.Generator) -> Offspring:
        _, descriptors = archive.sample(self.config.injection_batch_size, generator)
        return Offspring(self.distilled_policies(descriptors, archive).to(archive.solutions), descriptors)

    def distilled_policies(self, descriptors: torch.Tensor, archive: Archive) -> torch.Tensor:
        """The actor conditioned on each descriptor (K, D), as plain policies (K, num_params)."""
        actor_params = self.actor_spec.from_module(self.actor)
        return inject_descriptor(actor_params, self.actor_spec, archive.normalize(descriptors).float().cpu())


def evaluate_distilled_actor(
    emitter: DescriptorConditionedEmitter, archive: Archive, qd_offset: float, episodes: int = 1, seed: int = 0
) -> dict[str, float]:
    """The distilled actor conditioned on every filled cell's elite descriptor: the QD-score and coverage of an
    archive (same cells) filled with those policies alone, their mean fitness, and their mean distance between
    achieved and target descriptor."""
    targets = archive.descriptors[archive.filled]
    if len(targets) == 0:
        raise RuntimeError("the archive is empty: run at least one iteration first")
    policies = emitter.distilled_policies(targets, archive)
    evaluations: Evaluations = emitter.task.evaluate(policies, episodes, seed)
    achieved = np.asarray(evaluations.behaviours)
    distilled = archive.empty_copy()
    distilled.add(policies, evaluations.fitness, achieved)
    distance = np.linalg.norm(achieved - targets.cpu().numpy(), axis=1)
    return {
        "distilled_qd_score": distilled.qd_score(qd_offset),
        "distilled_coverage": distilled.coverage(),
        "distilled_fitness_mean": float(np.mean(evaluations.fitness)),
        "distilled_distance_to_target": float(distance.mean()),
        "distilled_policies": len(targets),
    }
