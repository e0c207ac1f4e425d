"""The warp backend: Gymnasium's v5 locomotion tasks batched on a GPU by MuJoCo Warp, tensors kept on the device.

Physics runs in MuJoCo Warp, one world per env. Observations, rewards, terminations and resets are computed by the
task classes of `policylab.core.envs.mujoco_engine` on torch tensors that are zero-copy views of MuJoCo Warp's
arrays (`wp.to_torch`), so nothing leaves the device. On CUDA the `frame_skip` physics steps of an env step are
captured once into a CUDA graph and replayed; warp work runs on torch's current stream, so it stays ordered with the
torch code that writes actions and reads results. Feet contact is read from the same per-foot distance sensors as
the mujoco backend: MuJoCo Warp evaluates them into `sensordata`.

Precision: MuJoCo Warp computes in float32 with a solver tolerance of 1e-6, where the mujoco backend and Gymnasium
use float64 and 1e-8. Observations, rewards and info entries are float32 tensors (the observation space stays
Gymnasium's float64 `Box`, so every backend has the same spec); one step from the same state agrees with the mujoco
backend to about 1e-4. Over many steps the difference grows as the dynamics amplify it, as any perturbation would:
the backends agree in distribution, not step for step.

Known difference: where a capsule nearly perpendicular to the floor (its axis projected on the floor shorter than
0.5) touches it, MuJoCo Warp gives the contact a fixed tangent frame while MuJoCo aligns the frame with the capsule.
With the tasks' pyramidal friction cones this turns the friction pyramid of that contact, so Ant, whose legs often
meet the floor steeply, departs from the mujoco backend from such contacts on. The planar tasks are unaffected (their
pyramids are the same either way).
"""

from __future__ import annotations

import gc
from typing import Any

import gymnasium as gym
import torch

from policylab.core.envs.mujoco_engine import LOCOMOTION_TASKS
from policylab.core.envs.vector import VecEnv

try:
    import mujoco_warp as mjw
    import warp as wp
except ImportError as error:
    raise ImportError("the warp backend needs MuJoCo Warp: pip install mujoco-warp") from error

ROWS_PER_CONTACT = 4  # constraint rows of a contact with a pyramidal friction cone of dimension 3
POINTS_PER_CONTACT_PAIR = 2  # the most contacts of one geom pair among these tasks' capsules, spheres and planes


class TorchRandom:
    """The sampling methods of numpy's `Generator` that `LocomotionTask.sample_initial_state` calls, drawn on a device
    from a `torch.Generator`, so the task's own code samples reset noise on the device."""

    def __init__(self, device: torch.device, seed: int | None):
        self.generator = torch.Generator(device)
        self.reseed(seed)

    def reseed(self, seed: int | None) -> None:
        """Restart the stream from `seed`, or from a fresh random seed when `seed` is None."""
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)

    def uniform(self, low: float, high: float, size: tuple[int, ...]) -> torch.Tensor:
        """Samples uniform in [low, high)."""
        return low + (high - low) * torch.rand(size, generator=self.generator, device=self.generator.device)

    def standard_normal(self, size: tuple[int, ...]) -> torch.Tensor:
        """Samples of the standard normal distribution."""
        return torch.randn(size, generator=self.generator, device=self.generator.device)


