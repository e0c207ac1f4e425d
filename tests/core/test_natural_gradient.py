"""Conjugate gradient, Fisher-vector products and the KL-scaled natural gradient step, against explicit matrices."""

import torch
from torch.distributions import Normal, kl_divergence

from policylab.core.natural_gradient import conjugate_gradient, fisher_vector_product, natural_gradient_step
from policylab.online_rl.npg import StepwiseGaussianPolicy


def spd_matrices(blocks: int, size: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    factors = torch.randn(blocks, size, size, generator=generator, dtype=torch.float64)
    return factors @ factors.transpose(1, 2) + 0.5 * torch.eye(size, dtype=torch.float64)


def test_conjugate_gradient_solves_small_spd_systems_block_by_block():
    matrices = spd_matrices(blocks=3, size=6)
    b = torch.randn(3, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    b[2] = 0.0  # a block with nothing to solve stays at zero
    solution = conjugate_gradient(lambda v: (matrices @ v[..., None]).squeeze(-1), b, iterations=6)
    torch.testing.assert_close(solution, torch.linalg.solve(matrices, b), rtol=1e-8, atol=1e-8)
    assert not solution[2].any()


def tiny_policy() -> tuple[StepwiseGaussianPolicy, torch.Tensor]:
    torch.manual_seed(0)
    policy = StepwiseGaussianPolicy(observation_dim=3, action_dim=2, num_steps=2, hidden_sizes=(4,)).double()
    with torch.no_grad():  # move away from the small initial outputs and unit std, so every term matters
        policy.mean.layers[-1].weight.normal_()
        policy.log_std.copy_(torch.tensor([[[0.3, -0.5]], [[-0.2, 0.1]]]))
    observations = torch.randn(2, 5, 3, dtype=torch.float64)  # 5 states for each of the 2 time steps
    return policy, observations


def explicit_fisher(policy: StepwiseGaussianPolicy, observations: torch.Tensor, step: int) -> torch.Tensor:
    """F = E_s[J_μᵀ Σ⁻¹ J_μ] + 2 J_logσᵀ J_logσ for one time step's policy, its parameters flattened in order."""
    parameters = [parameter[step].detach() for parameter in policy.parameters()]
    sizes = [parameter.numel() for parameter in parameters]

    def outputs(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_std, w1, b1, w2, b2 = (part.reshape(p.shape) for part, p in zip(flat.split(sizes), parameters))
        mean = torch.tanh(observations[step] @ w1 + b1) @ w2 + b2
        return mean, log_std.reshape(-1)

    flat = torch.cat([parameter.reshape(-1) for parameter in parameters])
    mean_jacobian, log_std_jacobian = torch.autograd.functional.jacobian(outputs, flat)
    inverse_variance = torch.exp(-2 * outputs(flat)[1])
    mean_term = torch.einsum("bap,a,baq->pq", mean_jacobian, inverse_variance, mean_jacobian) / len(mean_jacobian)
    return mean_term + 2 * log_std_jacobian.T @ log_std_jacobian


def test_fisher_vector_product_equals_the_explicit_fisher_matrix_of_a_tiny_policy():
    policy, observations = tiny_policy()
    parameters = list(policy.parameters())
    assert [tuple(p.shape) for p in parameters] == [(2, 1, 2), (2, 3, 4), (2, 1, 4), (2, 4, 2), (2, 1, 2)]
    with torch.no_grad():
        old_mean, old_log_std = policy(observations)

    def kl() -> torch.Tensor:  # per time step, with the closed form of torch.distributions
        mean, log_std = policy(observations)
        divergence = kl_divergence(Normal(old_mean, old_log_std.exp()), Normal(mean, log_std.exp()))
        return divergence.sum(-1).mean(-1)

    damping = 0.1
    product = fisher_vector_product(kl, parameters, blocks=2, damping=damping)
    vectors = torch.randn(2, 28, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    expected = (
        torch.stack([explicit_fisher(policy, observations, step) @ vectors[step] for step in range(2)])
        + damping * vectors
    )
    torch.testing.assert_close(product(vectors), expected, rtol=1e-10, atol=1e-10)


def test_natural_gradient_step_lowers_the_loss_within_the_kl_radius():
    policy, observations = tiny_policy()
    parameters = list(policy.parameters())
    advantages = torch.randn(2, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        old_mean, old_log_std = policy(observations)
        actions = old_mean + old_log_std.exp() * torch.randn_like(old_mean)
    old = Normal(old_mean, old_log_std.exp())

    def loss() -> torch.Tensor:
        mean, log_std = policy(observations)
        ratio = (Normal(mean, log_std.exp()).log_prob(actions) - old.log_prob(actions)).sum(-1).exp()
        return (-advantages * ratio).mean(-1)

    def kl() -> torch.Tensor:
        mean, log_std = policy(observations)
        return kl_divergence(old, Normal(mean, log_std.exp())).sum(-1).mean(-1)

    result = natural_gradient_step(parameters, 2, loss, kl, max_kl=0.01, damping=0.0, cg_iterations=50)
    assert (result["step_fraction"] > 0).all()
    assert (result["loss_after"] < result["loss_before"]).all()
    with torch.no_grad():
        torch.testing.assert_close(loss(), result["loss_after"])
        assert (kl() < 0.015).all() and (kl() > 0.001).all()  # ½ sᵀFs = 0.01 to second order
