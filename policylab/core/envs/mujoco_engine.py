"""The batched MuJoCo engine: Gymnasium's v5 locomotion tasks, every env of the batch stepped in one threaded call.

Physics runs on all usable cores; observations, rewards, terminations and resets are computed for the whole
batch in numpy. Two physics paths share one interface:

- `RolloutPhysics`: one `mujoco.rollout` call per env step over a persistent thread pool. The solver warm-start
  is not returned by `mujoco.rollout`, so each env step starts it from zero where Gymnasium's `MjData` carries
  it: results agree with Gymnasium to solver tolerance, not bit for bit.
- `MjDataPhysics`: one `MjData` per thread steps its share of the batch and carries the warm-start, so
  trajectories equal Gymnasium's bit for bit; it also reads what only exists after a step (external contact
  forces, body positions), which Ant needs.
"""

from __future__ import annotations

import json
import os
import pathlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import gymnasium as gym
import mujoco
import numpy as np
import torch
from mujoco import rollout

from policylab.core.envs.vector import VecEnv, check_env_seeds

ASSETS = pathlib.Path(gym.__file__).parent / "envs" / "mujoco" / "assets"
FULL_PHYSICS = mujoco.mjtState.mjSTATE_FULLPHYSICS
WARMSTART = mujoco.mjtState.mjSTATE_WARMSTART


