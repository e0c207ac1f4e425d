"""The quickstart job: make an offline dataset, train TD3+BC on it, evaluate, and print the result.

Until the library's MuJoCo datasets exist (`gen/hopper-medium-v0` and friends), the dataset is
`gen/pendulum-scripted-v0`: 100 Pendulum-v1 episodes of a scripted swing-up expert with noisy and
random actions. The printed table compares the trained agent with a uniformly random policy and
with the data's own episode returns, all measured in this run.

    python benchmarks/quickstart.py            # about two minutes on 2 CPU cores
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import tyro

from policylab.core.data import load_dataset
from policylab.core.data.generate import make_dataset
from policylab.core.evaluation import evaluate
from policylab.offline_rl import TD3BC, TD3BCConfig


@dataclasses.dataclass
class Args:
    dataset: str = "gen/pendulum-scripted-v0"
    """generated dataset to train on (made if missing)"""
    steps: int = 10_000
    """TD3+BC updates"""
    seed: int = 0
    """agent seed"""
    episodes: int = 20
    """evaluation episodes"""
    run_dir: Path = Path("runs/quickstart")
    """where the run is written (resumed if it is there)"""


def main(args: Args) -> None:
    path = make_dataset(args.dataset)
    dataset = load_dataset(args.dataset)
    print(f"dataset {args.dataset}: {len(dataset)} transitions in {len(dataset.episodes())} episodes ({path})")

    agent = TD3BC.from_dataset(dataset, TD3BCConfig(seed=args.seed))
    agent.fit(dataset, steps=args.steps, eval_every=2000, eval_episodes=10, run_dir=args.run_dir, resume=True)
    trained = evaluate(agent, dataset.env_id, episodes=args.episodes, seed=10_000)
    rng = np.random.default_rng(args.seed)
    action_space = agent.action_space
    random_policy = evaluate(
        lambda obs: rng.uniform(action_space.low, action_space.high, (len(obs), *action_space.shape)),
        dataset.env_id,
        episodes=args.episodes,
        seed=10_000,
    )
    data_returns = dataset.episode_returns()
    rows = [
        ("random policy", random_policy.return_mean, random_policy.return_std),
        ("dataset episodes", float(data_returns.mean()), float(data_returns.std())),
        (f"TD3+BC, {args.steps} updates", trained.return_mean, trained.return_std),
    ]
    print(f"\n{dataset.env_id}, {args.episodes} evaluation episodes (evaluation seed 10000), return mean ± std")
    for name, mean, std in rows:
        print(f"  {name:<28} {mean:9.1f} ± {std:6.1f}")
    summary = {name: {"return_mean": round(mean, 2), "return_std": round(std, 2)} for name, mean, std in rows}
    (args.run_dir / "quickstart.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nrun directory: {args.run_dir} (metrics.csv, agent.pt, eval_return_mean.png, quickstart.json)")


if __name__ == "__main__":
    main(tyro.cli(Args))
