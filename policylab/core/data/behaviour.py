"""The behaviour policies of the `gen/<task>-<kind>-v0` MuJoCo datasets, and the rollouts that make them.

`benchmarks/train_behaviour.py` trains policylab's SAC on each task and ships, in `policylab/data/behaviour/`,
one weights file per task (the random, medium and expert actors and the replay series of snapshots up to
medium) and `behaviour.json`, each task's card: its training budget, the chosen snapshots and their returns.

A dataset rolls these actors out with sampled actions, as D4RL did, on the batched MuJoCo engine: `num_envs`
envs side by side, each contributing a contiguous stream of episodes, stored in D4RL's layout episode after
episode with `infos/qpos`, `infos/qvel` and `infos/action_log_probs`. The kinds follow D4RL: random, medium
and expert roll one actor out; medium-replay gives every snapshot of the replay series an equal share (the
snapshots are equally spaced in training steps, as the replay buffer's contents were); medium-expert is the
medium dataset followed by the expert one.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policylab.core.data.d4rl import decoded
from policylab.core.data.dataset import TRANSITION_KEYS, OfflineDataset
from policylab.core.data.scores import DATASET_KINDS, GYMNASIUM_ENV_IDS, reference_returns
from policylab.core.envs import make_vec_env
from policylab.core.evaluation import evaluate
from policylab.core.files import atomic_path
from policylab.core.logging import progress_bar
from policylab.core.nets import TanhGaussianActor

BEHAVIOUR_DIR = Path(__file__).resolve().parents[2] / "data" / "behaviour"  # the shipped policies
CARDS_FILE = "behaviour.json"
POLICY_KINDS = ("random", "medium", "expert")
DEFAULT_SIZE = 1_000_000
ROLLOUT_ENVS = 100
HIDDEN_SIZES = (256, 256)  # SACConfig's default, which the behaviour policies are trained with
# gen/<family>-<kind>-v0, optionally -<size> (digits, or thousands with k) and -seed<k> when not the defaults
DATASET_NAME = re.compile(
    rf"(?P<family>[a-z0-9]+)-(?P<kind>{'|'.join(DATASET_KINDS)})-v0(?:-(?P<size>\d+)(?P<thousands>k?))?(?:-seed(?P<seed>\d+))?"
)


@dataclasses.dataclass
class BehaviourPolicies:
    """One task's shipped actors and card."""

    task: str  # Gymnasium id, e.g. "Hopper-v5"
    actors: dict[str, TanhGaussianActor]  # "random", "medium", "expert"
    replay: list[TanhGaussianActor]  # the snapshot series up to medium, in training order
    card: dict[str, Any]


def behaviour_dir(directory: Path | None = None) -> Path:
    """`directory` if given, else $POLICYLAB_BEHAVIOUR_DIR (behaviour policies of your own), else the shipped ones."""
    return Path(directory or os.environ.get("POLICYLAB_BEHAVIOUR_DIR") or BEHAVIOUR_DIR)


def behaviour_file(task: str, directory: Path | None = None) -> Path:
    """The file holding a task's actors."""
    return behaviour_dir(directory) / f"{task.lower()}.pt"


def make_actor(task: str) -> TanhGaussianActor:
    """An untrained actor with the architecture and action bounds of the behaviour policies of `task`."""
    with make_vec_env(task, 1, backend="mujoco") as envs:
        observation_space, action_space = envs.single_observation_space, envs.single_action_space
    return TanhGaussianActor(observation_space.shape[0], action_space.low, action_space.high, HIDDEN_SIZES)


def policy_return(actor: TanhGaussianActor, task: str, episodes: int, seed: int) -> tuple[float, float]:
    """Mean and std of the return over `episodes` episodes with sampled actions, as the datasets roll policies
    out; `seed` seeds both the envs and the action noise (the global torch generator is left as it was)."""
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        result = evaluate(
            lambda observations: actor.act(torch.as_tensor(observations, dtype=torch.float32)).numpy(),
            task,
            episodes=episodes,
            seed=seed,
        )
    return result.return_mean, result.return_std


def save_behaviour(task: str, weights: dict[str, Any], card: dict[str, Any], directory: Path | None = None) -> None:
    """Write a task's actors (`weights`: state dicts under "random", "medium", "expert" and a "replay" list) and
    put its `card` into the directory's behaviour.json; both writes are atomic."""
    directory = behaviour_dir(directory)
    missing = [kind for kind in (*POLICY_KINDS, "replay") if kind not in weights]
    if missing:
        raise ValueError(f"the behaviour weights of {task} lack {missing}")
    with atomic_path(behaviour_file(task, directory)) as temporary:
        torch.save(weights, temporary)
    cards_path = directory / CARDS_FILE
    with _locked(directory / f".{CARDS_FILE}.lock"):  # tasks selected side by side each add their card
        cards = _read_cards(directory)
        cards[task] = card
        with atomic_path(cards_path) as temporary:
            temporary.write_text(json.dumps(cards, indent=1) + "\n")


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on `path` between processes (where the OS has `fcntl`; elsewhere none)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _read_cards(directory: Path | None = None) -> dict[str, Any]:
    """Every task's card in the directory's behaviour.json (none if it has no such file)."""
    cards_path = behaviour_dir(directory) / CARDS_FILE
    return json.loads(cards_path.read_text()) if cards_path.exists() else {}