def usable_cores() -> int:
    """The number of cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def concatenate(arrays: list[Any]) -> Any:
    """Join batch-first numpy arrays or torch tensors along the feature axis."""
    if isinstance(arrays[0], np.ndarray):
        return np.concatenate(arrays, axis=1)
    import torch

    return torch.cat(arrays, dim=1)


class LocomotionTask:
    """One Gymnasium v5 locomotion task with its default arguments: model, reset noise and the batched array code
    of its observation, reward terms and health check. Arrays are batch-first numpy arrays or torch tensors (the
    array code uses only operations both share, so the GPU engine reuses it)."""

    env_id: ClassVar[str]
    xml_file: ClassVar[str]
    frame_skip: ClassVar[int]
    feet: ClassVar[tuple[str, ...]]  # foot geoms whose contact with the floor is reported
    ctrl_cost_weight: ClassVar[float]
    reset_noise_scale: ClassVar[float]
    forward_reward_weight: ClassVar[float] = 1.0
    healthy_reward: ClassVar[float | None] = None  # None: no survival reward and no termination
    skipped_positions: ClassVar[int] = 1  # leading qpos entries left out of the observation
    velocity_clip: ClassVar[float | None] = None
    normal_velocity_noise: ClassVar[bool] = False  # reset velocity noise: Gaussian instead of uniform
    reads_contact_forces: ClassVar[bool] = False  # needs cfrc_ext and body positions after the step

    def __init__(self, model: mujoco.MjModel):
        self.init_qpos = model.qpos0.copy()
        self.init_qvel = np.zeros(model.nv)
        self.dt = model.opt.timestep * self.frame_skip
        floor_margin = model.geom_margin[model.geom("floor").id]
        foot_margins = [model.geom_margin[model.geom(foot).id] for foot in self.feet] or [0.0]
        self.contact_margin = float(floor_margin + max(foot_margins))  # the feet of each task share one margin

    @classmethod
    def load_model(cls) -> mujoco.MjModel:
        """Gymnasium's model of the task with a foot-to-floor distance sensor per foot. Sensors do not change the
        physics, and distance sensors cost little (position stage: no extra force computation)."""
        xml = (ASSETS / cls.xml_file).read_text()
        sensors = "".join(f'<distance geom1="{foot}" geom2="floor" cutoff="0.1"/>' for foot in cls.feet)
        return mujoco.MjModel.from_xml_string(xml.replace("</mujoco>", f"<sensor>{sensors}</sensor></mujoco>"))

    def feet_contact(self, sensordata: np.ndarray) -> np.ndarray:
        """Whether each foot touches the floor, from the distance sensors: MuJoCo makes a contact between two geoms
        once their distance is below the sum of their margins."""
        return sensordata[:, : len(self.feet)] < self.contact_margin

    def sample_initial_state(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Initial positions and velocities of `count` episodes, with Gymnasium's reset noise."""
        scale = self.reset_noise_scale
        qpos = self.init_qpos + rng.uniform(-scale, scale, size=(count, len(self.init_qpos)))
        shape = (count, len(self.init_qvel))
        noise = scale * rng.standard_normal(shape) if self.normal_velocity_noise else rng.uniform(-scale, scale, shape)
        return qpos, self.init_qvel + noise

    def observe(self, qpos: np.ndarray, qvel: np.ndarray, contact_forces: np.ndarray | None) -> np.ndarray:
        """Observations of a batch of states."""
        if self.velocity_clip is not None:
            qvel = qvel.clip(-self.velocity_clip, self.velocity_clip)
        return concatenate([qpos[:, self.skipped_positions :], qvel])

    def is_healthy(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """Whether each state lies in the task's healthy ranges (tasks with a healthy reward)."""
        raise NotImplementedError

    def position(self, qpos: np.ndarray, body_xpos: np.ndarray | None) -> np.ndarray:
        """The position whose change is rewarded: (batch, 1) for planar tasks, (batch, 2) for x-y tasks."""
        return qpos[:, :1]

    def state_info(self, qpos: np.ndarray) -> dict[str, np.ndarray]:
        """Gymnasium's info entries that describe a state (may be views into `qpos`)."""
        return {"x_position": qpos[:, 0]}

    def reward_terms(
        self,
        velocity: np.ndarray,
        actions: np.ndarray,
        healthy: np.ndarray | None,
        contact_forces: np.ndarray | None,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The reward of each env and Gymnasium's info entries for the step, with every reward term."""
        forward = self.forward_reward_weight * velocity[:, 0]
        ctrl_cost = self.ctrl_cost_weight * (actions * actions).sum(1)
        info = {"x_velocity": velocity[:, 0]}
        if velocity.shape[1] == 2:
            info["y_velocity"] = velocity[:, 1]
        info |= {"reward_forward": forward, "reward_ctrl": -ctrl_cost}
        rewards, costs = forward, ctrl_cost
        if self.reads_contact_forces:
            contact_cost = self.contact_cost(contact_forces)
            info["reward_contact"] = -contact_cost
            costs = ctrl_cost + contact_cost
        if self.healthy_reward is not None:
            survive = healthy * self.healthy_reward
            info["reward_survive"] = survive
            rewards = forward + survive
        return rewards - costs, info

    def contact_cost(self, contact_forces: np.ndarray) -> np.ndarray:
        """Cost of the external contact forces (tasks that read them)."""
        raise NotImplementedError


class PlanarWalker(LocomotionTask):
    """Hopper and Walker2d: planar bodies rewarded for moving forward while staying upright."""

    frame_skip = 4
    ctrl_cost_weight = 1e-3
    reset_noise_scale = 5e-3
    healthy_reward = 1.0
    velocity_clip = 10.0
    healthy_z_range: ClassVar[tuple[float, float]]
    healthy_angle_range: ClassVar[tuple[float, float]]

    def is_healthy(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        z, angle = qpos[:, 1], qpos[:, 2]
        (min_z, max_z), (min_angle, max_angle) = self.healthy_z_range, self.healthy_angle_range
        return (min_z < z) & (z < max_z) & (min_angle < angle) & (angle < max_angle)

    def state_info(self, qpos: np.ndarray) -> dict[str, np.ndarray]:
        return {"x_position": qpos[:, 0], "z_distance_from_origin": qpos[:, 1] - self.init_qpos[1]}


class Hopper(PlanarWalker):
    env_id = "Hopper-v5"
    xml_file = "hopper.xml"
    feet = ("foot_geom",)
    healthy_z_range = (0.7, float("inf"))
    healthy_angle_range = (-0.2, 0.2)
    healthy_state_range = (-100.0, 100.0)

    def is_healthy(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        state = concatenate([qpos[:, 2:], qvel])
        low, high = self.healthy_state_range
        return super().is_healthy(qpos, qvel) & ((low < state) & (state < high)).all(1)


class Walker2d(PlanarWalker):
    env_id = "Walker2d-v5"
    xml_file = "walker2d_v5.xml"
    feet = ("foot_geom", "foot_left_geom")
    healthy_z_range = (0.8, 2.0)
    healthy_angle_range = (-1.0, 1.0)


class HalfCheetah(LocomotionTask):
    env_id = "HalfCheetah-v5"
    xml_file = "half_cheetah.xml"
    frame_skip = 5
    feet = ("bfoot", "ffoot")
    ctrl_cost_weight = 0.1
    reset_noise_scale = 0.1
    normal_velocity_noise = True


class Swimmer(LocomotionTask):
    env_id = "Swimmer-v5"
    xml_file = "swimmer.xml"
    frame_skip = 4
    feet = ()
    ctrl_cost_weight = 1e-4
    reset_noise_scale = 0.1
    skipped_positions = 2

    def position(self, qpos: np.ndarray, body_xpos: np.ndarray | None) -> np.ndarray:
        return qpos[:, :2]

    def state_info(self, qpos: np.ndarray) -> dict[str, np.ndarray]:
        xy = qpos[:, :2]
        return {"x_position": qpos[:, 0], "y_position": qpos[:, 1], "distance_from_origin": (xy * xy).sum(1) ** 0.5}


class Ant(Swimmer):
    env_id = "Ant-v5"
    xml_file = "ant.xml"
    frame_skip = 5
    feet = ("left_ankle_geom", "right_ankle_geom", "third_ankle_geom", "fourth_ankle_geom")
    ctrl_cost_weight = 0.5
    contact_cost_weight = 5e-4
    contact_force_range = (-1.0, 1.0)
    healthy_reward = 1.0
    healthy_z_range = (0.2, 1.0)
    normal_velocity_noise = True
    reads_contact_forces = True
    main_body = 1

    def observe(self, qpos: np.ndarray, qvel: np.ndarray, contact_forces: np.ndarray | None) -> np.ndarray:
        forces = contact_forces[:, 1:].clip(*self.contact_force_range).reshape(len(qpos), -1)
        return concatenate([qpos[:, 2:], qvel, forces])

    def is_healthy(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        finite = (abs(qpos) < float("inf")).all(1) & (abs(qvel) < float("inf")).all(1)
        min_z, max_z = self.healthy_z_range
        return finite & (min_z <= qpos[:, 2]) & (qpos[:, 2] <= max_z)

    def position(self, qpos: np.ndarray, body_xpos: np.ndarray | None) -> np.ndarray:
        # Gymnasium reads the torso's Cartesian position, which after mj_step lags qpos (last integrator stage).
        return body_xpos[:, self.main_body, :2]

    def contact_cost(self, contact_forces: np.ndarray) -> np.ndarray:
        clipped = contact_forces.clip(*self.contact_force_range).reshape(len(contact_forces), -1)
        return self.contact_cost_weight * (clipped * clipped).sum(1)


LOCOMOTION_TASKS: dict[str, type[LocomotionTask]] = {
    task.env_id: task for task in (Hopper, Walker2d, HalfCheetah, Swimmer, Ant)
}


class RolloutPhysics:
    """Steps the whole batch with one `mujoco.rollout` call per env step on a persistent thread pool."""

    def __init__(self, model: mujoco.MjModel, frame_skip: int, num_envs: int, num_threads: int):
        self.model, self.frame_skip = model, frame_skip
        self._models = [model] * num_envs
        num_threads = max(1, min(num_threads, num_envs))
        self._datas = [mujoco.MjData(model) for _ in range(num_threads)]
        # A single thread steps in the caller: a pool hand-off costs more than a small batch's physics.
        self._pool = rollout.Rollout(nthread=num_threads if num_threads > 1 else 0)
        # Envs per pool task: one task per thread for small batches (dispatch costs more than imbalance there),
        # at most 16 for large ones so threads stay balanced when some envs are in costlier contact.
        self._chunk_size = max(1, min(num_envs // num_threads, 16))
        state_size = mujoco.mj_stateSize(model, FULL_PHYSICS)
        self._controls = np.zeros((num_envs, frame_skip, model.nu))
        self._states = np.zeros((num_envs, frame_skip, state_size))
        self._sensors = np.zeros((num_envs, frame_skip, model.nsensordata))

    def step(self, states: np.ndarray, warmstarts: np.ndarray, controls: np.ndarray) -> dict[str, np.ndarray]:
        """Advance `states` in place by one env step; returns the sensor values of the last substep."""
        self._controls[:] = controls[:, None, :]
        self._pool.rollout(
            self._models,
            self._datas,
            states,
            self._controls,
            nstep=self.frame_skip,
            state=self._states,
            sensordata=self._sensors,
            chunk_size=self._chunk_size,
            skip_checks=True,
        )
        states[:] = self._states[:, -1]
        return {"sensordata": self._sensors[:, -1]}

    def close(self) -> None:
        self._pool.close()


class MjDataPhysics:
    """Steps the batch with one `MjData` per thread, each looping over its share of envs. Carries the solver
    warm-start between env steps and reads external contact forces and body positions after each step."""

    def __init__(self, model: mujoco.MjModel, frame_skip: int, num_envs: int, num_threads: int):
        self.model, self.frame_skip = model, frame_skip
        num_threads = max(1, min(num_threads, num_envs))
        self._datas = [mujoco.MjData(model) for _ in range(num_threads)]
        bounds = np.linspace(0, num_envs, num_threads + 1).astype(int)
        self._shares = list(zip(bounds[:-1], bounds[1:]))
        self._pool = ThreadPoolExecutor(num_threads, thread_name_prefix="policylab-mujoco") if num_threads > 1 else None
        self._outputs = {
            "sensordata": np.zeros((num_envs, model.nsensordata)),
            "cfrc_ext": np.zeros((num_envs, model.nbody, 6)),
            "xpos": np.zeros((num_envs, model.nbody, 3)),
        }

    def step(self, states: np.ndarray, warmstarts: np.ndarray, controls: np.ndarray) -> dict[str, np.ndarray]:
        """Advance `states` and `warmstarts` in place by one env step; returns post-step quantities."""
        if self._pool is None:  # one thread: step in the caller, no pool hand-off
            self._step_share(self._datas[0], *self._shares[0], states, warmstarts, controls)
            return self._outputs
        jobs = [
            self._pool.submit(self._step_share, data, start, stop, states, warmstarts, controls)
            for data, (start, stop) in zip(self._datas, self._shares)
        ]
        for job in jobs:
            job.result()
        return self._outputs

    def _step_share(self, data: mujoco.MjData, start: int, stop: int, states, warmstarts, controls) -> None:
        model, outputs = self.model, self._outputs
        for index in range(start, stop):
            mujoco.mj_setState(model, data, states[index], FULL_PHYSICS)
            mujoco.mj_setState(model, data, warmstarts[index], WARMSTART)
            data.ctrl[:] = controls[index]
            mujoco.mj_step(model, data, self.frame_skip)
            mujoco.mj_rnePostConstraint(model, data)
            mujoco.mj_getState(model, data, states[index], FULL_PHYSICS)
            mujoco.mj_getState(model, data, warmstarts[index], WARMSTART)
            outputs["sensordata"][index] = data.sensordata
            outputs["cfrc_ext"][index] = data.cfrc_ext
            outputs["xpos"][index] = data.xpos

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


PHYSICS = {"rollout": RolloutPhysics, "mjdata": MjDataPhysics}


class MujocoVecEnv(VecEnv):
    """Gymnasium's v5 locomotion task `env_id` for `num_envs` envs at once, equal to Gymnasium step for step.

    Besides Gymnasium's info entries (every reward term, positions, velocities), `info` has `qpos`, `qvel` and
    `feet_contact` (whether each foot touches the floor) for every env. `physics` picks the physics path
    ("rollout" or "mjdata", see the module docstring); by default "rollout", or "mjdata" where the task reads
    contact forces. `forward_reward_weight` replaces the task's weight of the forward reward, as Gymnasium's
    argument of that name does.
    """

    backend = "mujoco"
    seeds_each_env = True

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        seed: int | None = None,
        max_episode_steps: int = 1000,
        physics: str | None = None,
        num_threads: int | None = None,
        forward_reward_weight: float | None = None,
    ):
        if env_id not in LOCOMOTION_TASKS:
            raise ValueError(f"the mujoco backend has no task {env_id!r}; it has {', '.join(LOCOMOTION_TASKS)}")
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}")
        task_class = LOCOMOTION_TASKS[env_id]
        physics = physics or ("mjdata" if task_class.reads_contact_forces else "rollout")
        if physics not in PHYSICS or (physics == "rollout" and task_class.reads_contact_forces):
            allowed = ["mjdata"] if task_class.reads_contact_forces else list(PHYSICS)
            raise ValueError(f"physics={physics!r} cannot run {env_id}; choose one of {allowed}")
        self.env_id, self.num_envs, self.max_episode_steps = env_id, num_envs, max_episode_steps
        self.model = task_class.load_model()
        self.task = task_class(self.model)
        if forward_reward_weight is not None:  # Gymnasium's argument of the same name (0: no forward reward)
            self.task.forward_reward_weight = forward_reward_weight
        self._num_threads = num_threads or usable_cores()
        self.physics = PHYSICS[physics](self.model, task_class.frame_skip, num_envs, self._num_threads)

        self._states = np.zeros((num_envs, mujoco.mj_stateSize(self.model, FULL_PHYSICS)))
        self._bind_positions_and_velocities()
        self._warmstarts = np.zeros((num_envs, self.model.nv))
        self._contact_forces = np.zeros((num_envs, self.model.nbody, 6))
        self._body_xpos = np.zeros((num_envs, self.model.nbody, 3))
        self._elapsed_steps = np.zeros(num_envs, dtype=np.int64)
        self._kinematics = mujoco.MjData(self.model)
        self._rng = np.random.default_rng(seed)

        low, high = self.model.actuator_ctrlrange.astype(np.float32).T
        self.single_action_space = gym.spaces.Box(low, high, dtype=np.float32)
        self._reset_rows(np.arange(num_envs))
        observation_size = self._observe().shape[1]
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, (observation_size,), np.float64)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        """Start a new episode in every env; `seed` reseeds the reset noise, and a list of one seed per env draws
        env i's initial state from its own seed (later resets draw from a generator seeded with the list)."""
        initial_state = None
        if isinstance(seed, list | tuple | np.ndarray):
            seeds = check_env_seeds(seed, self.num_envs)
            states = [self.task.sample_initial_state(np.random.default_rng(each), 1) for each in seeds]
            initial_state = tuple(np.concatenate(parts) for parts in zip(*states))
            seed = seeds
        if seed is not None:
            self._rng = np.random.default_rng(seed)
            self.action_space.seed(seed if initial_state is None else seed[0])
        self._reset_rows(np.arange(self.num_envs), initial_state)
        return self._observe(), self._state_info(np.zeros((self.num_envs, len(self.task.feet)), dtype=bool))

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Apply one action per env; finished envs reset in the same step (see `policylab.core.envs.vector`)."""
        actions = np.asarray(actions)
        if actions.shape != self.action_space.shape:
            raise ValueError(f"expected actions of shape {self.action_space.shape}, got {actions.shape}")
        if not np.issubdtype(actions.dtype, np.floating):
            actions = actions.astype(np.float32)
        position_before = self.task.position(self._qpos, self._body_xpos).copy()
        outputs = self.physics.step(self._states, self._warmstarts, actions)
        if self.task.reads_contact_forces:
            self._contact_forces[:] = outputs["cfrc_ext"]
            self._body_xpos[:] = outputs["xpos"]
        velocity = (self.task.position(self._qpos, self._body_xpos) - position_before) / self.task.dt
        terminates = self.task.healthy_reward is not None
        healthy = self.task.is_healthy(self._qpos, self._qvel) if terminates else None
        reward, step_info = self.task.reward_terms(velocity, actions, healthy, self._contact_forces)
        self._elapsed_steps += 1
        terminated = ~healthy if terminates else np.zeros(self.num_envs, dtype=bool)
        truncated = self._elapsed_steps >= self.max_episode_steps
        observations = self._observe()
        feet_contact = self.task.feet_contact(outputs["sensordata"])
        info = self._state_info(feet_contact) | step_info

        done = terminated | truncated
        if done.any():
            rows = np.flatnonzero(done)
            info |= {"final_obs": observations.copy(), "_final_obs": done, "_final_info": done}
            info["final_info"] = {
                key: value.copy() for key, value in info.items() if not key.startswith(("final", "_"))
            }
            self._reset_rows(rows)
            observations[rows] = self._observe()[rows]
            feet_contact[rows] = False
            info |= self._state_info(feet_contact)
        return observations, reward, terminated, truncated, info

    def set_state(self, qpos: Any, qvel: Any) -> np.ndarray:
        """Put every env in the given state (batch-first arrays); returns the observations. The solver
        warm-start restarts from zero and the episode step counts are kept."""
        qpos, qvel = np.asarray(qpos, dtype=np.float64), np.asarray(qvel, dtype=np.float64)
        expected = ((self.num_envs, self.model.nq), (self.num_envs, self.model.nv))
        if (qpos.shape, qvel.shape) != expected:
            raise ValueError(f"expected qpos and qvel of shapes {expected}, got {(qpos.shape, qvel.shape)}")
        self._qpos[:], self._qvel[:] = qpos, qvel
        self._warmstarts[:] = 0.0
        self._compute_body_positions(np.arange(self.num_envs))
        return self._observe()

    def keep(self, rows: Any) -> None:
        """Go on with the envs in `rows` only (in that order), their episodes unchanged; the others are dropped.
        A population evaluation calls it to stop stepping envs whose episodes have ended."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1 or len(rows) == 0 or rows.min() < 0 or rows.max() >= self.num_envs:
            raise ValueError(f"keep needs a non-empty list of env indices below {self.num_envs}, got {rows.tolist()}")
        self._states = self._states[rows]
        self._bind_positions_and_velocities()
        self._warmstarts, self._elapsed_steps = self._warmstarts[rows], self._elapsed_steps[rows]
        self._contact_forces, self._body_xpos = self._contact_forces[rows], self._body_xpos[rows]
        self.num_envs = len(rows)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self.physics.close()
        self.physics = type(self.physics)(self.model, self.task.frame_skip, self.num_envs, self._num_threads)

    def state_dict(self) -> dict[str, Any] | None:
        """Physics states, solver warm-starts, contact forces, step counts and the reset-noise generator."""
        return {
            "states": torch.from_numpy(self._states.copy()),
            "warmstarts": torch.from_numpy(self._warmstarts.copy()),
            "contact_forces": torch.from_numpy(self._contact_forces.copy()),
            "body_xpos": torch.from_numpy(self._body_xpos.copy()),
            "elapsed_steps": torch.from_numpy(self._elapsed_steps.copy()),
            "rng": json.dumps(self._rng.bit_generator.state),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from what `state_dict` returned."""
        if tuple(state["states"].shape) != self._states.shape:
            raise ValueError(f"saved state has shape {tuple(state['states'].shape)}, these envs {self._states.shape}")
        self._states[:] = state["states"].numpy()
        self._warmstarts[:] = state["warmstarts"].numpy()
        self._contact_forces[:] = state["contact_forces"].numpy()
        self._body_xpos[:] = state["body_xpos"].numpy()
        self._elapsed_steps[:] = state["elapsed_steps"].numpy()
        self._rng.bit_generator.state = json.loads(state["rng"])

    def close(self, **kwargs: Any) -> None:
        self.physics.close()

    def _bind_positions_and_velocities(self) -> None:
        """`_qpos` and `_qvel` as views into the state rows ([time, qpos, qvel, ...])."""
        nq, nv = self.model.nq, self.model.nv
        self._qpos, self._qvel = self._states[:, 1 : 1 + nq], self._states[:, 1 + nq : 1 + nq + nv]

    def _reset_rows(self, rows: np.ndarray, initial_state: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        qpos, qvel = initial_state or self.task.sample_initial_state(self._rng, len(rows))
        self._states[rows] = 0.0
        self._qpos[rows], self._qvel[rows] = qpos, qvel
        self._warmstarts[rows] = 0.0
        self._contact_forces[rows] = 0.0
        self._elapsed_steps[rows] = 0
        self._compute_body_positions(rows)

    def _compute_body_positions(self, rows: np.ndarray) -> None:
        """Body positions of freshly set states, as Gymnasium's `mj_forward` after `set_state` leaves them."""
        if not self.task.reads_contact_forces:
            return
        for row in rows:
            mujoco.mj_setState(self.model, self._kinematics, self._states[row], FULL_PHYSICS)
            mujoco.mj_kinematics(self.model, self._kinematics)
            self._body_xpos[row] = self._kinematics.xpos

    def _observe(self) -> np.ndarray:
        return self.task.observe(self._qpos, self._qvel, self._contact_forces)

    def _state_info(self, feet_contact: np.ndarray) -> dict[str, np.ndarray]:
        info = {key: np.array(value) for key, value in self.task.state_info(self._qpos).items()}
        return info | {"qpos": self._qpos.copy(), "qvel": self._qvel.copy(), "feet_contact": feet_contact}
