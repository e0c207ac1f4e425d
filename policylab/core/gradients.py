"""Gradient surgery shared by methods that combine two gradients of the same parameters."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def orthogonal_gradient(
    forward: torch.Tensor | Sequence[torch.Tensor], backward: torch.Tensor | Sequence[torch.Tensor], eps: float = 1e-10
) -> torch.Tensor | list[torch.Tensor]:
    """g_f + (g_b − c·g_f) with c = (g_f·g_b) / max(g_f·g_f, eps): the backward gradient projected onto the plane
    normal to the forward gradient, added to the forward gradient (O-DICE's orthogonal-gradient update).

    The gradients are a flat vector each, or one tensor per parameter; then the dot products run over all of them
    flattened together, and the result has the same shapes. `eps` keeps c finite when g_f vanishes."""
    if isinstance(forward, torch.Tensor):
        return orthogonal_gradient([forward], [backward], eps)[0]
    forward_flat = torch.cat([gradient.reshape(-1) for gradient in forward])
    backward_flat = torch.cat([gradient.reshape(-1) for gradient in backward])
    if forward_flat.shape != backward_flat.shape:
        raise ValueError(
            f"forward and backward gradients have {forward_flat.numel()} and {backward_flat.numel()} entries: "
            "pass gradients of the same parameters"
        )
    parallel = torch.dot(forward_flat, backward_flat) / torch.dot(forward_flat, forward_flat).clamp(min=eps)
    combined = backward_flat + (1.0 - parallel) * forward_flat
    return [part.view_as(gradient) for part, gradient in zip(combined.split([g.numel() for g in forward]), forward)]
