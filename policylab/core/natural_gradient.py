"""Natural policy gradient steps: conjugate gradient on Fisher-vector products, scaled to a KL radius, with a
backtracking line search (Kakade 2001; Schulman et al. 2015's TRPO step).

Everything works on *blocks*: parameters whose leading dimension indexes independent policies (one per time step
of a finite-horizon task, as HNPG keeps them), each with its own loss, KL, conjugate gradient, step size and line
search, all computed at once. A single network is one block (pass `blocks=1`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

Losses = Callable[[], torch.Tensor]
"""A function returning one scalar per block (shape [blocks]) at the parameters' current values."""


def flatten_blocks(tensors: Sequence[torch.Tensor], blocks: int) -> torch.Tensor:
    """Tensors whose leading dimension is `blocks` (or any tensors, with `blocks=1`) as one [blocks, size] matrix."""
    return torch.cat([tensor.reshape(blocks, -1) for tensor in tensors], dim=1)


def unflatten_blocks(flat: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Inverse of `flatten_blocks`: split a [blocks, size] matrix into tensors shaped as `like`."""
    sizes = [tensor.numel() // flat.shape[0] for tensor in like]
    return [part.reshape(tensor.shape) for part, tensor in zip(flat.split(sizes, dim=1), like)]


def block_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-block inner products of two [blocks, size] matrices."""
    return (a * b).sum(dim=1)


def conjugate_gradient(
    matrix_vector_product: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    iterations: int = 10,
    residual_tolerance: float = 1e-10,
) -> torch.Tensor:
    """Solve A x = b for every block of b ([blocks, size]) by conjugate gradient, A symmetric positive definite per
    block and given as `matrix_vector_product` (a [blocks, size] -> [blocks, size] map). A block whose residual
    vanishes stops moving; the loop stops when all have."""
    x = torch.zeros_like(b)
    residual = b.clone()
    direction = b.clone()
    residual_norm = block_dot(residual, residual)
    for _ in range(iterations):
        product = matrix_vector_product(direction)
        curvature = block_dot(direction, product)
        alpha = torch.where(curvature > 0, residual_norm / curvature.clamp_min(1e-30), torch.zeros_like(curvature))
        x += alpha[:, None] * direction
        residual -= alpha[:, None] * product
        new_residual_norm = block_dot(residual, residual)
        beta = torch.where(residual_norm > 0, new_residual_norm / residual_norm.clamp_min(1e-30), 0.0)
        direction = residual + beta[:, None] * direction
        residual_norm = new_residual_norm
        if bool((residual_norm < residual_tolerance).all()):
            break
    return x


def fisher_vector_product(
    kl: Losses, parameters: Sequence[torch.Tensor], blocks: int, damping: float = 0.0
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The map v -> (F + damping·I) v per block, F the Hessian of the mean KL(π_old ‖ π) at π = π_old, which is
    the Fisher information of the policy. `kl()` must return each block's KL with π_old detached."""
    gradients = torch.autograd.grad(kl().sum(), parameters, create_graph=True)
    flat_gradients = flatten_blocks(gradients, blocks)

    def product(vector: torch.Tensor) -> torch.Tensor:
        second = torch.autograd.grad((flat_gradients * vector).sum(), parameters, retain_graph=True)
        return flatten_blocks(second, blocks) + damping * vector

    return product


def natural_gradient_step(
    parameters: Sequence[torch.Tensor],
    blocks: int,
    loss: Losses,
    kl: Losses,
    max_kl: float = 0.01,
    damping: float = 0.1,
    cg_iterations: int = 10,
    backtracks: int = 10,
    accept_ratio: float = 0.1,
) -> dict[str, torch.Tensor]:
    """One TRPO-style natural gradient step per block, in place: direction s = F⁻¹(−∇loss) by conjugate
    gradient, scaled so that ½ sᵀF s = `max_kl`, then halved until the loss falls by at least `accept_ratio` of
    its first-order prediction (at most `backtracks` tries; a block that never passes keeps its parameters).
    Returns per-block tensors: the loss before and after, the accepted step fraction (0 where rejected)."""
    with torch.no_grad():
        old = flatten_blocks(parameters, blocks).clone()
    loss_before = loss()
    gradient = flatten_blocks(torch.autograd.grad(loss_before.sum(), parameters), blocks)
    loss_before = loss_before.detach()
    fisher = fisher_vector_product(kl, parameters, blocks, damping)
    direction = conjugate_gradient(fisher, -gradient, cg_iterations)
    half_curvature = 0.5 * block_dot(direction, fisher(direction))
    with torch.no_grad():
        scale = torch.where(half_curvature > 0, torch.sqrt(max_kl / half_curvature.clamp_min(1e-30)), 0.0)
        full_step = direction * scale[:, None]
        expected_improvement = block_dot(-gradient, full_step)
        accepted = torch.zeros(blocks, dtype=torch.bool, device=old.device)
        fraction = torch.ones(blocks, device=old.device)
        loss_after = loss_before.clone()
        for _ in range(backtracks):
            _assign(parameters, old + fraction[:, None] * full_step)
            trial = loss()
            improvement = loss_before - trial
            passes = (improvement > 0) & (improvement > accept_ratio * expected_improvement * fraction) & ~accepted
            loss_after = torch.where(passes, trial, loss_after)
            accepted |= passes
            if bool(accepted.all()):
                break
            fraction = torch.where(accepted, fraction, fraction / 2)
        fraction = torch.where(accepted, fraction, 0.0)
        _assign(parameters, old + fraction[:, None] * full_step)
    return {"loss_before": loss_before, "loss_after": loss_after, "step_fraction": fraction}


def _assign(parameters: Sequence[torch.Tensor], flat: torch.Tensor) -> None:
    for parameter, value in zip(parameters, unflatten_blocks(flat, parameters)):
        parameter.copy_(value)
