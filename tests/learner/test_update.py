from types import SimpleNamespace

import numpy as np
import pytest
import torch

from diffusion.sampler import sample_branches
from learner.advantages import Advantages
from learner.selection import Selection
from learner.stage import run_in_process, sampler_settings
from learner.update import PolicyTrainer


@pytest.fixture()
def trainer_and_batch(tiny_model, tiny_cfg):
    trainer = PolicyTrainer(tiny_model, tiny_cfg)
    st = sampler_settings(tiny_cfg, 0)
    batch = sample_branches(
        tiny_model, ["a red circle", "a blue square"], [0, 1], st, seed=3, stage=0
    )
    return trainer, batch


def test_recomputed_log_probs_give_ratio_one(trainer_and_batch):
    trainer, batch = trainer_and_batch
    recomputed = trainer.log_probs(batch)
    ratio = torch.exp(recomputed - batch.log_probs)
    assert (ratio - 1).abs().max() <= 1e-6


def _one_update(trainer, batch, row, adv_value, cfg_loss="ppo_clip"):
    adv = np.zeros(len(batch))
    adv[row] = adv_value
    sel = Selection(np.array([row]), int(adv_value > 0), int(adv_value < 0), np.zeros((0, 2), int))
    before = trainer.log_probs(batch)[row]
    stats = trainer.update(batch, adv, sel, stage=0)
    after = trainer.log_probs(batch)[row]
    return before, after, stats


def _one_trunk(tiny_model, tiny_cfg, stage, train=None, **loss):
    """A trainer with these loss (and train) settings and one trunk of branches sampled at
    `stage`."""
    cfg = tiny_cfg.model_copy(
        update={
            "loss": tiny_cfg.loss.model_copy(update=loss),
            "train": tiny_cfg.train.model_copy(update=train or {}),
        }
    )
    trainer = PolicyTrainer(tiny_model, cfg)
    batch = sample_branches(
        tiny_model, ["a red circle"], [0], sampler_settings(cfg, stage), seed=3, stage=stage
    )
    return cfg, trainer, batch


@torch.no_grad()
def _kl_per_step(trainer, batch) -> torch.Tensor:
    """KL from the pretrained model of every transition of the batch: [interval step, row]."""
    trainer.model.scheduler.set_timesteps(trainer.cfg.sampling.num_steps)
    emb, uncond = trainer._embeddings(batch)
    rows = torch.arange(len(batch))
    cond = torch.stack([emb[p] for p in batch.prompts])
    return torch.stack(
        [
            trainer._forward(batch, rows, torch.full_like(rows, j), cond, uncond, True)[1]
            for j in range(batch.interval)
        ]
    )


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_ppo_update_moves_log_prob_with_the_advantage(trainer_and_batch, sign):
    trainer, batch = trainer_and_batch
    before, after, stats = _one_update(trainer, batch, 1, sign * 2.0)
    assert stats.optimizer_steps == 1 and np.isfinite(stats.loss) and stats.grad_norm > 0
    assert sign * (after.mean() - before.mean()) > 0
    assert stats.kl_base == 0.0  # loss.kl_coef 0: no KL term, no base-model forward


def test_pairwise_update_raises_best_and_lowers_worst(tiny_model, tiny_cfg):
    _, trainer, batch = _one_trunk(tiny_model, tiny_cfg, stage=0, name="pairwise")
    before = trainer.log_probs(batch)
    sel = Selection(np.array([0, 2]), 1, 1, np.array([[0, 2]]))
    stats = trainer.update(batch, np.array([1.0, 0.0, -1.0]), sel, stage=0)
    after = trainer.log_probs(batch)
    assert stats.optimizer_steps == 1
    margin_before = before[0].mean() - before[2].mean()
    margin_after = after[0].mean() - after[2].mean()
    assert margin_after > margin_before


def test_one_complete_stage_in_process(tiny_model, tiny_cfg):
    trainer = PolicyTrainer(tiny_model, tiny_cfg)
    adv = Advantages(tiny_cfg.advantage)

    def brightness(images, prompts):
        return images.float().mean(dim=(1, 2, 3)).numpy() / 255.0

    res = run_in_process(
        trainer, adv, brightness, ["a red circle", "a blue square"], tiny_cfg, stage=0
    )
    n = tiny_cfg.sampling.trunks_per_stage * tiny_cfg.sampling.branches
    assert len(res.rewards) == n and res.split_step == 2
    assert res.selection.positives + res.selection.negatives == len(res.selection.index) > 0
    m = res.metrics()
    assert np.isfinite(m["loss"]) and m["images"] == n and m["optimizer_steps"] >= 1


