"""Evolution of policy weights: the Deep GA, with seed-chain genomes and local or Ray evaluation back-ends."""

from policylab.evolution.backends import LocalEvaluator, RayEvaluator, make_evaluator
from policylab.evolution.ga import GA, GAConfig
from policylab.evolution.genomes import Genome, GenomeDecoder
from policylab.evolution.novelty import NoveltyArchive
from policylab.evolution.policy import EvolvedPolicy, EvolvedPolicyConfig
from policylab.evolution.tasks import Evaluations, FunctionTask, PolicyTask

__all__ = [
    "GA",
    "EvolvedPolicy",
    "EvolvedPolicyConfig",
    "Evaluations",
    "FunctionTask",
    "GAConfig",
    "Genome",
    "GenomeDecoder",
    "LocalEvaluator",
    "NoveltyArchive",
    "PolicyTask",
    "RayEvaluator",
    "make_evaluator",
]
