import math

import pytest
import torch

from hypernoise.errors import ConfigError
from hypernoise.lipschitz import spectral_norm, theorem1_bound
from hypernoise.objective import NoiseObjective, ObjectiveConfig, jacobian, logdet_term, reference_alpha


def test_l2_objective_is_half_squared_norm_minus_reward_over_alpha():
    noise = torch.randn(3, 2, 4)
    delta = torch.randn(3, 2, 4)
    reward = torch.randn(3)
    out = NoiseObjective(ObjectiveConfig("l2", alpha=0.5))(noise, delta, reward)
    expected = (0.5 * delta.flatten(1).pow(2).sum(1) - reward / 0.5).mean()
    torch.testing.assert_close(out["loss"], expected)


def test_reference_convention_equals_l2_at_converted_alpha_up_to_a_scale():
    d = 2 * 4
    delta = torch.randn(5, 2, 4, requires_grad=True)
    reward = (delta.flatten(1) ** 3).sum(1)  # any differentiable reward of delta
    ref = NoiseObjective(ObjectiveConfig("reference", reg_weight=0.5))(None, delta, reward)["loss"]
    (g_ref,) = torch.autograd.grad(ref, delta, retain_graph=True)
    alpha = reference_alpha(0.5, d)
    assert alpha == pytest.approx(1 / d)
    l2 = NoiseObjective(ObjectiveConfig("l2", alpha=alpha))(None, delta, reward)["loss"]
    (g_l2,) = torch.autograd.grad(l2, delta)
    torch.testing.assert_close(g_ref, g_l2 * (2 * 0.5 / d))


def test_jacobian_and_logdet_term_of_a_linear_map():
    a = torch.tensor([[0.3, -0.2], [0.1, 0.4]])
    x = torch.randn(6, 2, requires_grad=True)
    delta = x @ a.T
    jac = jacobian(delta, x)
    torch.testing.assert_close(jac, a.expand(6, 2, 2))
    expected = a.trace() - torch.logdet(torch.eye(2) + a)
    torch.testing.assert_close(logdet_term(jac), expected.expand(6))


def test_exact_objective_adds_the_logdet_term_and_is_differentiable():
    lin = torch.nn.Linear(2, 2)
    x = torch.randn(4, 2, requires_grad=True)
    delta = lin(x)
    reward = torch.zeros(4)
    out = NoiseObjective(ObjectiveConfig("exact"))(x, delta, reward)
    ld = lin.weight.trace() - torch.logdet(torch.eye(2) + lin.weight)
    torch.testing.assert_close(out["logdet"], ld)
    torch.testing.assert_close(out["loss"], (0.5 * delta.pow(2).sum(1)).mean() + ld)
    out["loss"].backward()
    assert lin.weight.grad.abs().sum() > 0


def test_exact_objective_refuses_high_dimensional_noise():
    x = torch.randn(1, 100, requires_grad=True)
    with pytest.raises(ConfigError, match="use l2"):
        NoiseObjective(ObjectiveConfig("exact"))(x, x * 0.1, torch.zeros(1))


def test_alpha_schedule_holds_ramps_geometrically_and_holds():
    cfg = ObjectiveConfig("l2", alpha=1.0, alpha_start=0.01, alpha_ramp=(10, 30))
    assert [cfg.alpha_at(s) for s in (0, 10)] == [0.01, 0.01]
    assert cfg.alpha_at(20) == pytest.approx(0.1)  # halfway in log space
    assert [cfg.alpha_at(s) for s in (30, 1000)] == [1.0, 1.0]
    assert ObjectiveConfig("l2", alpha=0.5).alpha_at(0) == 0.5  # no schedule: constant


def test_objective_uses_the_alpha_of_its_step():
    delta, reward = torch.zeros(2, 3), torch.ones(2)
    objective = NoiseObjective(ObjectiveConfig("l2", alpha=1.0, alpha_start=0.1, alpha_ramp=(0, 4)))
    assert float(objective(None, delta, reward)["loss"]) == pytest.approx(-10.0)
    objective.step = 4
    out = objective(None, delta, reward)
    assert float(out["loss"]) == pytest.approx(-1.0) and float(out["alpha"]) == pytest.approx(1.0)


@pytest.mark.parametrize("kwargs", [{"kind": "kl"}, {"alpha": 0.0}, {"alpha": -1.0}, {"reg_weight": -1},
                                    {"alpha_start": 0.0}, {"alpha_start": 0.1, "alpha_ramp": (5, 2)},
                                    {"alpha_start": 0.1, "alpha_ramp": (-1, 2)}])
def test_objective_config_validates(kwargs):
    with pytest.raises(ConfigError):
        ObjectiveConfig(**kwargs)


def test_spectral_norm_matches_the_largest_singular_value_per_sample():
    torch.manual_seed(0)
    mats = torch.randn(3, 5, 5)
    x = torch.randn(3, 5)
    sigma = spectral_norm(lambda v: torch.einsum("bij,bj->bi", mats, v), x, iters=60)
    torch.testing.assert_close(sigma, torch.linalg.matrix_norm(mats, ord=2), rtol=1e-3, atol=1e-4)


def test_theorem1_bound_holds_for_contractions_and_is_infinite_beyond():
    torch.manual_seed(1)
    for _ in range(20):
        a = torch.randn(4, 4, dtype=torch.float64)
        a = 0.9 * a / torch.linalg.matrix_norm(a, ord=2) * torch.rand(()).item()
        lip = float(torch.linalg.matrix_norm(a, ord=2))
        dropped = float(a.trace() - torch.linalg.slogdet(torch.eye(4, dtype=torch.float64) + a)[1])
        assert abs(dropped) <= theorem1_bound(lip, 4) + 1e-12
    assert theorem1_bound(1.0, 4) == math.inf
    assert theorem1_bound(0.1, 10) == pytest.approx(10 * (-math.log(0.9) - 0.1))
