"""LPG meta-trained on uniform random grid worlds vs GROOVE (algorithmic-regret curriculum) vs the positive
value loss curriculum, meta-tested on held-out levels against A2C.

For every meta-training seed and curriculum: meta-train (resumable run directories under results/groove/work/),
then train fresh agents with the frozen LPG on held-out random levels and on LPG's named tabular levels, and
normalise their return as (LPG − random) / (A2C − random), A2C and the random policy run on the same levels for
the same number of updates. Each run's result is written as it finishes (results/groove/<curriculum>-s<seed>.json),
so a killed benchmark picks up where it stopped; results/groove/groove.md is the table over what is finished.

With `--minatar GAMES`, the script instead meta-tests every LPG already meta-trained at the budget
(results/groove/work/<budget>-<run>/lpg.pt) and the untrained LPG on those MinAtar games (`pip install
"policylab[minatar]"`): a fresh network agent trained by each frozen LPG for `--minatar-updates` updates, normalised
by A2C trained with the same networks and budget and by the random policy (`meta_test_minatar`). Each result is
written as it finishes (results/groove/minatar/), and results/groove/minatar_<budget>.md is the table.

    python benchmarks/groove.py                        # the reduced budget below, seeds 0 and 1
    python benchmarks/groove.py --budget paper --device cuda
    python benchmarks/groove.py --minatar breakout asterix --minatar-updates 2000
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import statistics
import time

import torch
import tyro

from policylab.core.envs.grid_worlds import NAMED_LEVELS, GridLevels, named_levels, sample_levels
from policylab.core.envs.minatar import MINATAR_GAMES, import_minatar
from policylab.core.logging import MetricLogger
from policylab.evolution.groove import (
    CURRICULA,
    GROOVE,
    GROOVEConfig,
    LPGNetwork,
    MinAtarConfig,
    load_lpg,
    meta_test,
    meta_test_minatar,
    minatar_reference_returns,
    reference_returns,
)

RESULTS = pathlib.Path(__file__).parent / "results" / "groove"


@dataclasses.dataclass
class Budget:
    meta_updates: int
    num_agents: int
    envs_per_agent: int
    lifetime: int
    """agent updates per lifetime, in meta-training and meta-test alike"""
    hidden_size: int
    meta_learning_rate: float
    buffer_size: int
    score_envs: int
    held_out_levels: int
    """random levels of the meta-test"""
    named_copies: int
    """copies (start and object cells drawn anew) of each named level in the meta-test"""


BUDGETS = {
    # what a shared 2-core CPU affords: about 5 minutes of meta-training per run
    "reduced": Budget(300, 32, 16, 50, 64, 1e-3, 200, 8, 64, 8),
    # the authors' settings, except 64 agents rather than 512 (meta-training ~3 h per run on their GPU)
    "paper": Budget(5000, 64, 64, 250, 256, 1e-4, 4000, 16, 256, 16),
}


@dataclasses.dataclass
class Args:
    budget: str = "reduced"
    seeds: tuple[int, ...] = (0, 1)
    curricula: tuple[str, ...] = CURRICULA
    rank_temperatures: tuple[float, ...] = (0.1,)
    """β of the buffer's rank prioritisation for the regret and value-loss curricula (runs other than the default
    0.1 are labelled <curriculum>-beta<β>)"""
    device: str = "cpu"
    output: pathlib.Path = RESULTS
    meta_learning_rate: float | None = None
    """overrides the budget's (runs labelled <curriculum>-lr<value>)"""
    summary_only: bool = False
    """rewrite groove_<budget>.md from the finished runs and stop"""
    minatar: tuple[str, ...] = ()
    """MinAtar games: meta-test the LPGs already meta-trained at this budget on them (and the untrained LPG), then
    stop"""
    minatar_updates: int = 500
    """agent updates of each MinAtar meta-test (64 envs x 20 steps each; the authors' lifetime: 100,000)"""
    minatar_seeds: tuple[int, ...] = (0,)
    """seeds of the MinAtar agents (one fresh agent per LPG, game and seed)"""


