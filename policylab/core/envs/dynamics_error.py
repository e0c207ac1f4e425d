"""Dynamics error measured by the simulator: how far a transition's next observation is from the one MuJoCo gives.

For a Gymnasium v5 locomotion task, each transition's observation is turned back into a MuJoCo state, its action is
applied for one env step (the task's frame skip, as Gymnasium's `step`) and the resulting observation is compared
with the transition's. This is how policy-guided diffusion measures the physical accuracy of synthetic transitions.

Observation layouts (`LocomotionTask.observe`): Hopper, Walker2d and HalfCheetah observe `qpos[1:]` and `qvel`,
Swimmer and Ant `qpos[2:]` and `qvel` (Ant then its clipped external contact forces, which do not enter the state).
The left-out x (and y) positions do not change the dynamics (the floor is a plane), so they are set to 0.

Hopper and Walker2d clip velocities to ±10 in the observation: a state with a faster joint cannot be recovered from
its observation, so such transitions show an error even when they are real (`clipped_velocities` finds them: one
transition in six of gen/hopper-medium-v0, one in two of gen/walker2d-medium-replay-v0). MuJoCo's solver
warm-start is not in the observation either; each step starts it from zero, which moves the result by the solver
tolerance only (below 1e-9 on the tests' states).

The error is the L2 distance in observation units (or in units of a per-dimension `scale`, e.g. the dataset's
observation std). Stepping runs at about 5-15 thousand transitions per second per core (Ant: about 3 thousand).
"""

from __future__ import annotations

from typing import NamedTuple

import mujoco
import numpy as np

from policylab.core.envs.mujoco_engine import FULL_PHYSICS, LOCOMOTION_TASKS, PHYSICS, LocomotionTask, usable_cores

__all__ = [
    "SUPPORTED_ENV_IDS",
    "SimulatedSteps",
    "clipped_velocities",
    "dynamics_error",
    "simulator_next_observations",
    "simulator_steps",
]

SUPPORTED_ENV_IDS = tuple(LOCOMOTION_TASKS)


def clipped_velocities(env_id: str, observations: np.ndarray) -> np.ndarray:
    """Whether each observation `[N, obs_dim]` has a velocity at (or beyond) the task's observation clip, so that
    its MuJoCo state is not known exactly; `[N]` bool, all False for tasks that do not clip."""
    task, model = _task(env_id)
    observations = _checked("observations", observations, _observation_dim(task, model))
    if task.velocity_clip is None:
        return np.zeros(len(observations), dtype=bool)
    positions = model.nq - task.skipped_positions
    velocities = observations[:, positions : positions + model.nv]
    return (np.abs(velocities) >= task.velocity_clip).any(axis=1)


class SimulatedSteps(NamedTuple):
    """What MuJoCo gives for a batch of (observation, action) pairs: `[N, obs_dim]` float64 next observations, `[N]`
    rewards and `[N]` bool terminations (the task's health check on the next state)."""

    next_observations: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray


