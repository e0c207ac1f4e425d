"""Evaluate a policy on a task (per-episode returns and lengths, D4RL-normalised scores), or a whole population."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from policylab.core.data.scores import normalized_score, reference_returns
from policylab.core.envs import make_vec_env, to_numpy
from policylab.core.nets import PopulationMLP, PopulationNatureCNN

Policy = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass
class EvaluationResult:
    """Returns and lengths of the evaluated episodes, with normalised scores when the task has D4RL references."""

    env_id: str
    returns: np.ndarray
    lengths: np.ndarray
    normalized_scores: np.ndarray | None = None

    @property
    def return_mean(self) -> float:
        """Mean episode return."""
        return float(np.mean(self.returns))

    @property
    def return_std(self) -> float:
        """Standard deviation of episode returns."""
        return float(np.std(self.returns))

    def metrics(self, prefix: str = "eval/") -> dict[str, float]:
        """Summary statistics for a metric logger."""
        metrics = {
            f"{prefix}return_mean": self.return_mean,
            f"{prefix}return_std": self.return_std,
            f"{prefix}length_mean": float(np.mean(self.lengths)),
        }
        if self.normalized_scores is not None:
            metrics[f"{prefix}normalized_score"] = float(np.mean(self.normalized_scores))
            metrics[f"{prefix}normalized_score_std"] = float(np.std(self.normalized_scores))
        return metrics

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary with every episode."""
        result = {"env_id": self.env_id, "episodes": len(self.returns), **self.metrics(prefix="")}
        result["returns"] = self.returns.tolist()
        result["lengths"] = self.lengths.tolist()
        if self.normalized_scores is not None:
            result["normalized_scores"] = self.normalized_scores.tolist()
        return result


def evaluate(
    policy: Any,
    env_id: str,
    episodes: int = 10,
    seed: int = 0,
    num_envs: int | None = None,
    deterministic: bool = True,
    backend: str = "auto",
) -> EvaluationResult:
    """Run `episodes` episodes of `policy` (an agent, or a function from a batch of observations to actions) on
    `make_vec_env(env_id, num_envs, backend, seed)`.

    By default every episode runs at once (`num_envs = episodes`), so results depend only on `seed`; with
    fewer envs, each env runs its episodes one after another. Observations reach the policy as numpy arrays.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    act = _as_batched_policy(policy, deterministic)
    num_envs = min(num_envs or episodes, episodes)
    returns, lengths = np.zeros(episodes), np.zeros(episodes, dtype=np.int64)
    with make_vec_env(env_id, num_envs, backend=backend, seed=seed) as envs:
        _check_spaces(policy, envs.single_observation_space, env_id)
        observations, _ = envs.reset()
        episode_of_env = np.arange(num_envs)  # the episode each env is running, -1 once it has no more to run
        next_episode = num_envs
        while (episode_of_env >= 0).any():
            time_steps = np.where(episode_of_env >= 0, lengths[np.maximum(episode_of_env, 0)], 0)
            actions = act(to_numpy(observations), time_steps)
            observations, rewards, terminated, truncated, _ = envs.step(actions)
            running = episode_of_env >= 0
            returns[episode_of_env[running]] += to_numpy(rewards)[running]
            lengths[episode_of_env[running]] += 1
            for env_index in np.flatnonzero(running & to_numpy(terminated | truncated)):
                episode_of_env[env_index] = next_episode if next_episode < episodes else -1
                next_episode += 1
    scores = normalized_score(env_id, returns) if reference_returns(env_id) is not None else None
    return EvaluationResult(env_id, returns, lengths, None if scores is None else np.asarray(scores))


def _as_batched_policy(policy: Any, deterministic: bool) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A function of (observations, each one's time step in its episode); only agents with one policy per time
    step (`acts_by_time_step`) are given the steps."""
    if getattr(policy, "acts_by_time_step", False):
        return lambda observations, steps: policy.act(observations, deterministic=deterministic, time_steps=steps)
    if hasattr(policy, "act"):
        return lambda observations, steps: policy.act(observations, deterministic=deterministic)
    if callable(policy):
        return lambda observations, steps: policy(observations)
    raise TypeError(f"cannot evaluate a {type(policy).__name__}: pass an agent or a function of observations")


def _check_spaces(policy: Any, observation_space: Any, env_id: str) -> None:
    space = getattr(policy, "observation_space", None)
    if space is not None and space.shape != observation_space.shape:
        raise ValueError(
            f"{env_id} gives observations of shape {observation_space.shape} but the policy expects "
            f"{space.shape}: evaluate on the task the agent was trained for"
        )