def test_non_finite_reward_is_refused_with_the_prompt(tiny_model, tiny_cfg):
    trainer = PolicyTrainer(tiny_model, tiny_cfg)

    def broken(images, prompts):
        r = np.zeros(len(prompts))
        r[1] = np.nan
        return r

    with pytest.raises(ValueError, match="non-finite reward .* for prompt"):
        run_in_process(
            trainer, Advantages(tiny_cfg.advantage), broken, ["a red circle"], tiny_cfg, 0
        )


def test_weighted_losses_scale_each_term():
    from configs.schema import LossConfig
    from learner import losses

    cfg = LossConfig()
    new = torch.tensor([0.01, -0.02, 0.03], requires_grad=True)
    old = torch.zeros(3)
    adv = torch.tensor([1.0, -2.0, 0.5])
    w = torch.tensor([1.0, 0.0, 0.25])
    loss, _ = losses.ppo_clip(new, old, adv, cfg, w)
    per_row = -adv * torch.exp(new)  # no term is clipped at these ratios
    assert float(loss.detach()) == pytest.approx(float((w * per_row).mean().detach()), rel=1e-6)
    loss.backward()
    assert new.grad[1] == 0  # a zero weight removes the term's gradient
    unweighted, _ = losses.pairwise(new[:1], old[:1], new[1:2], old[1:2], cfg)
    weighted, _ = losses.pairwise(new[:1], old[:1], new[1:2], old[1:2], cfg, torch.tensor([0.5]))
    assert float(weighted.detach()) == pytest.approx(0.5 * float(unweighted.detach()), rel=1e-6)


def test_noise_step_weight_down_weights_the_near_deterministic_step(tiny_model, tiny_cfg):
    from diffusion.ddim import noise_step_weights

    cfg, trainer, batch = _one_trunk(tiny_model, tiny_cfg, stage=3, step_weight="noise")
    sched = tiny_model.scheduler
    sched.set_timesteps(cfg.sampling.num_steps)
    full = noise_step_weights(sched, cfg.sampling.eta)
    s = batch.interval
    assert trainer.step_weights(batch.timesteps).tolist() == full[-s:].tolist()
    assert float(full.max()) == 1.0 and float(full.min()) < 1.0
    plain = SimpleNamespace(cfg=tiny_cfg, model=tiny_model)  # loss.step_weight: none
    assert PolicyTrainer.step_weights(plain, batch.timesteps).tolist() == [1.0] * s
    # and an update under the weights still follows the advantage
    before, after, stats = _one_update(trainer, batch, 0, 2.0)
    assert stats.optimizer_steps == 1 and after.mean() > before.mean()


@pytest.mark.parametrize("target_kl", [None, 1e-6])
def test_target_kl_ends_the_update_before_the_policy_runs_away(tiny_model, tiny_cfg, target_kl):
    """With a step size that moves the policy far, `train.target_kl` stops the stage's update
    at the first optimizer step whose micro-batch is already past the target."""
    train = {"lr": 0.05, "batch_size": 1, "epochs": 2, "target_kl": target_kl}
    _, trainer, batch = _one_trunk(tiny_model, tiny_cfg, stage=2, train=train)
    sel = Selection(np.array([0, 2]), 1, 1, np.zeros((0, 2), int))
    stats = trainer.update(batch, np.array([1.0, 0.0, -1.0]), sel, stage=2)
    if target_kl is None:  # 2 units x 2 epochs, one optimizer step each
        assert stats.optimizer_steps == 4 and stats.kl_stopped == 0
    else:  # the first micro-batch is on-policy (KL ~ 0); after one step of lr 0.05 it is not
        assert stats.optimizer_steps == 1 and stats.kl_stopped == 1
    assert np.isfinite(stats.loss) and stats.approx_kl >= 0


