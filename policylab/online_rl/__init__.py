"""Online reinforcement learning: SAC, PPO and NPG baselines and the methods built on them."""

from policylab.online_rl.hnpg import HNPG, HNPGConfig
from policylab.online_rl.npg import NPG, NPGConfig
from policylab.online_rl.pmoe import PMOEPPO, PMOESAC, PMOEPPOConfig, PMOESACConfig
from policylab.online_rl.ppo import PPO, PPOConfig
from policylab.online_rl.props import PROPS, PPOBuffer, PPOBufferConfig, PROPSConfig
from policylab.online_rl.sac import SAC, SACConfig

__all__ = [
    "HNPG",
    "HNPGConfig",
    "NPG",
    "NPGConfig",
    "PMOEPPO",
    "PMOEPPOConfig",
    "PMOESAC",
    "PMOESACConfig",
    "PPO",
    "PPOBuffer",
    "PPOBufferConfig",
    "PPOConfig",
    "PROPS",
    "PROPSConfig",
    "SAC",
    "SACConfig",
]