@dataclasses.dataclass
class PopulationTransitions:
    """Every step of a population's episodes, flat (N rows): what off-policy learners need. `actions` are the
    policy outputs in [-1, 1] (before scaling to the action box); `terminations` are 1 where the episode truly
    ended (truncations are 0); `members` is the population row that took the step."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminations: np.ndarray
    members: np.ndarray

    @staticmethod
    def concatenate(parts: list[PopulationTransitions], member_offsets: list[int]) -> PopulationTransitions:
        """Join the transitions of consecutive shards whose first members are `member_offsets`."""
        fields = {
            field.name: np.concatenate([getattr(part, field.name) for part in parts])
            for field in dataclasses.fields(PopulationTransitions)
            if field.name != "members"
        }
        members = np.concatenate([part.members + offset for part, offset in zip(parts, member_offsets)])
        return PopulationTransitions(**fields, members=members)


@dataclasses.dataclass
class PopulationResult:
    """Per-member, per-episode outcomes of `evaluate_population`, with the behaviour statistics QD methods use."""

    returns: np.ndarray  # (P, E)
    lengths: np.ndarray  # (P, E)
    final_xy: np.ndarray  # (P, E, 2): position where each episode ended (y is 0 on planar tasks)
    feet_contact: np.ndarray | None  # (P, E, feet): fraction of steps each foot touched the floor
    transitions: PopulationTransitions | None = None  # every step taken, when asked for

    @property
    def fitness(self) -> np.ndarray:
        """Mean episode return of each member, (P,)."""
        return self.returns.mean(axis=1)

    @property
    def mean_feet_contact(self) -> np.ndarray | None:
        """Feet-contact fractions averaged over each member's episodes, (P, feet)."""
        return None if self.feet_contact is None else self.feet_contact.mean(axis=1)

    @property
    def mean_final_xy(self) -> np.ndarray:
        """Final x-y positions averaged over each member's episodes, (P, 2)."""
        return self.final_xy.mean(axis=1)