class WarpVecEnv(VecEnv):
    """Gymnasium's v5 locomotion task `env_id` for `num_envs` envs on `device` through MuJoCo Warp.

    Same tasks, spaces, info entries (every reward term, positions, `qpos`, `qvel`, `feet_contact`) and auto-reset
    rule as `MujocoVecEnv`, with every output a torch tensor on `device` (float32, see the module docstring). Actions
    may be torch tensors or numpy arrays. Reset noise is drawn on the device from a `torch.Generator` seeded with
    `seed`. `device` is "cuda" (or "cuda:N"), or "cpu" to run MuJoCo Warp's kernels on the CPU (slow; for tests).
    Each step waits for the device once, to learn whether an env finished and which envs to reset.
    """

    backend = "warp"
    returns_tensors = True

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        seed: int | None = None,
        device: str | torch.device = "cuda",
        max_episode_steps: int = 1000,
    ):
        if env_id not in LOCOMOTION_TASKS:
            raise ValueError(f"the warp backend has no task {env_id!r}; it has {', '.join(LOCOMOTION_TASKS)}")
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}")
        self.device = resolve_device(device)
        self._warp_device = wp.get_device(str(self.device))
        self.env_id, self.num_envs, self.max_episode_steps = env_id, num_envs, max_episode_steps
        self.model = LOCOMOTION_TASKS[env_id].load_model()
        self.task = LOCOMOTION_TASKS[env_id](self.model)
        # The task's initial state as device tensors, so its array code yields device tensors.
        self.task.init_qpos, self.task.init_qvel = (
            torch.as_tensor(state, dtype=torch.float32, device=self.device)
            for state in (self.task.init_qpos, self.task.init_qvel)
        )
        self._random = TorchRandom(self.device, seed)

        with wp.ScopedDevice(self._warp_device):
            self._warp_model = mjw.put_model(self.model)
            max_contacts = POINTS_PER_CONTACT_PAIR * self._warp_model.nxn_geom_pair_filtered.shape[0]
            # Contact rows, plus at most one row per joint limit and one per dof friction loss.
            max_rows = ROWS_PER_CONTACT * max_contacts + self.model.njnt + self.model.nv
            self._warp_data = mjw.make_data(self.model, nworld=num_envs, nconmax=max_contacts, njmax=max_rows)
        data = self._warp_data
        self._qpos, self._qvel, self._ctrl = wp.to_torch(data.qpos), wp.to_torch(data.qvel), wp.to_torch(data.ctrl)
        self._warmstart, self._time = wp.to_torch(data.qacc_warmstart), wp.to_torch(data.time)
        self._sensordata, self._contact_forces = wp.to_torch(data.sensordata), wp.to_torch(data.cfrc_ext)
        self._xpos = wp.to_torch(data.xpos)
        self._body_xpos = torch.zeros_like(self._xpos)  # as Gymnasium reads them: after the step, or after a reset
        self._elapsed_steps = torch.zeros(num_envs, dtype=torch.int64, device=self.device)
        self._physics_graph = self._capture_physics()

        low, high = self.model.actuator_ctrlrange.astype("float32").T
        self.single_action_space = gym.spaces.Box(low, high, dtype="float32")
        self._reset_envs(torch.ones(num_envs, dtype=torch.bool, device=self.device))
        observation_size = self._observe().shape[1]
        self.single_observation_space = gym.spaces.Box(-float("inf"), float("inf"), (observation_size,), "float64")
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[torch.Tensor, dict]:
        """Start a new episode in every env; `seed` reseeds the reset noise."""
        if seed is not None:
            self._random.reseed(seed)
            self.action_space.seed(seed)
        self._reset_envs(torch.ones(self.num_envs, dtype=torch.bool, device=self.device))
        no_contact = torch.zeros((self.num_envs, len(self.task.feet)), dtype=torch.bool, device=self.device)
        return self._observe(), self._state_info(no_contact)

    def step(self, actions: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Apply one action per env; finished envs reset in the same step (see `policylab.core.envs.vector`)."""
        actions = torch.as_tensor(actions, dtype=torch.float32, device=self.device)
        if actions.shape != self.action_space.shape:
            raise ValueError(f"expected actions of shape {self.action_space.shape}, got {tuple(actions.shape)}")
        position_before = self.task.position(self._qpos, self._body_xpos).clone()
        self._ctrl.copy_(actions)
        with self._warp_scope():
            if self._physics_graph is None:
                self._simulate()
            else:
                wp.capture_launch(self._physics_graph)
        if self.task.reads_contact_forces:
            self._body_xpos.copy_(self._xpos)
        velocity = (self.task.position(self._qpos, self._body_xpos) - position_before) / self.task.dt
        terminates = self.task.healthy_reward is not None
        healthy = self.task.is_healthy(self._qpos, self._qvel) if terminates else None
        reward, step_info = self.task.reward_terms(velocity, actions, healthy, self._contact_forces)
        self._elapsed_steps += 1
        terminated = ~healthy if terminates else torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        truncated = self._elapsed_steps >= self.max_episode_steps
        observations = self._observe()
        feet_contact = self.task.feet_contact(self._sensordata)
        info = self._state_info(feet_contact) | step_info

        done = terminated | truncated
        if done.any():
            info |= {"final_obs": observations, "_final_obs": done, "_final_info": done}
            info["final_info"] = {key: value for key, value in info.items() if not key.startswith(("final", "_"))}
            self._reset_envs(done)
            observations = torch.where(done[:, None], self._observe(), observations)
            info |= self._state_info(feet_contact & ~done[:, None])
        return observations, reward, terminated, truncated, info

    def set_state(self, qpos: Any, qvel: Any) -> torch.Tensor:
        """Put every env in the given state (batch-first tensors or arrays); returns the observations. The solver
        warm-start restarts from zero and the episode step counts are kept."""
        qpos, qvel = (torch.as_tensor(state, dtype=torch.float32, device=self.device) for state in (qpos, qvel))
        expected = ((self.num_envs, self.model.nq), (self.num_envs, self.model.nv))
        if (tuple(qpos.shape), tuple(qvel.shape)) != expected:
            raise ValueError(f"expected qpos and qvel of shapes {expected}, got {(qpos.shape, qvel.shape)}")
        self._qpos.copy_(qpos)
        self._qvel.copy_(qvel)
        self._warmstart.zero_()
        self._compute_body_positions(torch.arange(self.num_envs, device=self.device))
        return self._observe()

    def close(self, **kwargs: Any) -> None:
        """Release the captured physics graph."""
        self._physics_graph = None

    def _simulate(self) -> None:
        """One env step of physics: `frame_skip` steps of every world, then the contact forces where the task reads
        them (computed after the step, as Gymnasium does)."""
        for _ in range(self.task.frame_skip):
            mjw.step(self._warp_model, self._warp_data)
        if self.task.reads_contact_forces:
            mjw.rne_postconstraint(self._warp_model, self._warp_data)

    def _capture_physics(self) -> wp.Graph | None:
        """`_simulate` captured as a CUDA graph, replayed by each step in one launch; None off CUDA, or where warp
        cannot allocate inside a graph (no memory pool) or loop in one (CUDA before 12.4: the solver's iterations)."""
        device = self._warp_device
        if not (device.is_cuda and wp.is_mempool_enabled(device) and wp.is_conditional_graph_supported()):
            return None
        collecting = gc.isenabled()
        gc.disable()  # a collection during capture would record the frees of stale warp objects into the graph
        try:
            with wp.ScopedDevice(self._warp_device), wp.ScopedCapture() as capture:
                self._simulate()
        finally:
            if collecting:
                gc.enable()
        return capture.graph

    def _warp_scope(self) -> wp.ScopedDevice | wp.ScopedStream:
        """Where warp launches: the env's device, on CUDA in torch's current stream."""
        if self._warp_device.is_cuda:
            return wp.ScopedStream(wp.stream_from_torch(self.device))
        return wp.ScopedDevice(self._warp_device)

    def _reset_envs(self, done: torch.Tensor) -> None:
        """Start new episodes in the envs where `done` is true: sampled state, zero warm-start, time and step count.
        The next `mjw.step` computes everything else from qpos and qvel."""
        rows = done.nonzero().squeeze(1)
        self._qpos[rows], self._qvel[rows] = self.task.sample_initial_state(self._random, len(rows))
        for state in (self._warmstart, self._time, self._contact_forces, self._elapsed_steps):
            state[rows] = 0
        self._compute_body_positions(rows)

    def _compute_body_positions(self, rows: torch.Tensor) -> None:
        """Body positions of freshly set states, as Gymnasium's `mj_forward` after `set_state` leaves them."""
        if not self.task.reads_contact_forces:
            return
        with self._warp_scope():
            mjw.kinematics(self._warp_model, self._warp_data)  # every world: the others keep `_body_xpos` from the step
        self._body_xpos[rows] = self._xpos[rows]

    def _observe(self) -> torch.Tensor:
        return self.task.observe(self._qpos, self._qvel, self._contact_forces)

    def _state_info(self, feet_contact: torch.Tensor) -> dict[str, torch.Tensor]:
        info = {key: value.clone() for key, value in self.task.state_info(self._qpos).items()}
        return info | {"qpos": self._qpos.clone(), "qvel": self._qvel.clone(), "feet_contact": feet_contact}


def resolve_device(device: str | torch.device) -> torch.device:
    """The torch device for `device`, checking that MuJoCo Warp can run there."""
    device = torch.device(device)
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"the warp backend runs on 'cuda' or 'cpu', got {str(device)!r}")
    if not (torch.cuda.is_available() and wp.is_cuda_available()):
        raise RuntimeError(
            "the warp backend on device 'cuda' needs a CUDA GPU with its driver, and a CUDA build of torch; none is "
            "available here (device='cpu' runs MuJoCo Warp on the CPU, slowly)"
        )
    return device if device.index is not None else torch.device("cuda", torch.cuda.current_device())
