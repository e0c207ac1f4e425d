"""N2N next to its simple baselines, on a classifier teacher and on a trained policy teacher.

    python benchmarks/n2n.py --case classifier     # the synthetic image task's CNN teacher
    python benchmarks/n2n.py --case policy         # the shipped Hopper-v5 expert SAC actor

Each case runs, in order: N2N (layer removal, then shrinkage); random search over N2N's action space until it
has trained as many distinct students as N2N did; and one uniformly narrower network with N2N's best size. All
students are distilled with the same settings. Every run has its own run directory (resumed if it exists) and
`results.json` is rewritten as each run finishes, so a killed benchmark loses at most the run in progress.
Searches select students by their score on held-out data (classifier: a validation set; policy: the search's
episodes), so the selected students are scored again at the end on data the selection never saw: classifier
students on a separate test set, policy students over `--final-episodes` episodes of unseen seeds, each next to
the teacher on the same data.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Annotated, Literal

import torch
import tyro

from policylab.compression import (
    N2N,
    Architecture,
    ClassifierTeacher,
    Layer,
    N2NConfig,
    PolicyTeacher,
    RandomSearch,
    plot_pareto,
    save_network,
    train_classifier,
    uniform_shrink,
)
from policylab.compression.datasets import image_data
from policylab.compression.n2n import train_student
from policylab.compression.teachers import accuracy, tensors_of
from policylab.core.evaluation import evaluate
from policylab.core.files import atomic_write

CLASSIFIER = Architecture(
    (3, 16, 16),
    (
        Layer("conv", 32, 3, 1, 1),
        Layer("conv", 64, 3, 2, 1),
        Layer("conv", 64, 3, 2, 1),
        Layer("linear", 128),
        Layer("linear", 10),
    ),
)


@dataclasses.dataclass
class Options:
    case: Literal["classifier", "policy"] = "classifier"
    """classifier: synthetic-image CNN teacher; policy: the shipped Hopper-v5 expert SAC actor"""
    output: Path = Path("benchmarks/results/n2n")
    """results go to <output>/<case>/"""
    train_samples: int = 10_000
    """classifier: training images (the teacher's and the distillation set)"""
    validation_samples: int = 2_000
    """classifier: validation images (the search's accuracy reward and selection)"""
    test_samples: int = 2_000
    """classifier: test images (the selected students' final accuracy)"""
    teacher_epochs: int = 10
    """classifier: the teacher's training epochs"""
    task: str = "Hopper-v5"
    """policy: the task whose shipped expert is the teacher"""
    num_states: int = 50_000
    """policy: distillation states from the teacher's noisy rollouts"""
    eval_episodes: int = 5
    """policy: episodes scoring each student in the search"""
    dagger_rounds: int = 0
    """policy: DAgger rounds of each student (its own rollouts labelled by the teacher)"""
    dagger_states: int = 10_000
    """policy: states each DAgger round collects"""
    final_episodes: int = 20
    """policy: episodes of the final comparison (seeds 1000 onwards)"""
    config: Annotated[N2NConfig, tyro.conf.arg(name="")] = dataclasses.field(
        default_factory=lambda: N2NConfig(distill_learning_rate=1e-3)
    )


def write_json(path: Path, data: dict) -> None:
    text = json.dumps(data, indent=2) + "\n"
    atomic_write(path, lambda file: file.write(text.encode()))


def classifier_teacher(options: Options, directory: Path, train, validation) -> ClassifierTeacher:
    path = directory / "teacher.pt"
    if path.exists():
        return ClassifierTeacher.from_file(path, train, validation)
    network = train_classifier(CLASSIFIER, train, options.teacher_epochs, seed=options.config.seed)
    save_network(path, CLASSIFIER, network)
    return ClassifierTeacher(CLASSIFIER, network, train, validation)


def policy_teacher(options: Options, directory: Path) -> PolicyTeacher:
    import policylab
    from policylab.core.data.behaviour import load_behaviour
    from policylab.online_rl import SAC

    path = directory / "teacher.pt"
    if not path.exists():  # the shipped expert (policylab SAC, 1M steps) as an ordinary saved SAC agent
        agent = SAC(options.task)
        agent.actor.load_state_dict(load_behaviour(options.task).actors["expert"].state_dict())
        agent.save(path)
    agent = policylab.load(path, device="cpu")
    return PolicyTeacher(
        agent,
        options.task,
        None,
        options.num_states,
        options.eval_episodes,
        options.config.seed,
        options.dagger_rounds,
        options.dagger_states,
    )


def matching_uniform_scale(architecture: Architecture, params: int) -> float:
    """The width scale whose uniformly narrower network has about `params` parameters (bisection)."""
    low, high = 0.0, 1.0
    for _ in range(40):
        middle = (low + high) / 2
        if uniform_shrink(architecture, middle).num_params > params:
            high = middle
        else:
            low = middle
    return low


def main(options: Options) -> None:
    torch.set_num_threads(1)
    directory = options.output / options.case
    directory.mkdir(parents=True, exist_ok=True)
    results_path = directory / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    started = time.perf_counter()
    if options.case == "classifier":
        sizes = (options.train_samples, options.validation_samples, options.test_samples)
        train, validation, test = image_data("synthetic", *sizes)
        teacher = classifier_teacher(options, directory, train, validation)
    else:
        teacher = policy_teacher(options, directory)
    config = options.config
    results["budget"] = dataclasses.asdict(options) | {"output": str(options.output)}
    results["teacher"] = {"params": teacher.architecture.num_params, teacher.score_name: teacher.score}
    results["teacher"]["architecture"] = teacher.architecture.describe()
    searches = {}
    for name, make in (
        ("n2n", lambda: N2N(teacher, config)),
        ("random", lambda: RandomSearch(teacher, results["n2n"]["students_trained"], config)),
    ):
        search = make()
        run_dir = directory / name
        summary = search.run(run_dir, resume=(run_dir / "checkpoint.pt").exists())
        searches[name] = search
        results[name] = summary | {"seconds_total_so_far": time.perf_counter() - started}
        smallest = smallest_meeting_target(search, teacher)
        results[name]["smallest_meeting_target"] = smallest[1] if smallest else None
        write_json(results_path, results)
    best = searches["n2n"].best_architecture()
    scale = matching_uniform_scale(teacher.architecture, best.num_params)
    uniform = uniform_shrink(teacher.architecture, scale)
    score, weights = train_student(teacher, uniform, config)
    results["uniform"] = {
        "scale": scale,
        "architecture": uniform.describe(),
        "params": uniform.num_params,
        teacher.score_name: score,
        "retained": teacher.retained(score),
        "compression": teacher.architecture.num_params / uniform.num_params,
    }
    uniform_network = uniform.build()
    uniform_network.load_state_dict(weights)
    if options.case == "policy":
        results["final"] = final_returns(teacher, searches, uniform, uniform_network, options)
    else:
        results["final"] = final_accuracies(teacher, searches, uniform_network, options.config, test)
    results["seconds"] = time.perf_counter() - started
    write_json(results_path, results)
    references = {
        "random search best": (results["random"]["best_params"], results["random"][f"best_{teacher.score_name}"]),
        "uniform shrink": (uniform.num_params, score),
    }
    plot_pareto(
        searches["n2n"].candidates,
        teacher,
        directory / "pareto.png",
        f"N2N's candidates and the baselines ({options.case})",
        references,
    )
    print(json.dumps(results, indent=2))


def smallest_meeting_target(search, teacher) -> tuple[Architecture, dict] | None:
    """The smallest student of a search that meets the issue's target as the search scored it: at most 2 points of
    accuracy lost (classifier, on the validation set) or at least 95% of the teacher's return kept (policy, over
    the search's episodes); its architecture and a summary."""
    if teacher.kind == "classifier":
        meets = [(a, result) for a, result in search.trained() if result["score"] >= teacher.score - 0.02]
    else:
        meets = [(a, result) for a, result in search.trained() if result["retained"] >= 0.95]
    if not meets:
        return None
    architecture, result = min(meets, key=lambda pair: pair[0].num_params)
    summary = {"architecture": architecture.describe(), "params": architecture.num_params, **result}
    return architecture, summary | {"compression": teacher.architecture.num_params / architecture.num_params}


def final_accuracies(teacher, searches, uniform_network, config: N2NConfig, test) -> dict:
    """Test-set accuracies of the teacher and of every selected student (each search's best reward and its
    smallest student within 2 points on the validation set, re-distilled with its own seed)."""
    test_inputs, test_labels = tensors_of(test)
    networks = {"teacher": teacher.network, "uniform": uniform_network}
    for name, search in searches.items():
        networks[name] = search.best_network()
        smallest = smallest_meeting_target(search, teacher)
        if smallest is not None:
            _, weights = train_student(teacher, smallest[0], config)
            networks[f"{name}_smallest_meeting_target"] = smallest[0].build()
            networks[f"{name}_smallest_meeting_target"].load_state_dict(weights)
    final = {name: {"test_accuracy": accuracy(network, test_inputs, test_labels)} for name, network in networks.items()}
    for name in final:
        final[name]["test_points_lost"] = 100 * (final["teacher"]["test_accuracy"] - final[name]["test_accuracy"])
    return final


def final_returns(teacher, searches, uniform, uniform_network, options: Options) -> dict:
    """Returns of the teacher and each method's student over `final_episodes` episodes of fresh seeds."""
    networks = {"teacher": teacher.network, "uniform": uniform_network}
    networks |= {name: search.best_network() for name, search in searches.items()}
    final = {}
    for name, network in networks.items():
        result = evaluate(teacher.policy(network), options.task, episodes=options.final_episodes, seed=1000)
        final[name] = {"return_mean": result.return_mean, "return_std": result.return_std}
    for name in final:
        final[name]["fraction_of_teacher"] = final[name]["return_mean"] / final["teacher"]["return_mean"]
    return final


if __name__ == "__main__":
    main(tyro.cli(Options))
