"""Offline reinforcement learning: agents trained from fixed datasets."""

from policylab.offline_rl import tsddr
from policylab.offline_rl.a2pr import A2PR, A2PRConfig
from policylab.offline_rl.iql import IQL, IQLConfig
from policylab.offline_rl.odice import ODICE, ODICEConfig
from policylab.offline_rl.pgd import PGD, PGDConfig
from policylab.offline_rl.prdc import PRDC, PRDCConfig
from policylab.offline_rl.td3bc import TD3BC, TD3BCConfig

__all__ = [
    "A2PR",
    "A2PRConfig",
    "IQL",
    "IQLConfig",
    "ODICE",
    "ODICEConfig",
    "PGD",
    "PGDConfig",
    "PRDC",
    "PRDCConfig",
    "TD3BC",
    "TD3BCConfig",
    "tsddr",
]