def behaviour_tasks(directory: Path | None = None) -> list[str]:
    """Tasks whose behaviour policies are in `directory`."""
    return [task for task in _read_cards(directory) if behaviour_file(task, directory).exists()]


def load_behaviour(task: str, directory: Path | None = None) -> BehaviourPolicies:
    """The shipped actors and card of `task`."""
    shipped = behaviour_tasks(directory)
    if task not in shipped:
        raise FileNotFoundError(
            f"no behaviour policies for {task} in {behaviour_dir(directory)} (it has: {', '.join(shipped) or 'none'}); "
            f"train them with `python benchmarks/train_behaviour.py --tasks {task}`"
        )
    card = _read_cards(directory)[task]
    weights = torch.load(behaviour_file(task, directory), weights_only=True)
    template = make_actor(task)

    def build(state: dict[str, torch.Tensor]) -> TanhGaussianActor:
        actor = copy.deepcopy(template)
        actor.load_state_dict(state)
        return actor.eval()

    return BehaviourPolicies(
        task=task,
        actors={kind: build(weights[kind]) for kind in POLICY_KINDS},
        replay=[build(state) for state in weights["replay"]],
        card=card,
    )


def made_from_other_policies(dataset: OfflineDataset, directory: Path | None = None) -> bool:
    """Whether a behaviour dataset's card names other policies (trainer, snapshot steps) than the installed ones,
    as a cached file made before the behaviour policies were retrained does."""
    spec = parse_dataset_name((dataset.dataset_id or "").removeprefix("gen/"))
    card = _read_cards(directory).get(spec.task) if spec is not None else None
    if card is None:
        return False
    metadata = dataset.metadata
    kinds = [key.split("/")[1] for key in metadata if key.startswith("policies/") and key.endswith("/step")]
    steps_differ = any(metadata[f"policies/{kind}/step"] != card["policies"][kind]["step"] for kind in kinds)
    replay_differs = "replay_steps" in metadata and list(metadata["replay_steps"]) != card["replay_steps"]
    return decoded(metadata.get("trainer")) != card["trainer"] or steps_differ or replay_differs


ROLLOUT_COLUMNS = (*TRANSITION_KEYS, "qpos", "qvel", "action_log_probs")  # the order `rollout` collects them in


