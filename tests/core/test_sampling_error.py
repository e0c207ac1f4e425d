import torch

from policylab.core.sampling_error import sampling_error
from policylab.online_rl.ppo import GaussianPolicy


def test_sampling_error_is_small_for_on_policy_data_and_grows_with_a_mismatch():
    torch.manual_seed(0)
    policy = GaussianPolicy(observation_dim=3, action_dim=2, hidden_sizes=(16, 16))
    observations = torch.randn(2048, 3)
    with torch.no_grad():
        on_policy = policy.distribution(observations).sample()
    shifted = on_policy + 0.5  # as if the data over-sampled actions above the policy's mean
    before = [parameter.clone() for parameter in policy.parameters()]
    rng_state = torch.get_rng_state()

    on_policy_error = sampling_error(policy, observations, on_policy)
    small_sample_error = sampling_error(policy, observations[:256], on_policy[:256])
    shifted_error = sampling_error(policy, observations, shifted)

    assert 0.0 <= on_policy_error < 0.01
    assert small_sample_error > 2 * on_policy_error  # fewer samples, further from the policy
    assert shifted_error > 0.15  # the empirical policy follows the shift (KL 0.25 once fully fitted)
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))  # the policy is left as it was
    assert torch.equal(torch.get_rng_state(), rng_state)  # and the global random stream untouched