def config_for(budget: Budget, curriculum: str, seed: int, device: str, rank_temperature: float = 0.1) -> GROOVEConfig:
    return GROOVEConfig(
        curriculum=curriculum,
        rank_temperature=rank_temperature,
        num_agents=budget.num_agents,
        envs_per_agent=budget.envs_per_agent,
        lifetime=budget.lifetime,
        hidden_size=budget.hidden_size,
        meta_learning_rate=budget.meta_learning_rate,
        buffer_size=budget.buffer_size,
        score_envs=budget.score_envs,
        seed=seed,
        device=device,
    )


def test_sets(budget: Budget) -> dict[str, GridLevels]:
    """The held-out levels, the same for every run: random levels from a seed no meta-training uses, and each
    named level."""
    sets = {"random": sample_levels(budget.held_out_levels, torch.Generator().manual_seed(10_000))}
    for name in NAMED_LEVELS:
        sets[name] = named_levels(name, budget.named_copies, torch.Generator().manual_seed(20_000))
    return sets


def write_json(path: pathlib.Path, data: dict) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    temporary.replace(path)


def references(args: Args, budget: Budget, sets: dict[str, GridLevels]) -> dict[str, dict[str, float]]:
    """A2C and random returns on every test set (computed once, cached in references.json)."""
    path = args.output / f"references_{args.budget}.json"
    if path.exists():
        return json.loads(path.read_text())
    config = config_for(budget, "uniform", 0, args.device)
    result = {name: reference_returns(levels, budget.lifetime, config, seed=0) for name, levels in sets.items()}
    write_json(path, result)
    return result


def evaluate(lpg: LPGNetwork, config: GROOVEConfig, budget: Budget, sets, refs) -> dict[str, dict[str, float]]:
    return {
        name: meta_test(lpg, levels, budget.lifetime, config, seed=0, references=refs[name])
        for name, levels in sets.items()
    }


def run_label(curriculum: str, rank_temperature: float, meta_learning_rate: float | None) -> str:
    """The run's name: the curriculum, with what differs from the budget's settings."""
    label = curriculum
    if curriculum != "uniform" and rank_temperature != 0.1:
        label += f"-beta{rank_temperature:g}"
    return label if meta_learning_rate is None else label + f"-lr{meta_learning_rate:g}"


def run(args: Args, budget: Budget, curriculum: str, rank_temperature: float, seed: int, sets, refs) -> dict:
    label = run_label(curriculum, rank_temperature, args.meta_learning_rate)
    config = config_for(budget, curriculum, seed, args.device, rank_temperature)
    if args.meta_learning_rate is not None:
        config = dataclasses.replace(config, meta_learning_rate=args.meta_learning_rate)
    groove = GROOVE(config)
    untrained = evaluate(groove.lpg, config, budget, sets, refs) if label == "uniform" else None
    started = time.perf_counter()
    run_dir = args.output / "work" / f"{args.budget}-{label}-s{seed}"
    groove.run(budget.meta_updates, run_dir, resume=(run_dir / "checkpoint.pt").exists(), checkpoint_every=25)
    seconds = time.perf_counter() - started
    history = groove.history
    curve = [
        (row["meta_update"], statistics.fmean(r.get("reward_per_step", 0.0) for r in history[i : i + 25]))
        for i, row in enumerate(history)
        if i % 25 == 0
    ]
    result = {
        "curriculum": label,
        "rank_temperature": rank_temperature,
        "seed": seed,
        "meta_training_seconds_this_session": round(seconds, 1),
        "meta_test": evaluate(groove.lpg, config, budget, sets, refs),
        "reward_per_step_curve": curve,
        "levels_scored": sum(row.get("finished", 0) for row in history),
        "buffer_size": len(groove.buffer),
    }
    if untrained is not None:
        result["untrained_lpg_meta_test"] = untrained
    return result


