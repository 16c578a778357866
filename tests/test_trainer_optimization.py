"""Tests of the trainer's optimisers, learning-rate schedules, parameter groups and steps.

Each schedule's rates at hand-computed steps; one optimiser step of each kind against its
formula; gradient accumulation against one big batch; clipping, the gradient norm and the
non-finite stop; the weight average against a float64 hand computation; checkpoint
retention. No training run: tiny modules and tensors only (tests/test_trainer_runs.py trains).
"""

from __future__ import annotations

import math

import pytest
import torch

from speechbed.training.checkpoints import RetentionPolicy, best_epochs
from speechbed.training.config import TrainingConfig
from speechbed.training.ema import WeightAverage
from speechbed.training.optimization import (
    GradientStep,
    NonFiniteGradients,
    make_optimizer,
    parameter_groups,
)
from speechbed.training.schedules import WarmupHoldDecay, make_schedule


def rates_over_steps(config: TrainingConfig, steps: int, steps_per_epoch: int = 5) -> list:
    """The rates of groups 0 (factor 1) and 1 (factor 0.1) before each of ``steps`` steps."""
    model = torch.nn.Linear(2, 1)
    groups = [{"params": [model.weight]}, {"params": [model.bias], "lr_factor": 0.1}]
    optimizer = make_optimizer(config, model, groups)
    schedule = make_schedule(config, optimizer, steps_per_epoch=steps_per_epoch)
    rates = []
    for _ in range(steps):
        rates.append(tuple(group["lr"] for group in optimizer.param_groups))
        optimizer.step()
        schedule.after_step()
    return rates


def test_warmup_hold_decay_at_hand_computed_steps():
    # peak 1e-2, min 1e-4, warmup 4 steps, hold 2, half-life 3:
    # warmup: 1e-4 + (1e-2 - 1e-4) * s / 4; hold at steps 4, 5 (and 6, where the decay starts
    # at 0 steps); then 1e-2 * 0.5 ** ((s - 6) / 3), floored at 1e-4 from step 6 + 3 * 7 = 27
    config = TrainingConfig(
        lr_schedule="warmup_hold_decay",
        log10_learning_rate=-2,
        min_lr=1e-4,
        warmup_steps=4,
        hold_steps=2,
        half_life_steps=3,
        num_epochs=6,
    )
    expected = {
        0: 1e-4,
        1: 0.002575,
        2: 0.00505,
        3: 0.007525,
        4: 0.01,
        5: 0.01,
        6: 0.01,
        7: 0.01 * 2 ** (-1 / 3),
        9: 0.005,
        12: 0.0025,
        24: 0.01 / 64,
        27: 1e-4,
        29: 1e-4,
    }
    rates = rates_over_steps(config, 30)
    for step, rate in expected.items():
        assert rates[step][0] == pytest.approx(rate, rel=1e-12), step
        # the joint network's output layer, say: a tenth of every rate, floor included
        assert rates[step][1] == pytest.approx(rate * 0.1, rel=1e-12), step
    shape = WarmupHoldDecay(1e-2, 1e-4, 4, 2, 3)
    assert [shape.learning_rate(step) for step in range(30)] == pytest.approx(
        [rate for rate, _ in rates], rel=1e-12
    )


def test_cosine_with_warmup_at_hand_computed_steps():
    # 2 epochs x 5 steps; warmup 2 from 1e-4; then cos from 1e-2 at step 2 to 1e-4 at step 10
    config = TrainingConfig(
        lr_schedule="cosine", log10_learning_rate=-2, min_lr=1e-4, warmup_steps=2, num_epochs=2
    )
    rates = [rate for rate, _ in rates_over_steps(config, 10)]
    middle = 1e-4 + (1e-2 - 1e-4) * 0.5
    quarter = 1e-4 + (1e-2 - 1e-4) * 0.5 * (1 + math.cos(math.pi / 4))
    assert rates[0] == pytest.approx(1e-4)
    assert rates[1] == pytest.approx(middle)
    assert rates[2] == pytest.approx(1e-2)
    assert rates[4] == pytest.approx(quarter)
    assert rates[6] == pytest.approx(middle)
    assert rates[:3] == sorted(rates[:3]) and rates[2:] == sorted(rates[2:], reverse=True)
    assert rates[9] > 1e-4


