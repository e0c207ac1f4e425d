"""Online reinforcement learning: SAC and PPO baselines and the methods built on them."""

from policylab.online_rl.pmoe import PMOEPPO, PMOESAC, PMOEPPOConfig, PMOESACConfig
from policylab.online_rl.ppo import PPO, PPOConfig
from policylab.online_rl.props import PROPS, PPOBuffer, PPOBufferConfig, PROPSConfig
from policylab.online_rl.sac import SAC, SACConfig

__all__ = [
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
