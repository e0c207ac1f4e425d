"""What HNPG's per-step critics and policies have learnt on the combination lock after a given number of samples.

For every time step h and each live latent state (A, B): the probability that π_h picks the right choice, the
critic's Q_h for the one-hot actions of A's and of B's right choice at that step, and Q_h averaged over π_h's own
actions, on fresh noisy observations. A critic that tells the latent states apart values the right choice of the
state above the other state's; one that does not gives its policy no reason to condition on the state. Where the
policy's own actions, which lie outside the offline data's one-hot and [0, 1]^10 actions, are valued as high as
the right choice while they rarely make it, the policy step is following the critic's extrapolation.

The agent is trained here (`--steps`, `--offline-ratio`) or read from a combination-lock benchmark run's
checkpoint (`--checkpoint`).

    python benchmarks/combination_lock_critic.py --horizon 20 --steps 300000
    python benchmarks/combination_lock_critic.py --horizon 5 --steps 30000
    python benchmarks/combination_lock_critic.py --horizon 20 --steps 150000 --offline-ratio 10
    python benchmarks/combination_lock_critic.py --horizon 50 \
        --checkpoint benchmarks/results/combination_lock_offline_x10/work/h50-hnpg-s0/checkpoint.pt
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import tyro

from policylab.core.agent import load_checkpoint
from policylab.core.envs import make_vec_env
from policylab.core.envs.torch_envs import register_combination_lock
from policylab.core.files import atomic_write
from policylab.online_rl import HNPG, HNPGConfig


@dataclasses.dataclass
class Settings:
    horizon: int = 20
    """lock horizon H"""
    steps: int = 300_000
    """online env steps of HNPG's training"""
    seed: int = 0
    """seed of the agent and the training envs"""
    offline_ratio: float = 1.0
    """HNPG's offline draws per time step and iteration, as a multiple of the online ones (1: the authors')"""
    checkpoint: Path | None = None
    """probe the agent of this benchmark run checkpoint (`<out>/work/h<H>-hnpg-s<seed>/checkpoint.pt`) instead of
    training one; its steps, seed and offline ratio are read from it"""
    samples: int = 200
    """observations per (step, latent state) in the probe"""
    out: Path = Path("benchmarks/results/combination_lock")
    """the table goes to <out>/critic_h<H>_s<seed>_<steps>.md"""


@torch.no_grad()
def probe(agent: HNPG, lock, samples: int) -> list[dict[str, float]]:
    """Per time step: P(right | A), P(right | B) and Q_h(latent, one-hot right choice of A or B)."""
    observations, right = lock.live_state_observations(samples)
    actions = agent.policy.sample(observations.flatten(1, 2)).view(lock.horizon, 2, samples, -1)  # [H, batch, dim] in
    choices = lock.choice_probabilities(actions)
    probabilities = choices.gather(-1, right[:, :, None, None].expand(-1, -1, samples, 1)).squeeze(-1).mean(dim=-1)
    right_actions = torch.eye(lock.num_choices)[right][:, :, None].expand(-1, -1, samples, -1)  # [H, 2, samples, 10]
    rows: list[dict[str, float]] = [{} for _ in range(lock.horizon)]
    for latent, name in enumerate("AB"):
        probed = {f"right of {other}": right_actions[:, other_latent] for other_latent, other in enumerate("AB")}
        probed["π's actions"] = actions[:, latent]
        for h in range(lock.horizon):
            rows[h][f"P(right|{name})"] = float(probabilities[h, latent])
        for label, probed_actions in probed.items():
            values = agent.critic(observations[:, latent], probed_actions).squeeze(-1).mean(dim=1)
            for h in range(lock.horizon):
                rows[h][f"Q({name}, {label})"] = float(values[h])
    return rows


def main(settings: Settings) -> None:
    torch.set_num_threads(1)
    env_id = register_combination_lock(settings.horizon)
    if settings.checkpoint is not None:
        payload = load_checkpoint(settings.checkpoint)
        agent = HNPG.from_checkpoint_payload(payload)
        steps = int(payload["training"]["step"])
        settings = dataclasses.replace(
            settings, steps=steps, seed=agent.config.seed, offline_ratio=agent.config.offline_ratio
        )
        if agent.num_steps != settings.horizon:
            raise ValueError(f"{settings.checkpoint} holds an agent of horizon {agent.num_steps}: pass --horizon")
    else:
        envs = make_vec_env(env_id, 10, backend="torch", seed=settings.seed)
        agent = HNPG(envs, HNPGConfig(seed=settings.seed, num_envs=10, offline_ratio=settings.offline_ratio))
        agent.learn(settings.steps, eval_every=10 * settings.steps, progress=False, env=envs)
    lock = make_vec_env(env_id, 1, backend="torch", seed=10_000 + settings.seed).unwrapped
    rows = probe(agent, lock, settings.samples)
    columns = list(rows[0])
    ratio = settings.offline_ratio
    ratio_note = f", {ratio:g}x the online draws per step" if ratio != 1 else ""
    same = lock.combinations[0] == lock.combinations[1]
    lines = [
        f"HNPG on CombinationLock-H{settings.horizon}-v0 after {settings.steps:,} online steps (seed {settings.seed}, "
        f"offline data gen/combination-lock-h{settings.horizon}-v0{ratio_note}): per time step, the probability of "
        f"the right choice in each live state and the critic's Q for the one-hot right choices of A and of B and "
        f"for the policy's own sampled actions ({settings.samples} noisy observations each). `same`: A and B share "
        "the step's right choice.",
        "",
        "| h | same | " + " | ".join(columns) + " |",
        "| --- | --- | " + " | ".join("---" for _ in columns) + " |",
    ]
    for h, row in enumerate(rows):
        cells = " | ".join(f"{row[column]:.2f}" for column in columns)
        lines.append(f"| {h} | {'yes' if same[h] else ''} | {cells} |")
    text = "\n".join(lines) + "\n"
    settings.out.mkdir(parents=True, exist_ok=True)
    suffix = f"_offline_x{ratio:g}" if ratio != 1 else ""
    path = settings.out / f"critic_h{settings.horizon}_s{settings.seed}_{settings.steps}{suffix}.md"
    atomic_write(path, lambda file: file.write(text.encode()))
    print(text)


if __name__ == "__main__":
    main(tyro.cli(Settings))