def test_onecycle_rises_to_the_peak_and_ends_far_below_the_start():
    config = TrainingConfig(
        lr_schedule="onecycle", log10_learning_rate=-2, num_epochs=2, onecycle_pct_start=0.3
    )
    rates = [rate for rate, _ in rates_over_steps(config, 10)]
    assert rates[0] == pytest.approx(1e-2 / 25)
    assert max(rates) == pytest.approx(1e-2) and rates.index(max(rates)) == 2  # 0.3 * 10 - 1
    assert rates[-1] < 1e-2 / 25 / 100


def epoch_rates(config: TrainingConfig, epochs: int) -> list[float]:
    model = torch.nn.Linear(2, 1)
    optimizer = make_optimizer(config, model)
    schedule = make_schedule(config, optimizer, steps_per_epoch=3)
    rates = []
    for epoch in range(1, epochs + 1):
        rates.append(optimizer.param_groups[0]["lr"])
        for _ in range(3):
            optimizer.step()
            schedule.after_step()  # a per-epoch schedule ignores steps
        schedule.after_epoch(epoch, 0.5)
    return rates


@pytest.mark.parametrize(
    "settings, expected",
    [
        ({"lr_schedule": "step", "lr_step_epochs": 2, "lr_gamma": 0.5}, [1, 1, 0.5, 0.5, 0.25]),
        ({"lr_schedule": "multistep", "lr_milestones": [2, 4]}, [1, 1, 0.1, 0.1, 0.01]),
        ({"lr_schedule": "exponential", "lr_gamma": 0.5}, [1, 0.5, 0.25, 0.125, 0.0625]),
        # dev metric 0.5 every epoch: no improvement after epoch 1; patience 1 -> halve after
        # epoch 3, then the counter restarts: after epoch 5 again
        ({"lr_schedule": "plateau", "reduce_lr_patience": 1}, [1, 1, 1, 0.5, 0.5]),
        # the plateau schedule waits reduce_lr_burnin epochs
        ({"reduce_lr_patience": 1, "reduce_lr_burnin": 2}, [1, 1, 1, 1, 1]),
        ({"reduce_lr_factor": 1.0}, [1, 1, 1, 1, 1]),
    ],
)
def test_per_epoch_schedules(settings, expected):
    config = TrainingConfig(log10_learning_rate=-2, **settings)
    assert epoch_rates(config, 5) == pytest.approx([1e-2 * factor for factor in expected])


def test_schedule_state_resumes_the_same_rates():
    config = TrainingConfig(
        lr_schedule="warmup_hold_decay", warmup_steps=3, hold_steps=1, half_life_steps=2
    )
    model = torch.nn.Linear(2, 1)
    optimizer = make_optimizer(config, model)
    schedule = make_schedule(config, optimizer, steps_per_epoch=4)
    for _ in range(5):
        optimizer.step()
        schedule.after_step()
    state, optimizer_state = schedule.state_dict(), optimizer.state_dict()
    again = make_optimizer(config, torch.nn.Linear(2, 1))
    resumed = make_schedule(config, again, steps_per_epoch=4)
    again.load_state_dict(optimizer_state)
    resumed.load_state_dict(state)
    for _ in range(3):
        optimizer.step(), again.step()
        schedule.after_step(), resumed.after_step()
        assert again.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]