def simulator_steps(
    env_id: str,
    observations: np.ndarray,
    actions: np.ndarray,
    chunk_size: int = 4096,
    num_threads: int | None = None,
) -> SimulatedSteps:
    """One env step of task `env_id` from each observation `[N, obs_dim]` with each action `[N, act_dim]`, stepped
    `chunk_size` transitions at a time on `num_threads` threads. The forward reward is the move from the left-out
    position 0; for Ant, whose reward Gymnasium reads from the torso's lagging Cartesian position, it is therefore
    approximate."""
    task, model = _task(env_id)
    observations = _checked("observations", observations, _observation_dim(task, model))
    actions = _checked("actions", actions, model.nu)
    if len(actions) != len(observations):
        raise ValueError(f"{len(observations)} observations but {len(actions)} actions: pass one action per row")

    count = len(observations)
    chunk_size = max(1, min(chunk_size, count))
    physics_name = "mjdata" if task.reads_contact_forces else "rollout"
    physics = PHYSICS[physics_name](model, task.frame_skip, chunk_size, num_threads or usable_cores())
    states = np.zeros((chunk_size, mujoco.mj_stateSize(model, FULL_PHYSICS)))
    warmstarts = np.zeros((chunk_size, model.nv))
    qpos = states[:, 1 : 1 + model.nq]  # views into the state rows: [time, qpos, qvel, ...]
    qvel = states[:, 1 + model.nq : 1 + model.nq + model.nv]
    positions = model.nq - task.skipped_positions
    steps = []
    try:
        for start in range(0, count, chunk_size):
            # The last chunk is padded with its first row, since the physics steps a fixed batch size.
            rows = np.arange(start, start + chunk_size)
            rows[rows >= count] = start
            chunk = observations[rows]
            states[:] = 0.0
            warmstarts[:] = 0.0
            qpos[:, task.skipped_positions :] = chunk[:, :positions]
            qvel[:] = chunk[:, positions : positions + model.nv]
            outputs = physics.step(states, warmstarts, actions[rows])
            contact_forces = outputs["cfrc_ext"] if task.reads_contact_forces else None
            body_xpos = outputs["xpos"] if task.reads_contact_forces else None
            velocity = task.position(qpos, body_xpos) / task.dt  # the position before the step is 0
            healthy = task.is_healthy(qpos, qvel) if task.healthy_reward is not None else None
            rewards, _ = task.reward_terms(velocity, actions[rows], healthy, contact_forces)
            terminated = ~healthy if healthy is not None else np.zeros(chunk_size, dtype=bool)
            kept = count - start
            steps.append((task.observe(qpos, qvel, contact_forces)[:kept], rewards[:kept], terminated[:kept]))
    finally:
        physics.close()
    return SimulatedSteps(*(np.concatenate(part) for part in zip(*steps)))


def simulator_next_observations(
    env_id: str,
    observations: np.ndarray,
    actions: np.ndarray,
    chunk_size: int = 4096,
    num_threads: int | None = None,
) -> np.ndarray:
    """The next observation `[N, obs_dim]` (float64) MuJoCo gives for each observation and action of task `env_id`
    (`simulator_steps`' first part)."""
    return simulator_steps(env_id, observations, actions, chunk_size, num_threads).next_observations


def dynamics_error(
    env_id: str,
    observations: np.ndarray,
    actions: np.ndarray,
    next_observations: np.ndarray,
    scale: np.ndarray | None = None,
) -> np.ndarray:
    """Per-transition L2 distance `[N]` between `next_observations` and the simulator's next observations.

    With `scale` (`[obs_dim]`, e.g. the dataset's observation std) each dimension's difference is divided by it
    first, so that every dimension counts in its own units."""
    simulated = simulator_next_observations(env_id, observations, actions)
    next_observations = _checked("next_observations", next_observations, simulated.shape[1])
    if len(next_observations) != len(simulated):
        raise ValueError(
            f"{len(simulated)} observations but {len(next_observations)} next_observations: pass one per row"
        )
    difference = next_observations - simulated
    if scale is not None:
        scale = np.asarray(scale, dtype=np.float64)
        if scale.shape != (simulated.shape[1],) or not (scale > 0).all():
            raise ValueError(f"scale must hold {simulated.shape[1]} positive numbers, got shape {scale.shape}")
        difference = difference / scale
    return np.linalg.norm(difference, axis=1)


def _task(env_id: str) -> tuple[LocomotionTask, mujoco.MjModel]:
    if env_id not in LOCOMOTION_TASKS:
        raise ValueError(
            f"no simulator dynamics for {env_id!r}: observations can be turned back into MuJoCo states for "
            f"{', '.join(SUPPORTED_ENV_IDS)}"
        )
    model = LOCOMOTION_TASKS[env_id].load_model()
    return LOCOMOTION_TASKS[env_id](model), model


def _observation_dim(task: LocomotionTask, model: mujoco.MjModel) -> int:
    state = np.zeros((1, model.nq)), np.zeros((1, model.nv))
    return task.observe(*state, np.zeros((1, model.nbody, 6))).shape[1]


def _checked(name: str, values: np.ndarray, dim: int) -> np.ndarray:
    """`values` as a float64 `[N, dim]` array of finite numbers, or a clear error."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != dim:
        raise ValueError(f"{name} has shape {array.shape}: expected [N, {dim}] for this task")
    if not np.isfinite(array).all():
        row = int(np.flatnonzero(~np.isfinite(array).all(1))[0])
        raise ValueError(f"{name}[{row}] is not finite: remove that transition")
    return array
