"""The shared core: agent contract, data, buffers, networks, environments, evaluation and logging."""