def test_optimizers_keep_their_old_meaning_and_add_the_new_ones():
    model = torch.nn.Linear(2, 1)
    sgd = make_optimizer(TrainingConfig(optimizer="sgd"), model)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9
    rms = make_optimizer(TrainingConfig(optimizer="rms"), model)
    assert isinstance(rms, torch.optim.RMSprop) and rms.defaults["momentum"] == 0.0
    assert rms.defaults == make_optimizer(TrainingConfig(optimizer="rmsprop"), model).defaults
    adam = make_optimizer(TrainingConfig(), model)
    assert type(adam) is torch.optim.Adam
    assert adam.defaults["betas"] == (0.9, 0.999) and adam.defaults["weight_decay"] == 0.0
    assert type(make_optimizer(TrainingConfig(optimizer="adamw"), model)) is torch.optim.AdamW
    lamb = make_optimizer(TrainingConfig(optimizer="lamb", weight_decay=0.01), model)
    assert type(lamb).__name__ == "Lamb" and lamb.defaults["weight_decay"] == 0.01


def one_step(config: TrainingConfig, gradient: float, weight: float = 2.0) -> float:
    parameter = torch.nn.Parameter(torch.tensor([weight], dtype=torch.float64))
    holder = torch.nn.Module()
    holder.parameter = parameter
    optimizer = make_optimizer(config, holder)
    parameter.grad = torch.tensor([gradient], dtype=torch.float64)
    optimizer.step()
    return float(parameter.detach())


def test_one_step_of_each_optimizer_against_its_formula():
    lr = 0.1
    # AdamW, zero gradient: only the decoupled decay moves the weight, w (1 - lr wd)
    adamw = TrainingConfig(optimizer="adamw", log10_learning_rate=-1, weight_decay=0.5)
    assert one_step(adamw, 0.0) == pytest.approx(2.0 * (1 - lr * 0.5), rel=1e-12)
    # Adam's first step moves by lr m/(sqrt(v) + eps) = lr g/(|g| + eps): about lr
    adam = TrainingConfig(log10_learning_rate=-1, optimizer_log10_epsilon=-1)
    assert one_step(adam, 0.3) == pytest.approx(2.0 - lr * 0.3 / (0.3 + 0.1), rel=1e-12)
    # Adam's weight decay is added to the gradient: g + wd w = 0 + 0.5 * 2 = 1
    adam_l2 = TrainingConfig(log10_learning_rate=-1, weight_decay=0.5, optimizer_log10_epsilon=-1)
    assert one_step(adam_l2, 0.0) == pytest.approx(2.0 - lr * 1.0 / 1.1, rel=1e-12)
    # SGD, first step: the buffer is g; Nesterov steps along g + m g
    sgd = TrainingConfig(optimizer="sgd", log10_learning_rate=-1, momentum=0.5, nesterov=True)
    assert one_step(sgd, 0.3) == pytest.approx(2.0 - lr * 0.3 * 1.5, rel=1e-12)
    plain = TrainingConfig(optimizer="sgd", log10_learning_rate=-1, momentum=0.0)
    assert one_step(plain, 0.3) == pytest.approx(2.0 - lr * 0.3, rel=1e-12)
    # RMSprop, first step: v = (1 - alpha) g^2, step lr g / (sqrt(v) + eps)
    rms = TrainingConfig(optimizer="rms", log10_learning_rate=-1, optimizer_log10_epsilon=-1)
    expected = 2.0 - lr * 0.3 / (math.sqrt(0.01 * 0.09) + 0.1)
    assert one_step(rms, 0.3) == pytest.approx(expected, rel=1e-12)


def test_lamb_moves_each_tensor_by_the_rate_times_its_norm():
    # LAMB (You et al.): a tensor moves by lr * |w| (the trust ratio |w| / |r|) along
    # r = m / (sqrt(v) + eps), whose direction on the first step is that of sign(g)
    weight = torch.nn.Parameter(torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64))
    holder = torch.nn.Module()
    holder.weight = weight
    optimizer = make_optimizer(TrainingConfig(optimizer="lamb", log10_learning_rate=-1), holder)
    for _ in range(3):
        before = weight.detach().clone()
        weight.grad = torch.tensor([0.3, 0.4, -0.2], dtype=torch.float64)
        optimizer.step()
        moved = weight.detach() - before
        assert float(moved.norm()) == pytest.approx(0.1 * float(before.norm()), rel=1e-5)
    first = torch.tensor([-1.0, -1.0, 1.0], dtype=torch.float64) / math.sqrt(3)
    assert torch.allclose(moved / moved.norm(), first, atol=1e-3)  # eps 1e-6 bends it a little


