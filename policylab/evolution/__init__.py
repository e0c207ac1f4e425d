"""Evolution of policy weights: the Deep GA, with seed-chain genomes and local or Ray evaluation back-ends, and
quality-diversity methods (MAP-Elites, PGA-MAP-Elites, DCG-MAP-Elites) with their archives, emitters and tasks,
and GROOVE (a learned policy gradient meta-trained on a grid-world level curriculum, meta-tested on held-out
levels and MinAtar)."""

from policylab.evolution.archives import Archive, CVTArchive, GridArchive
from policylab.evolution.backends import LocalEvaluator, RayEvaluator, make_evaluator
from policylab.evolution.dcg_map_elites import DCGConfig, DescriptorConditionedEmitter, evaluate_distilled_actor
from policylab.evolution.emitters import Emitter, IsoLineEmitter, Offspring
from policylab.evolution.ga import GA, GAConfig
from policylab.evolution.genomes import Genome, GenomeDecoder
from policylab.evolution.groove import (
    GROOVE,
    GROOVEConfig,
    LevelBuffer,
    LPGNetwork,
    MinAtarConfig,
    load_lpg,
    meta_test,
    meta_test_minatar,
)
from policylab.evolution.map_elites import MAPElites, MAPElitesConfig, make_qd_method, random_search
from policylab.evolution.novelty import NoveltyArchive
from policylab.evolution.pga_map_elites import PGAConfig, PolicyGradientEmitter
from policylab.evolution.policy import EvolvedPolicy, EvolvedPolicyConfig
from policylab.evolution.qd_tasks import QD_TASKS, PlanarArmTask, QDPolicyTask, make_qd_task
from policylab.evolution.tasks import Evaluations, FunctionTask, PolicyTask

__all__ = [
    "GA",
    "GROOVE",
    "QD_TASKS",
    "Archive",
    "CVTArchive",
    "DCGConfig",
    "DescriptorConditionedEmitter",
    "Emitter",
    "EvolvedPolicy",
    "EvolvedPolicyConfig",
    "Evaluations",
    "FunctionTask",
    "GAConfig",
    "GROOVEConfig",
    "Genome",
    "GenomeDecoder",
    "GridArchive",
    "IsoLineEmitter",
    "LPGNetwork",
    "LevelBuffer",
    "LocalEvaluator",
    "MAPElites",
    "MAPElitesConfig",
    "MinAtarConfig",
    "NoveltyArchive",
    "Offspring",
    "PGAConfig",
    "PlanarArmTask",
    "PolicyGradientEmitter",
    "PolicyTask",
    "QDPolicyTask",
    "RayEvaluator",
    "evaluate_distilled_actor",
    "load_lpg",
    "make_evaluator",
    "make_qd_method",
    "make_qd_task",
    "meta_test",
    "meta_test_minatar",
    "random_search",
]