def level_features(levels: GridLevels, weights: torch.Tensor) -> dict[str, float]:
    """Weighted means of what makes a level: size, objects, episode length, best reward, walls inside the grid."""
    inside = torch.arange(levels.walls.shape[1]) < (levels.size**2)[:, None]
    features = {
        "size": levels.size.double(),
        "objects": levels.object_present.sum(1).double(),
        "episode_length": levels.episode_length.double(),
        "best_reward": levels.object_reward.masked_fill(~levels.object_present, -1.0).max(1).values.double(),
        "negative_objects": (levels.object_present & (levels.object_reward < 0)).sum(1).double(),
        "walls_inside": (levels.walls & inside).sum(1).double(),
    }
    weights = weights.double() / weights.sum()
    return {name: float((value * weights).sum()) for name, value in features.items()}


def buffer_profile(run_dir: pathlib.Path, top: int = 20) -> dict[str, float] | None:
    """The features of a finished run's `top` highest-scoring buffer levels (the ones replayed most)."""
    checkpoint = run_dir / "checkpoint.pt"
    if not checkpoint.exists():
        return None
    buffer = torch.load(checkpoint, weights_only=False)["buffer"]
    if buffer["levels"] is None:
        return None
    best = buffer["scores"].argsort(descending=True)[:top]
    levels = GridLevels(**buffer["levels"]).select(best)
    profile = level_features(levels, torch.ones(len(best)))
    return profile | {"mean_score": float(buffer["scores"][best].mean()), "levels": len(buffer["scores"])}


def entropy_collapse(run_dir: pathlib.Path, window: int = 25, threshold: float = 1.0) -> tuple[bool, bool]:
    """Whether the agents' policy entropy during meta-training fell below `threshold` averaged over `window`
    meta-updates at some point, and whether it was still below at the end."""
    rows = MetricLogger(run_dir, tensorboard=False).read()
    entropy = [float(row["policy_entropy"]) for row in rows if row.get("policy_entropy")]
    means = [statistics.fmean(entropy[i : i + window]) for i in range(max(1, len(entropy) - window + 1))]
    return min(means) < threshold, means[-1] < threshold