def test_settings_that_contradict_each_other_are_refused():
    with pytest.raises(ValueError, match="nesterov"):
        TrainingConfig(optimizer="sgd", momentum=0.0, nesterov=True)
    with pytest.raises(ValueError, match="lr_milestones"):
        TrainingConfig(lr_schedule="multistep", lr_milestones=[3, 2])
    with pytest.raises(ValueError, match="min_lr"):
        TrainingConfig(lr_schedule="warmup_hold_decay", log10_learning_rate=-3, min_lr=0.01)


def test_parameter_groups_must_cover_the_model_once():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    with pytest.raises(ValueError, match=r"leave out 2 parameters .*1\.weight"):
        parameter_groups(model, [{"params": model[0].parameters()}], 1.0)
    with pytest.raises(ValueError, match="repeats"):
        parameter_groups(model, [{"params": model.parameters()}, {"params": [model[0].bias]}], 1)
    built = parameter_groups(
        model,
        [{"params": model[0].parameters()}, {"params": model[1].parameters(), "lr_factor": 3}],
        0.5,
    )
    assert [group["lr"] for group in built] == [0.5, 1.5]


def regression_batches(count: int, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [
        (torch.randn(size, 3, generator=generator), torch.randn(size, 1, generator=generator))
        for _ in range(count)
    ]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_accumulating_k_batches_is_one_step_on_their_union(optimizer):
    config = TrainingConfig(optimizer=optimizer, log10_learning_rate=-1)
    batches = regression_batches(6, 4)  # two steps of three batches, or of one 12-item batch
    models = {}
    for name, accumulation in (("accumulated", 3), ("big", 1)):
        torch.manual_seed(1)
        model = models[name] = torch.nn.Linear(3, 1)
        step = GradientStep(
            make_optimizer(config, model), torch.amp.GradScaler("cpu", enabled=False), accumulation
        )
        if name == "big":
            batches_here = [
                (
                    torch.cat([x for x, _ in batches[i : i + 3]]),
                    torch.cat([y for _, y in batches[i : i + 3]]),
                )
                for i in (0, 3)
            ]
        else:
            batches_here = batches
        outcomes = []
        for index, (inputs, targets) in enumerate(batches_here):
            loss = torch.nn.functional.mse_loss(model(inputs), targets)
            outcomes.append(step(loss, index, len(batches_here)))
        assert sum(outcome is not None for outcome in outcomes) == 2
    for accumulated, big in zip(
        models["accumulated"].parameters(), models["big"].parameters(), strict=True
    ):
        torch.testing.assert_close(accumulated, big, rtol=1e-6, atol=1e-7)


def test_the_gradient_norm_is_measured_and_clipped():
    model = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0, 0.5]]))
    config = TrainingConfig(optimizer="sgd", momentum=0.0, log10_learning_rate=0)
    step = GradientStep(
        make_optimizer(config, model), torch.amp.GradScaler("cpu", enabled=False), 1, 0.5
    )
    inputs = torch.tensor([[3.0, 4.0, 12.0]])
    # loss = w . x: the gradient is x, of norm 13; clipped to 0.5: x * 0.5 / 13 (plus 1e-6)
    outcome = step((model(inputs)).sum(), 0, 1)
    assert outcome.norm == pytest.approx(13.0) and outcome.taken
    expected = torch.tensor([[1.0, -2.0, 0.5]]) - inputs * 0.5 / (13.0 + 1e-6)
    torch.testing.assert_close(model.weight.detach(), expected)


