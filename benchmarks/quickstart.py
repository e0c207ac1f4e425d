"""The quickstart main job: make an offline dataset, train TD3+BC on it, evaluate, and print the result.

The printed table puts the trained agent's return (and D4RL-normalised score, for the MuJoCo tasks) next
to the behaviour policy's, as recorded on the dataset's card, and the data's own episodes; `quickstart.png`
in the run directory plots the learning curve against them. The default dataset stays
`gen/pendulum-scripted-v0` (a scripted swing-up expert with noisy and random actions) until the MuJoCo
behaviour policies ship; then it becomes `gen/hopper-medium-v0-200k`, which already runs with
`--dataset gen/hopper-medium-v0-200k` wherever behaviour policies are installed.

    python benchmarks/quickstart.py            # `make quickstart` runs this after installing
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import tyro

from policylab.core.data import OfflineDataset, load_dataset, normalized_score, reference_returns
from policylab.core.evaluation import evaluate
from policylab.offline_rl import TD3BC, TD3BCConfig


@dataclasses.dataclass
class Args:
    dataset: str = "gen/pendulum-scripted-v0"
    """dataset id (a gen/ dataset is made if missing)"""
    steps: int = 10_000
    """TD3+BC updates"""
    eval_every: int = 5_000
    """updates between evaluations of the learning curve"""
    seed: int = 0
    """agent seed"""
    episodes: int = 20
    """episodes of the final evaluation"""
    run_dir: Path = Path("runs/quickstart")
    """where the run is written (resumed if it is there)"""


def main(args: Args) -> None:
    dataset = load_dataset(args.dataset)
    print(f"dataset {args.dataset}: {len(dataset):,} transitions in {len(dataset.episodes()):,} episodes")
    if "source" in dataset.metadata:
        print(f"  {_text(dataset.metadata['source'])}")

    agent = TD3BC.from_dataset(dataset, TD3BCConfig(seed=args.seed))
    agent.fit(dataset, steps=args.steps, eval_every=args.eval_every, run_dir=args.run_dir, resume=True)
    trained = evaluate(agent, dataset.env_id, episodes=args.episodes, seed=10_000)

    rng = np.random.default_rng(args.seed)
    low, high = agent.action_space.low, agent.action_space.high
    uniform = evaluate(
        lambda obs: rng.uniform(low, high, (len(obs), len(low))), dataset.env_id, episodes=args.episodes, seed=10_000
    )
    data_returns = dataset.episode_returns()
    rows = [
        ("uniformly random actions", uniform.return_mean, uniform.return_std),
        ("dataset episodes", float(data_returns.mean()), float(data_returns.std())),
    ]
    behaviour = behaviour_return(dataset)
    if behaviour is not None:
        rows.insert(1, behaviour)
    rows.append((f"TD3+BC, {args.steps:,} updates", trained.return_mean, trained.return_std))
    scored = reference_returns(dataset.env_id) is not None
    print(f"\n{dataset.env_id}: return mean ± std" + (", D4RL-normalised score" if scored else ""))
    summary = {}
    for name, mean, std in rows:
        score = normalized_score(dataset.env_id, mean) if scored else None
        print(f"  {name:<34} {mean:9.1f} ± {std:6.1f}" + (f"   {score:6.1f}" if scored else ""))
        summary[name] = {"return_mean": round(mean, 2), "return_std": round(std, 2)} | (
            {"normalized_score": round(score, 2)} if scored else {}
        )
    print(f"  (TD3+BC and random actions: {args.episodes} episodes from seed 10000)")
    (args.run_dir / "quickstart.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot = plot_learning_curve(args.run_dir, dataset, rows[1:-1])
    print(f"\nrun directory: {args.run_dir} (metrics.csv, agent.pt, {plot.name}, quickstart.json)")


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


def plot_learning_curve(run_dir: Path, dataset: OfflineDataset, references: list[tuple[str, float, float]]) -> Path:
    """Evaluated return (normalised where D4RL has references) over updates, with the references as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(run_dir / "metrics.csv") as file:
        rows = [row for row in csv.DictReader(file) if row.get("eval/return_mean")]
    env_id = dataset.env_id
    scored = reference_returns(env_id) is not None
    scale = (lambda value: normalized_score(env_id, value)) if scored else (lambda value: value)
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(
        [int(row["step"]) for row in rows],
        [scale(float(row["eval/return_mean"])) for row in rows],
        marker="o",
        label="TD3+BC",
    )
    for (name, mean, _), style in zip(references, ("--", ":")):
        axes.axhline(scale(mean), linestyle=style, color="grey", label=name)
    axes.set_xlabel("updates")
    axes.set_ylabel("D4RL-normalised score" if scored else "return")
    axes.set_title(f"TD3+BC on {dataset.dataset_id} ({env_id})")
    axes.legend()
    figure.tight_layout()
    path = run_dir / "quickstart.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


if __name__ == "__main__":
    main(tyro.cli(Args))