def test_kl_penalty_pulls_the_policy_back_to_the_pretrained_model(tiny_model, tiny_cfg):
    """`loss.kl_coef`: the KL from the pretrained model is 0 while the LoRA is zero, and
    with no advantage to follow (the policy loss has no gradient) the penalty alone moves a
    perturbed LoRA back towards it."""
    train = {"lr": 1e-3, "batch_size": 3, "epochs": 4, "weight_decay": 0.0}
    cfg, trainer, batch = _one_trunk(tiny_model, tiny_cfg, stage=2, train=train, kl_coef=1.0)
    sel = Selection(np.array([0, 1, 2]), 0, 0, np.zeros((0, 2), int))
    zero = np.zeros(len(batch))

    def kl_now() -> float:
        return float(_kl_per_step(trainer, batch).mean())

    assert kl_now() == 0.0  # B starts at zero: the adapted UNet is the pretrained one
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for p in trainer.params:
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    before = kl_now()
    stats = trainer.update(batch, zero, sel, stage=2)
    assert before > 0 and stats.kl_base > 0 and stats.optimizer_steps >= 1
    assert kl_now() < 0.5 * before  # measured: 2.5e-4 -> 7.6e-5 in four steps


def test_base_means_are_the_pretrained_models_and_computed_once_a_stage(tiny_model, tiny_cfg):
    """The KL penalty's base-model means do not depend on the LoRA, so `update` computes
    them once a stage (one base forward per transition), not once per epoch."""
    train = {"lr": 1e-3, "batch_size": 2, "epochs": 3, "weight_decay": 0.0}
    cfg, trainer, batch = _one_trunk(tiny_model, tiny_cfg, stage=2, train=train, kl_coef=1.0)
    trainer.model.scheduler.set_timesteps(cfg.sampling.num_steps)
    emb, uncond = trainer._embeddings(batch)
    rows = np.array([0, 1, 2])
    at_zero = trainer._base_means(batch, rows, emb, uncond)  # the LoRA is still zero
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for p in trainer.params:
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    assert torch.equal(trainer._base_means(batch, rows, emb, uncond), at_zero)
    calls = []
    inner = trainer._base_mean
    trainer._base_mean = lambda *a: calls.append(len(a[0])) or inner(*a)
    sel = Selection(rows, 0, 0, np.zeros((0, 2), int))
    stats = trainer.update(batch, np.zeros(len(batch)), sel, stage=2)
    assert stats.optimizer_steps == 3 * 2 and stats.kl_base > 0
    assert sum(calls) == len(rows) * batch.interval  # each transition once, not 3 times


@pytest.mark.parametrize("last", [1, 2])
def test_kl_from_step_penalises_only_the_last_steps(tiny_model, tiny_cfg, last):
    """`loss.kl_from_step`: the penalty in the loss is the KL of the covered steps only,
    while `kl_base` still reports every trained step's KL."""
    train = {"lr": 1e-6, "batch_size": 3, "epochs": 1, "weight_decay": 0.0}
    n = tiny_cfg.sampling.num_steps
    cfg, trainer, batch = _one_trunk(
        tiny_model, tiny_cfg, stage=2, train=train, kl_coef=1.0, kl_from_step=n - last
    )
    assert batch.interval > last  # some trained steps stay uncovered
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for p in trainer.params:
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    per_step = _kl_per_step(trainer, batch)
    global_step = trainer._step_index(batch.timesteps)
    covered = torch.tensor([g >= n - last for g in global_step])
    assert int(covered.sum()) == last
    sel = Selection(np.array([0, 1, 2]), 0, 0, np.zeros((0, 2), int))
    # zero advantages: the policy loss is 0, so the loss is the penalty alone, and one
    # optimizer step at the end means every term saw the starting weights
    stats = trainer.update(batch, np.zeros(len(batch)), sel, stage=2)
    assert stats.optimizer_steps == 1
    assert stats.loss == pytest.approx(float(per_step[covered].sum() / per_step.numel()), rel=1e-4)
    assert stats.kl_base == pytest.approx(float(per_step.mean()), rel=1e-4)
    assert stats.loss < stats.kl_base


def test_kl_from_step_must_leave_a_step_under_the_penalty(tiny_cfg):
    with pytest.raises(ValueError, match="kl_from_step"):
        tiny_cfg.model_validate(
            {**tiny_cfg.model_dump(), "loss": {"kl_coef": 0.1, "kl_from_step": 99}}
        )