@torch.no_grad()
def evaluate_population(
    params: torch.Tensor,
    policy_spec: PopulationMLP | PopulationNatureCNN,
    env_id: str,
    episodes_per_member: int = 1,
    seed: int = 0,
    backend: str = "auto",
    max_episode_steps: int | None = None,
    time_feature: bool = False,
    record_transitions: bool = False,
    **env_kwargs: Any,
) -> PopulationResult:
    """One episode per (member, repeat) for all P members at once: the population's stacked weights run as one
    batched network against one batched env of P × `episodes_per_member` envs; envs whose episode has ended are
    masked out until the last one ends. Env k = member * episodes_per_member + repeat. On envs that can drop
    envs (`keep`: the mujoco engine), the envs of members whose episodes have all ended are dropped whenever at
    most half the members stepped still run, so the physics is not spent on finished episodes.

    `params` is (P, policy_spec.num_params); the network's outputs become actions by `population_actions` (tanh
    outputs scaled to a Box, the best score on a Discrete space: Atari with `PopulationNatureCNN`).
    `max_episode_steps` shortens episodes (e.g. 250 for omnidirectional Ant); other keyword arguments go to
    `make_vec_env` (e.g. `num_threads` of the mujoco backend). On backends that seed each env
    on its own (mujoco, torch, gymnasium, atari), env k starts from the initial state of seed + k alone, so members
    [a, b) evaluated with seed + a * episodes_per_member equal rows [a, b) of the whole population's result.

    `time_feature` appends the fraction of the episode left, 1 − t / max_episode_steps, to each observation the
    policy sees (so `policy_spec.input_dim` is one more than the task's); `record_transitions` also returns
    every step taken (`PopulationResult.transitions`), with those observations.
    """
    population = params.shape[0]
    num_envs = population * episodes_per_member
    if max_episode_steps is not None:
        env_kwargs["max_episode_steps"] = max_episode_steps
    returns, lengths = np.zeros(num_envs), np.zeros(num_envs, dtype=np.int64)
    final_xy, contact_steps = np.zeros((num_envs, 2)), None
    with make_vec_env(env_id, num_envs, backend=backend, seed=seed, **env_kwargs) as envs:
        action_space, observation_shape = envs.single_action_space, envs.single_observation_space.shape
        input_dim = observation_shape[0] + int(time_feature)
        action_dim = action_space.n if isinstance(action_space, gym.spaces.Discrete) else action_space.shape[0]
        if policy_spec.input_dim != input_dim or policy_spec.output_dim != action_dim:
            raise ValueError(
                f"{env_id} has observations {observation_shape} (+1 with time_feature) and {action_dim} action "
                f"dimensions; the policy maps {policy_spec.input_dim} to {policy_spec.output_dim}"
            )
        horizon = getattr(envs, "max_episode_steps", None) if time_feature else None
        if time_feature and (horizon is None or len(observation_shape) != 1):
            raise ValueError("time_feature needs flat observations and the episode length (pass max_episode_steps)")
        steps: list[dict[str, np.ndarray]] = []
        layers = policy_spec.stack(params)
        observations, _ = envs.reset(seed=[seed + env for env in range(num_envs)] if envs.seeds_each_env else None)
        # The rows still stepped: their global env indices and members (the envs of members whose every episode
        # has ended are dropped when the env can `keep` a subset; elsewhere they step on, masked out).
        env_index, members = np.arange(num_envs), np.arange(population)
        can_drop_envs = hasattr(envs, "keep")
        running = np.ones(num_envs, dtype=bool)
        policy_inputs = _with_time_left(to_numpy(observations), lengths, horizon)
        while running.any():
            inputs = torch.as_tensor(policy_inputs, dtype=params.dtype, device=params.device)
            inputs = inputs.reshape(len(members), episodes_per_member, *inputs.shape[1:])
            outputs = policy_spec.forward(layers, inputs).reshape(len(env_index), -1)
            actions = population_actions(outputs, action_space)
            observations, rewards, terminated, truncated, info = envs.step(actions.cpu().numpy())
            done = to_numpy(terminated | truncated)
            last_info = _finished_info(info, done)
            next_inputs = _with_time_left(to_numpy(observations), lengths[env_index] + 1, horizon)
            live = env_index[running]
            if record_transitions:
                final = (
                    _with_time_left(to_numpy(info["final_obs"]), lengths[env_index] + 1, horizon)
                    if done.any()
                    else None
                )
                steps.append(
                    {
                        "observations": policy_inputs[running],
                        "actions": outputs.cpu().numpy()[running],
                        "rewards": to_numpy(rewards)[running],
                        "next_observations": np.where(done[:, None], final, next_inputs)[running]
                        if final is not None
                        else next_inputs[running],
                        "terminations": to_numpy(terminated)[running].astype(np.float32),
                        "members": live // episodes_per_member,
                    }
                )
            policy_inputs = next_inputs
            returns[live] += to_numpy(rewards)[running]
            lengths[live] += 1
            if "feet_contact" in last_info:
                contact = to_numpy(last_info["feet_contact"]).astype(np.float64)
                contact_steps = np.zeros((num_envs, contact.shape[1])) if contact_steps is None else contact_steps
                contact_steps[live] += contact[running]
            ended = running & done
            if ended.any() and "x_position" in last_info:
                final_xy[env_index[ended], 0] = to_numpy(last_info["x_position"])[ended]
                y = to_numpy(last_info["y_position"])[ended] if "y_position" in last_info else 0.0
                final_xy[env_index[ended], 1] = y
            running &= ~done
            if not can_drop_envs:
                continue
            live_members = np.unique(env_index[running] // episodes_per_member)
            if 0 < len(live_members) <= len(members) // 2:
                positions = np.searchsorted(members, live_members)
                rows = (positions[:, None] * episodes_per_member + np.arange(episodes_per_member)).reshape(-1)
                envs.keep(rows)
                layers = [(weight[positions], bias[positions]) for weight, bias in layers]
                env_index, members, running, policy_inputs = (
                    env_index[rows],
                    live_members,
                    running[rows],
                    policy_inputs[rows],
                )
    shape = (population, episodes_per_member)
    feet_contact = None if contact_steps is None else (contact_steps / lengths[:, None]).reshape(*shape, -1)
    transitions = None
    if record_transitions:
        transitions = PopulationTransitions(**{key: np.concatenate([step[key] for step in steps]) for key in steps[0]})
    return PopulationResult(
        returns.reshape(shape), lengths.reshape(shape), final_xy.reshape(*shape, 2), feet_contact, transitions
    )


def population_actions(outputs: torch.Tensor, action_space: gym.Space) -> torch.Tensor:
    """The actions of population networks' outputs: the best-scored one on a Discrete space, else the tanh outputs
    in [−1, 1] scaled to the Box."""
    if isinstance(action_space, gym.spaces.Discrete):
        return outputs.argmax(-1)
    low = torch.as_tensor(action_space.low, device=outputs.device)
    high = torch.as_tensor(action_space.high, device=outputs.device)
    return low + (outputs + 1) * (high - low) / 2


def _with_time_left(observations: np.ndarray, elapsed: np.ndarray, horizon: int | None) -> np.ndarray:
    """Observations with the fraction of the episode left appended (unchanged when `horizon` is None)."""
    if horizon is None:
        return observations
    return np.concatenate([observations, (1.0 - elapsed / horizon)[:, None]], axis=1)


def _finished_info(info: dict[str, Any], done: np.ndarray) -> dict[str, Any]:
    """Each env's info of the step it just took: the finished episode's last info where it ended."""
    if not done.any() or "final_info" not in info:
        return info
    final = info["final_info"]
    return {
        key: np.where(_column(done, value), to_numpy(final[key]), to_numpy(value))
        for key, value in info.items()
        if key in final
    }


def _column(mask: np.ndarray, value: Any) -> np.ndarray:
    return mask.reshape(-1, *([1] * (np.ndim(to_numpy(value)) - 1)))