def rollout(
    actor: TanhGaussianActor, task: str, size: int, seed: int = 0, num_envs: int = ROLLOUT_ENVS, bar: Any = None
) -> OfflineDataset:
    """`size` transitions of `actor` with sampled actions on `task`, in D4RL's layout.

    Env k of `num_envs` contributes the first size/num_envs transitions (±1) of its own stream of episodes;
    the streams are stored one after another, so episodes stay contiguous. Where a stream is cut mid-episode
    its last transition is marked a timeout, as a time limit would. `seed` seeds envs and action noise.
    """
    if size < 1:
        raise ValueError(f"a dataset needs at least one transition, got size={size}")
    num_envs = min(num_envs, size)
    counts = np.full(num_envs, size // num_envs) + (np.arange(num_envs) < size % num_envs)
    steps = int(counts[0])
    with make_vec_env(task, num_envs, backend="mujoco", seed=seed) as envs, torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        observations, info = envs.reset(seed=seed)
        columns: dict[str, list[np.ndarray]] = {key: [] for key in ROLLOUT_COLUMNS}
        for step in range(steps):
            actions, log_probs = actor(torch.as_tensor(observations, dtype=torch.float32))
            actions = actions.numpy()
            next_observations, rewards, terminated, truncated, step_info = envs.step(actions)
            final_observations = next_observations
            if "final_obs" in step_info:
                final_observations = np.where(
                    step_info["_final_obs"][:, None], step_info["final_obs"], next_observations
                )
            for key, value in zip(
                ROLLOUT_COLUMNS,
                (
                    observations,
                    actions,
                    rewards,
                    final_observations,
                    terminated,
                    truncated & ~terminated,
                    info["qpos"],
                    info["qvel"],
                    log_probs.numpy(),
                ),
            ):
                columns[key].append(np.asarray(value))
            observations, info = next_observations, step_info
            if bar is not None:
                bar.update(int((counts > step).sum()))
    # [steps, envs, ...] -> env after env, each env's first counts[k] steps
    streams = {key: np.stack(values, axis=1) for key, values in columns.items()}
    keep = np.arange(steps)[None, :] < counts[:, None]
    streams["timeouts"][np.arange(num_envs), counts - 1] |= ~streams["terminals"][np.arange(num_envs), counts - 1]
    flat = {key: value[keep] for key, value in streams.items()}
    return OfflineDataset(
        **{key: flat[key] for key in TRANSITION_KEYS},
        infos={key: flat[key] for key in ROLLOUT_COLUMNS[len(TRANSITION_KEYS) :]},
        env_id=task,
    )


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What a `gen/` behaviour dataset name asks for."""

    family: str  # "hopper"
    kind: str  # one of DATASET_KINDS
    size: int  # transitions per rolled-out policy (medium-expert holds twice this)
    seed: int

    @property
    def task(self) -> str:
        return GYMNASIUM_ENV_IDS[self.family]

    @property
    def name(self) -> str:
        """The canonical name: defaults are left out, whole thousands written with k."""
        size = (
            "" if self.size == DEFAULT_SIZE else f"-{self.size // 1000}k" if self.size % 1000 == 0 else f"-{self.size}"
        )
        return f"{self.family}-{self.kind}-v0{size}{f'-seed{self.seed}' if self.seed else ''}"


def parse_dataset_name(name: str) -> DatasetSpec | None:
    """The spec of a behaviour dataset name such as "hopper-medium-v0" or "walker2d-expert-v0-100k-seed1"; None
    when the name is not of that form (or its family has no Gymnasium task)."""
    match = DATASET_NAME.fullmatch(name.removeprefix("gen/"))
    if match is None or match["family"] not in GYMNASIUM_ENV_IDS:
        return None
    size = DEFAULT_SIZE if match["size"] is None else int(match["size"]) * (1000 if match["thousands"] else 1)
    if size < 1:
        raise ValueError(f"{name} asks for {size} transitions: a dataset needs at least one")
    return DatasetSpec(match["family"], match["kind"], size, int(match["seed"] or 0))


def make_behaviour_dataset(name: str, directory: Path | None = None, progress: bool = True) -> OfflineDataset:
    """Roll the shipped behaviour policies out into the dataset `name` (see `parse_dataset_name`)."""
    spec = parse_dataset_name(name)
    if spec is None:
        raise ValueError(
            f"{name!r} is not a behaviour dataset name: use <family>-<kind>-v0 with family in "
            f"{', '.join(GYMNASIUM_ENV_IDS)} and kind in {', '.join(DATASET_KINDS)} (e.g. hopper-medium-v0)"
        )
    behaviour = load_behaviour(spec.task, directory)
    if spec.kind == "medium-replay":  # an equal share per snapshot, each with its own seed
        shares = spec.size // len(behaviour.replay) + (
            np.arange(len(behaviour.replay)) < spec.size % len(behaviour.replay)
        )
        plan = [
            (actor, int(share), spec.seed + index) for index, (actor, share) in enumerate(zip(behaviour.replay, shares))
        ]
    else:
        kinds = ("medium", "expert") if spec.kind == "medium-expert" else (spec.kind,)
        plan = [(behaviour.actors[kind], spec.size, spec.seed) for kind in kinds]
    with progress_bar(sum(size for _, size, _ in plan), description=f"gen/{spec.name}", enabled=progress) as bar:
        parts = [rollout(actor, spec.task, size, seed, bar=bar) for actor, size, seed in plan if size > 0]
    dataset = OfflineDataset.concatenate(parts)
    dataset.dataset_id = f"gen/{spec.name}"
    dataset.metadata = dataset_card(spec, behaviour)
    return dataset


def dataset_card(spec: DatasetSpec, behaviour: BehaviourPolicies) -> dict[str, Any]:
    """The `metadata/` group of a behaviour dataset: where it comes from, its policies and their returns."""
    from policylab import __version__

    card = behaviour.card
    low, high = reference_returns(spec.family)
    kinds = {"medium-expert": ("medium", "expert"), "medium-replay": ("medium",)}.get(spec.kind, (spec.kind,))
    if spec.kind == "medium-replay":
        first, last = card["replay_steps"][0], card["replay_steps"][-1]
        policy = f"{len(behaviour.replay)} SAC snapshots up to medium (env steps {first} to {last})"
    else:
        policy = " + ".join(f"{kind} (SAC actor after {card['policies'][kind]['step']} env steps)" for kind in kinds)
    metadata: dict[str, Any] = {
        "source": (
            f"made by policylab {__version__} from its own SAC behaviour policies on {spec.task}; this is not D4RL's "
            f"data. Normalised scores use D4RL's reference returns for {spec.family} ({low}, {high}), so they sit on "
            "D4RL's scale."
        ),
        "policy": policy,
        "env_id": spec.task,
        "seed": spec.seed,
        "size_per_policy": spec.size,
        "rollout_envs": ROLLOUT_ENVS,
        "library_version": __version__,
        "trainer": card["trainer"],
        "evaluation_episodes": card["evaluation_episodes"],
        "evaluation_seed": card["evaluation_seed"],
    }
    for kind in kinds:
        for key in ("step", "return_mean", "return_std"):
            metadata[f"policies/{kind}/{key}"] = card["policies"][kind][key]
    if spec.kind == "medium-replay":
        metadata["replay_steps"] = np.asarray(card["replay_steps"])
    return metadata