def test_non_finite_gradients_stop_unless_a_grad_scaler_skips_them():
    model = torch.nn.Linear(2, 1)
    before = [param.detach().clone() for param in model.parameters()]
    optimizer = make_optimizer(TrainingConfig(), model)
    step = GradientStep(optimizer, torch.amp.GradScaler("cpu", enabled=False))
    with pytest.raises(NonFiniteGradients, match="nan"):
        step(model(torch.ones(1, 2)).sum() * math.nan, 0, 1)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    # mixed precision: the scaler skips the step, lowers its scale, and training goes on
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    step = GradientStep(optimizer, scaler)
    outcome = step(model(torch.ones(1, 2)).sum() * math.inf, 0, 1)
    assert not outcome.taken and not math.isfinite(outcome.norm)
    assert scaler.get_scale() == 512.0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    outcome = step(model(torch.ones(1, 2)).sum(), 0, 1)
    assert outcome.taken and outcome.norm == pytest.approx(math.sqrt(3.0))
    assert not torch.equal(before[1], model.bias.detach())


def test_weight_average_follows_its_formula_in_float64():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    average = WeightAverage(model, decay=0.9)
    expected = {name: value.double().clone() for name, value in model.state_dict().items()}
    generator = torch.Generator().manual_seed(3)
    for _ in range(3):
        with torch.no_grad():
            for param in model.parameters():
                param.add_(torch.randn(param.shape, generator=generator))
        model(torch.randn(4, 2, generator=generator))  # moves the batch-norm statistics
        average.update(model)
        for name, value in model.state_dict().items():
            if value.is_floating_point():
                expected[name] = 0.9 * expected[name] + 0.1 * value.double()
            else:
                expected[name] = value.double()
    for name, value in average.state_dict().items():
        torch.testing.assert_close(value.double(), expected[name], rtol=1e-6, atol=1e-7)
    own = {name: value.clone() for name, value in model.state_dict().items()}
    with average.swapped_into(model):
        assert torch.equal(model[0].weight, average.state_dict()["0.weight"])
    assert all(torch.equal(own[name], value) for name, value in model.state_dict().items())


def test_retention_keeps_newest_best_k_every_nth_and_milestones():
    values = [0.9, 0.5, 0.7, 0.4, 0.6, 0.45, 0.8, 0.85]  # epochs 1..8
    history = [{"epoch": e, "dev_per": v} for e, v in enumerate(values, 1)]
    assert best_epochs(history, "dev_per", True, 2) == [4, 6]
    assert best_epochs(history, "dev_per", False, 1) == [1]
    policy = RetentionPolicy(keep_best=2, save_frequency=3, keep_epochs=(5,))
    assert policy.kept(history, "dev_per", True) == {8, 4, 6, 3, 5}
    assert RetentionPolicy().kept(history, "dev_per", True) == {8, 4}
    with_nan = [*history, {"epoch": 9, "dev_per": math.nan}]
    assert best_epochs(with_nan, "dev_per", True, 9)[-1] == 9


@pytest.mark.parametrize(
    "training, fingerprint",
    [
        # the settings fingerprints of these runs before the trainer's new settings existed
        ({}, "fa07e3ec63d079c5"),
        ({"optimizer": "sgd", "gradient_accumulation": 2}, "eb239a1e22e3e58a"),
        ({"optimizer": "rms", "reduce_lr_factor": 1.0}, "30f93808d3ac778a"),
    ],
)
def test_new_settings_at_their_defaults_keep_older_runs_fingerprints(training, fingerprint):
    from speechbed.training.config import RunConfig
    from speechbed.training.run_lineage import settings_fingerprint

    mapping = {"info": {"run_dir": "run"}, "data": {"cache_directory": "cache"}}
    config = RunConfig.model_validate({**mapping, "training": training})
    assert settings_fingerprint(config) == fingerprint
    changed = RunConfig.model_validate({**mapping, "training": {**training, "ema_decay": 0.99}})
    assert settings_fingerprint(changed) != fingerprint
