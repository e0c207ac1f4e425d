"""MinAtar's games (Young & Tian 2019) as one batched env, observations as channel-first torch tensors (optional
extra: `pip install "policylab[minatar]"`).

Each env is MinAtar's own `minatar.Environment` (pure numpy) with MinAtar's defaults: sticky actions (with
probability 0.1 the previous action is repeated) and difficulty ramping. Actions index the game's minimal action
set (breakout 3, asterix 5, freeway 3, seaquest 6, space_invaders 4), as MinAtar's `-v1` Gymnasium ids and
gymnax do. Observations are (num_envs, channels, 10, 10) float32 tensors of 0/1. MinAtar itself has no time
limit but freeway's; here episodes also truncate after `max_episode_steps`. Auto-reset follows
`policylab.core.envs.vector`: a finished env starts its next game in the same step and the last observation of
the finished one is in `info["final_obs"]` (always present; equal to the returned observation where
`info["_final_obs"]` is false). A seeded reset starts fresh games, env i drawing sticky actions and game events
from its own seed (s + i for one int s, or s_i from a list), so a slice of a batch equals a smaller batch reset
with the slice's seeds.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector.utils import batch_space

from policylab.core.envs.vector import VecEnv, check_env_seeds, to_numpy

MINATAR_GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")


def import_minatar() -> Any:
    """The `minatar` package, or an ImportError that says how to install it."""
    try:
        import minatar
    except ImportError as error:
        raise ImportError('the MinAtar games need the minatar package: pip install "policylab[minatar]"') from error
    return minatar


class MinAtarVecEnv(VecEnv):
    """`num_envs` copies of one MinAtar game stepped together, same-step auto-reset, torch tensors on `device`."""

    backend = "minatar"
    returns_tensors = True
    seeds_each_env = True

    def __init__(
        self,
        game: str,
        num_envs: int,
        seed: int | None = None,
        device: str | torch.device = "cpu",
        sticky_action_probability: float = 0.1,
        max_episode_steps: int = 10_000,
        difficulty_ramping: bool = True,
    ):
        if game not in MINATAR_GAMES:
            raise ValueError(f"unknown MinAtar game {game!r}; choose one of {', '.join(MINATAR_GAMES)}")
        if num_envs < 1 or max_episode_steps < 1:
            raise ValueError(f"num_envs and max_episode_steps must be at least 1, got {num_envs}, {max_episode_steps}")
        if not 0.0 <= sticky_action_probability <= 1.0:
            raise ValueError(f"sticky_action_probability must be in [0, 1], got {sticky_action_probability}")
        self._minatar = import_minatar()
        self.env_id, self.game, self.num_envs = f"MinAtar/{game}", game, num_envs
        self.device = torch.device(device)
        self.sticky_action_probability, self.difficulty_ramping = sticky_action_probability, difficulty_ramping
        self.max_episode_steps = max_episode_steps
        self.games = [self._new_game(None) for _ in range(num_envs)]
        self.action_set = self.games[0].minimal_action_set()
        channels = self.games[0].state_shape()[2]
        self.single_observation_space = gym.spaces.Box(0.0, 1.0, (channels, 10, 10), np.float32)
        self.single_action_space = gym.spaces.Discrete(len(self.action_set))
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.elapsed_steps = np.zeros(num_envs, dtype=np.int64)
        self._seed = seed

    def _new_game(self, seed: int | None) -> Any:
        game = self._minatar.Environment(self.game, self.sticky_action_probability, self.difficulty_ramping)
        game.seed(seed)
        game.reset()
        return game

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[torch.Tensor, dict]:
        """Start a new game in every env: fresh games from the seeds when given (or the constructor's seed the first
        time), else MinAtar's own reset of the current games."""
        if options:
            raise ValueError(f"{self.env_id} takes no reset options, got {sorted(options)}")
        seed = self._seed if seed is None else seed
        self._seed = None
        if seed is None:
            for game in self.games:
                game.reset()
        else:
            if isinstance(seed, list | tuple | np.ndarray):
                seeds = check_env_seeds(seed, self.num_envs)
            else:
                seeds = [int(seed) + index for index in range(self.num_envs)]
            self.games = [self._new_game(each) for each in seeds]
        self.elapsed_steps[:] = 0
        return self._observations(), {}

    def step(
        self, actions: torch.Tensor | np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Step every game, starting a new one where a game ended or ran out of steps."""
        actions = to_numpy(actions)
        if actions.shape != (self.num_envs,) or not np.all((actions >= 0) & (actions < len(self.action_set))):
            raise ValueError(
                f"{self.env_id} expects {self.num_envs} actions in 0..{len(self.action_set) - 1}, got {actions}"
            )
        rewards = np.zeros(self.num_envs, dtype=np.float32)
        terminated = np.zeros(self.num_envs, dtype=bool)
        for index, (game, action) in enumerate(zip(self.games, actions.tolist())):
            rewards[index], terminated[index] = game.act(self.action_set[action])
        self.elapsed_steps += 1
        truncated = self.elapsed_steps >= self.max_episode_steps
        done = terminated | truncated
        final_observations = self._observations()
        observations = final_observations
        if done.any():
            for index in np.flatnonzero(done):
                self.games[index].reset()
            self.elapsed_steps[done] = 0
            observations = self._observations()
        done_tensor = torch.from_numpy(done).to(self.device)
        info = {
            "final_obs": final_observations,
            "_final_obs": done_tensor,
            "final_info": {},
            "_final_info": done_tensor,
        }
        return (
            observations,
            torch.from_numpy(rewards).to(self.device),
            torch.from_numpy(terminated).to(self.device),
            torch.from_numpy(truncated).to(self.device),
            info,
        )

    def _observations(self) -> torch.Tensor:
        states = np.stack([game.state() for game in self.games]).transpose(0, 3, 1, 2)
        return torch.from_numpy(states.astype(np.float32)).to(self.device)
