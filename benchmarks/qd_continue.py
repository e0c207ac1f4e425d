"""Continue finished `qd_suite.py --budget reduced` runs to more iterations, in copies of their run directories, and
count each emitter's offspring that became elites over the added iterations (ga_added, pg_added, actor_added).

It answers why DCG-ME and PGA-ME rank as they do at a small budget: whether the policy-gradient and
actor-injection offspring are succeeding yet.

    python benchmarks/qd_continue.py --seed 0 --iterations 30   # writes results/qd_suite/walker2d_uni_continued_s0.json
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil

import torch
import tyro
from qd_suite import REDUCED, RESULTS, method_configs

from policylab.evolution import QDPolicyTask, evaluate_distilled_actor, make_qd_method


@dataclasses.dataclass
class Args:
    task: str = "walker2d_uni"
    methods: tuple[str, ...] = ("pga-me", "dcg-me")
    seed: int = 0
    iterations: int = 30
    """iterations in total after continuing (the reduced budget's runs stop at 15)"""
    run_root: pathlib.Path = RESULTS.parent / "work" / "qd_suite"
    """where qd_suite.py left its run directories"""
    copies: pathlib.Path = RESULTS.parent / "work" / "qd_continue"
    output: pathlib.Path = RESULTS


def main(args: Args) -> None:
    torch.set_num_threads(1)
    summary = {}
    for method in args.methods:
        name = f"{args.task}-{method}-s{args.seed}"
        copy = args.copies / name
        if not copy.exists():
            shutil.copytree(args.run_root / name, copy)
        task = QDPolicyTask(args.task, REDUCED.hidden_sizes, episode_length=REDUCED.episode_length, threads=1)
        config, emitter_config = method_configs(method, REDUCED, args.seed)
        me = make_qd_method(method, task, config, emitter_config, workers=1)
        me.run(args.iterations, copy, resume=True, progress=False, checkpoint_every=5)
        added_rows = me.history[REDUCED.iterations :]
        counts = ("added", "ga_added", "pg_added", "actor_added")
        result = {key: sum(row.get(key, 0) for row in added_rows) for key in counts}
        result |= {
            "qd_score": me.archive.qd_score(me.qd_offset),
            "coverage": me.archive.coverage(),
            "max_fitness": me.archive.max_fitness(),
            "evaluations": me.evaluations,
            "qd_score_curve": [(row["evaluations"], row["qd_score"]) for row in me.history],
        }
        if method == "dcg-me":
            result |= evaluate_distilled_actor(me.emitters[-1], me.archive, me.qd_offset, seed=args.seed + 10_000)
        summary[method] = result
        print(method, {key: value for key, value in result.items() if key != "qd_score_curve"}, flush=True)
    path = args.output / f"{args.task}_continued_s{args.seed}.json"
    path.write_text(json.dumps({"budget": dataclasses.asdict(REDUCED), "iterations": args.iterations} | summary))


if __name__ == "__main__":
    main(tyro.cli(Args))
