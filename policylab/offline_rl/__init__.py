"""Offline reinforcement learning: agents trained from fixed datasets."""

from policylab.offline_rl.td3bc import TD3BC, TD3BCConfig

__all__ = ["TD3BC", "TD3BCConfig"]
