"""The quickstart main job: make an offline dataset, train offline agents on it, evaluate, print the result.

By default it makes `gen/hopper-medium-v0-200k` (200k transitions of the shipped medium Hopper policy) and
trains TD3+BC and PRDC on it. The printed table puts each trained agent's return and D4RL-normalised score
next to the behaviour policy's (as recorded on the dataset's card), the data's own episodes and uniformly
random actions; `quickstart.png` in the run directory plots the learning curves against them.

    python benchmarks/quickstart.py                                   # `make quickstart` runs this
    python benchmarks/quickstart.py --algorithms td3bc iql prdc --steps 100000
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import tyro

from policylab.core.agent import registered_agents
from policylab.core.data import OfflineDataset, load_dataset, normalized_score, reference_returns
from policylab.core.data.d4rl import decoded
from policylab.core.evaluation import evaluate
from policylab.core.offline import OfflineAgent, spaces_for_dataset


@dataclasses.dataclass
class Args:
    dataset: str = "gen/hopper-medium-v0-200k"
    """dataset id (a gen/ dataset is made if missing)"""
    algorithms: tuple[str, ...] = ("td3bc", "prdc")
    """offline agents to train, one after another (policylab train --help lists them)"""
    steps: int = 25_000
    """updates per agent"""
    eval_every: int = 5_000
    """updates between evaluations of the learning curve"""
    seed: int = 0
    """agent seed"""
    episodes: int = 20
    """episodes of the final evaluation"""
    run_dir: Path = Path("runs/quickstart")
    """where the runs are written, one folder per agent (resumed if there)"""


def main(args: Args) -> None:
    agent_classes = registered_agents()
    unknown = [name for name in args.algorithms if name not in agent_classes]
    if unknown:
        raise SystemExit(f"unknown algorithm(s) {unknown}; registered: {sorted(agent_classes)}")
    dataset = load_dataset(args.dataset)
    print(f"dataset {args.dataset}: {len(dataset):,} transitions in {len(dataset.episodes()):,} episodes")
    if "source" in dataset.metadata:
        print(f"  {decoded(dataset.metadata['source'])}")

    trained = {}
    for name in args.algorithms:
        agent_class = agent_classes[name]
        agent: OfflineAgent = agent_class.from_dataset(dataset, agent_class.config_class(seed=args.seed))
        print(f"\ntraining {name} for {args.steps:,} updates")
        agent.fit(dataset, steps=args.steps, eval_every=args.eval_every, run_dir=args.run_dir / name, resume=True)
        trained[name] = evaluate(agent, dataset.env_id, episodes=args.episodes, seed=10_000)

    rng = np.random.default_rng(args.seed)
    _, action_space = spaces_for_dataset(dataset)
    low, high = action_space.low, action_space.high
    uniform = evaluate(
        lambda obs: rng.uniform(low, high, (len(obs), len(low))), dataset.env_id, episodes=args.episodes, seed=10_000
    )
    data_returns = dataset.episode_returns()
    references = [("dataset episodes", float(data_returns.mean()), float(data_returns.std()))]
    behaviour = behaviour_return(dataset)
    if behaviour is not None:
        references.insert(0, behaviour)
    rows = [("uniformly random actions", uniform.return_mean, uniform.return_std), *references]
    rows += [
        (f"{name}, {args.steps:,} updates", result.return_mean, result.return_std) for name, result in trained.items()
    ]
    scored = reference_returns(dataset.env_id) is not None
    print(f"\n{dataset.env_id}: return mean ± std" + (", D4RL-normalised score" if scored else ""))
    summary = {}
    for name, mean, std in rows:
        score = normalized_score(dataset.env_id, mean) if scored else None
        print(f"  {name:<34} {mean:9.1f} ± {std:6.1f}" + (f"   {score:6.1f}" if scored else ""))
        summary[name] = {"return_mean": round(mean, 2), "return_std": round(std, 2)} | (
            {"normalized_score": round(score, 2)} if scored else {}
        )
    print(f"  (trained agents and random actions: {args.episodes} episodes from seed 10000)")
    (args.run_dir / "quickstart.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot = plot_learning_curves(args.run_dir, args.algorithms, dataset, references)
    print(f"\nrun directory: {args.run_dir} (<agent>/metrics.csv, <agent>/agent.pt, {plot.name}, quickstart.json)")


def behaviour_return(dataset: OfflineDataset) -> tuple[str, float, float] | None:
    """The behaviour policy's recorded return, from a single-policy gen/ dataset's metadata card."""
    policies = sorted({key.split("/")[1] for key in dataset.metadata if key.startswith("policies/")})
    if len(policies) != 1:
        return None
    kind = policies[0]
    episodes = dataset.metadata["evaluation_episodes"]
    name = f"behaviour policy ({kind}, {episodes} ep.)"
    return (
        name,
        float(dataset.metadata[f"policies/{kind}/return_mean"]),
        float(dataset.metadata[f"policies/{kind}/return_std"]),
    )


def plot_learning_curves(
    run_dir: Path, algorithms: tuple[str, ...], dataset: OfflineDataset, references: list[tuple[str, float, float]]
) -> Path:
    """Evaluated return (normalised where D4RL has references) over updates, per agent, with references as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    env_id = dataset.env_id
    scored = reference_returns(env_id) is not None
    scale = (lambda value: normalized_score(env_id, value)) if scored else (lambda value: value)
    figure, axes = plt.subplots(figsize=(6, 4))
    for name in algorithms:
        with open(run_dir / name / "metrics.csv") as file:
            rows = [row for row in csv.DictReader(file) if row.get("eval/return_mean")]
        axes.plot(
            [int(row["step"]) for row in rows],
            [scale(float(row["eval/return_mean"])) for row in rows],
            marker="o",
            label=name,
        )
    for (name, mean, _), style in zip(references, ("--", ":")):
        axes.axhline(scale(mean), linestyle=style, color="grey", label=name)
    axes.set_xlabel("updates")
    axes.set_ylabel("D4RL-normalised score" if scored else "return")
    axes.set_title(f"{dataset.dataset_id} ({env_id})")
    axes.legend()
    figure.tight_layout()
    path = run_dir / "quickstart.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


if __name__ == "__main__":
    main(tyro.cli(Args))