def summarise(args: Args, budget: Budget) -> str:
    rows = {}
    for path in sorted(args.output.glob(f"{args.budget}-*-s*.json")):
        result = json.loads(path.read_text())
        rows.setdefault(result["curriculum"], []).append(result)
        if "untrained_lpg_meta_test" in result:
            rows.setdefault("untrained LPG", []).append({"meta_test": result["untrained_lpg_meta_test"]})
    names = ["random", *NAMED_LEVELS]
    lines = [
        f"# GROOVE meta-test, budget `{args.budget}`: {json.dumps(dataclasses.asdict(budget))}",
        "",
        "Return normalised as (LPG − random) / (A2C − random), A2C and random on the same levels for the same "
        "number of updates; mean ± half-range over the meta-training seeds (their count in brackets).",
        "",
        "| LPG meta-trained on | "
        + " | ".join(f"held-out {name}" for name in names)
        + " | entropy collapse: at the end / at some point |",
        "| --- |" + " --- |" * (len(names) + 1),
    ]
    labels = sorted(set(rows) - {"untrained LPG"}, key=lambda label: (not label.startswith("uniform"), label))
    for curriculum in [*labels, "untrained LPG"]:
        if curriculum not in rows:
            continue
        cells = []
        for name in names:
            reference = rows[curriculum][0]["meta_test"][name]
            if reference["a2c_return"] <= reference["random_return"]:
                cells.append("— (A2C ≤ random)")
                continue
            values = [row["meta_test"][name]["normalised_return"] for row in rows[curriculum]]
            spread = (max(values) - min(values)) / 2
            cells.append(f"{statistics.fmean(values):.3f} ± {spread:.3f} [{len(values)}]")
        collapses = [
            entropy_collapse(args.output / "work" / f"{args.budget}-{curriculum}-s{row['seed']}")
            for row in rows[curriculum]
            if "seed" in row
        ]
        at_end, ever = sum(end for _, end in collapses), sum(dip for dip, _ in collapses)
        cells.append(f"{at_end} / {ever} of {len(collapses)}" if collapses else "")
        lines.append(f"| {curriculum} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Entropy collapse: meta-training runs in which the agents' policy entropy, averaged over 25 meta-updates, "
        "was below 1.0 (a uniform policy has 1.61) over the last 25 meta-updates / at some point.",
    ]
    lines += ["", "Mean returns (LPG-trained agents, mean over seeds; A2C and random: the references).", ""]
    lines += ["| agents | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for curriculum in [*labels, "untrained LPG"]:
        if curriculum in rows:
            values = [
                statistics.fmean(row["meta_test"][name]["lpg_return"] for row in rows[curriculum]) for name in names
            ]
            lines.append(f"| LPG ({curriculum}) | " + " | ".join(f"{value:.3f}" for value in values) + " |")
    any_row = next(iter(rows.values()))[0]["meta_test"] if rows else {}
    for key in ("a2c_return", "random_return"):
        if any_row:
            label = key.split("_")[0].upper() if key == "a2c_return" else "random"
            lines.append(f"| {label} | " + " | ".join(f"{any_row[name][key]:.3f}" for name in names) + " |")
    uniform = sample_levels(4096, torch.Generator().manual_seed(30_000))
    profiles = {"uniform distribution": level_features(uniform, torch.ones(len(uniform)))}
    for label in labels:
        for seed in args.seeds:
            profile = buffer_profile(args.output / "work" / f"{args.budget}-{label}-s{seed}")
            if profile is not None:
                profiles[f"{label} buffer, seed {seed}"] = profile
    columns = list(profiles["uniform distribution"])
    lines += [
        "",
        "Means over the uniform distribution, and over the 20 highest-scoring levels of each buffer at the end.",
        "",
    ]
    lines += ["| levels | " + " | ".join(columns) + " | levels in buffer | mean score of the 20 |"]
    lines += ["| --- |" + " --- |" * (len(columns) + 2)]
    for label, profile in profiles.items():
        extra = [f"{profile['levels']}", f"{profile['mean_score']:.3f}"] if "levels" in profile else ["", ""]
        lines.append(f"| {label} | " + " | ".join([f"{profile[c]:.2f}" for c in columns] + extra) + " |")
    return "\n".join(lines) + "\n"


def minatar_lpgs(args: Args, budget: Budget) -> dict[str, LPGNetwork]:
    """Every LPG meta-trained at the budget (by run name), and the untrained one (the first run's initial weights)."""
    lpgs = {"untrained LPG": GROOVE(config_for(budget, "uniform", 0, args.device)).lpg}
    for path in sorted((args.output / "work").glob(f"{args.budget}-*-s*/lpg.pt")):
        lpgs[path.parent.name.removeprefix(f"{args.budget}-")] = load_lpg(path, args.device)
    return lpgs


def minatar_meta_tests(args: Args, budget: Budget) -> None:
    """The MinAtar meta-test of every LPG found, each result written as it finishes, then the table."""
    unknown = sorted(set(args.minatar) - set(MINATAR_GAMES))
    if unknown:
        raise ValueError(f"unknown MinAtar games {unknown}; choose from {', '.join(MINATAR_GAMES)}")
    try:
        import_minatar()
    except ImportError as error:
        print(f"MinAtar meta-test skipped: {error}", flush=True)
        return
    config = MinAtarConfig(device=args.device)
    folder = args.output / "minatar"
    folder.mkdir(parents=True, exist_ok=True)
    lpgs = minatar_lpgs(args, budget)
    print("MinAtar meta-test of", ", ".join(lpgs), flush=True)
    for game in args.minatar:
        for seed in args.minatar_seeds:
            stem = f"{game}-u{args.minatar_updates}-a{seed}"
            path = folder / f"references-{stem}.json"
            if not path.exists():
                started = time.perf_counter()
                refs = minatar_reference_returns(game, args.minatar_updates, config, seed)
                write_json(path, refs | {"seconds": round(time.perf_counter() - started, 1)})
            refs = json.loads(path.read_text())
            for name, lpg in lpgs.items():
                path = folder / f"{args.budget}-{name.replace(' ', '-')}-{stem}.json"
                if path.exists():
                    continue
                started = time.perf_counter()
                result = meta_test_minatar(lpg, game, args.minatar_updates, config, seed, refs)
                result |= {"lpg": name, "game": game, "seed": seed, "seconds": round(time.perf_counter() - started, 1)}
                write_json(path, result)
                print(game, seed, name, round(result["normalised_return"], 3), flush=True)
    (args.output / f"minatar_{args.budget}.md").write_text(summarise_minatar(args, config))


def summarise_minatar(args: Args, config: MinAtarConfig) -> str:
    steps = args.minatar_updates * config.num_envs * config.rollout_length
    lines = [
        f"# GROOVE's LPGs (budget `{args.budget}`) meta-tested on MinAtar",
        "",
        f"Each agent: {args.minatar_updates} updates of {config.num_envs} envs x {config.rollout_length} steps "
        f"({steps:,} steps), MLPs {config.hidden_sizes}, Adam {config.learning_rate:g}; scored by "
        f"{config.evaluation_episodes} episodes (at most {config.max_episode_steps} steps). Return normalised as "
        "(LPG − random) / (A2C − random), A2C and random on the same game with the same budget: mean over the agent "
        f"seeds {list(args.minatar_seeds)} (each seed's value; the LPG agents' mean return).",
        "",
        "| LPG | " + " | ".join(args.minatar) + " |",
        "| --- |" + " --- |" * len(args.minatar),
    ]
    results: dict[str, dict[str, list[dict]]] = {}
    for game in args.minatar:
        for seed in args.minatar_seeds:
            for path in sorted(
                (args.output / "minatar").glob(f"{args.budget}-*-{game}-u{args.minatar_updates}-a{seed}.json")
            ):
                result = json.loads(path.read_text())
                results.setdefault(result["lpg"], {}).setdefault(game, []).append(result)

    def mean(rows: list[dict], key: str) -> float:
        return statistics.fmean(row[key] for row in rows)

    def normalised_cell(rows: list[dict]) -> str:
        if not rows:
            return ""
        if mean(rows, "a2c_return") <= mean(rows, "random_return"):
            return f"— (A2C ≤ random; return {mean(rows, 'lpg_return'):.2f})"
        values = ", ".join(f"{row['normalised_return']:.2f}" for row in rows)
        return f"{mean(rows, 'normalised_return'):.3f} ({values}; return {mean(rows, 'lpg_return'):.2f})"

    names = sorted(results, key=lambda name: (name == "untrained LPG", not name.startswith("uniform"), name))
    for name in names:
        lines.append(
            f"| {name} | " + " | ".join(normalised_cell(results[name].get(game, [])) for game in args.minatar) + " |"
        )
    for key, label in (("a2c_return", "A2C (return)"), ("random_return", "random (return)")):
        cells = []
        for game in args.minatar:
            rows = next((by_game[game] for by_game in results.values() if game in by_game), [])
            cells.append(f"{mean(rows, key):.2f}" if rows else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(args: Args) -> None:
    torch.set_num_threads(1)
    if args.budget not in BUDGETS:
        raise ValueError(f"unknown budget {args.budget!r}; choose one of {', '.join(BUDGETS)}")
    budget = BUDGETS[args.budget]
    args.output.mkdir(parents=True, exist_ok=True)
    if args.minatar:
        minatar_meta_tests(args, budget)
        return
    if args.summary_only:
        (args.output / f"groove_{args.budget}.md").write_text(summarise(args, budget))
        return
    sets = test_sets(budget)
    refs = references(args, budget, sets)
    print("references", json.dumps(refs), flush=True)
    for seed in args.seeds:
        for curriculum in args.curricula:
            for rank_temperature in args.rank_temperatures if curriculum != "uniform" else (0.1,):
                label = run_label(curriculum, rank_temperature, args.meta_learning_rate)
                path = args.output / f"{args.budget}-{label}-s{seed}.json"
                if path.exists():
                    continue
                result = run(args, budget, curriculum, rank_temperature, seed, sets, refs)
                write_json(path, result)
                tests = {name: round(value["normalised_return"], 3) for name, value in result["meta_test"].items()}
                print(label, seed, tests, flush=True)
                (args.output / f"groove_{args.budget}.md").write_text(summarise(args, budget))


if __name__ == "__main__":
    main(tyro.cli(Args))
