"""train.ema: the moving average of the LoRA against one computed here, its checkpoint
round trip (a resumed run equals an uninterrupted one), and nothing changed when it is off;
also the update's counted UNet work (update_unet_evaluations)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from configs.load import dump_config
from learner import checkpoint
from learner.advantages import Advantages
from learner.evaluator import resolve
from learner.groups import InProcessLearner
from learner.learner_worker import EMA_VERSION, LearnerWorker
from learner.stage import run_in_process
from learner.update import PolicyTrainer

PROMPTS = ["a red circle", "a blue square"]


def brightness(images, prompts):
    return images.float().mean(dim=(1, 2, 3)).numpy() / 255.0


def _cfg(tiny_cfg, **train):
    """tiny_cfg with two trunks a stage (a few seconds) and small batches (several
    optimizer steps a stage)."""
    sampling = tiny_cfg.sampling.model_copy(update={"trunks_per_stage": 2})
    train = tiny_cfg.train.model_copy(update={"batch_size": 2, **train})
    return tiny_cfg.model_copy(update={"train": train, "sampling": sampling})


def _worker(model, cfg) -> LearnerWorker:
    return LearnerWorker(cfg, PolicyTrainer(model, cfg), Advantages(cfg.advantage))


def _stage(worker: LearnerWorker, cfg, stage: int):
    return run_in_process(worker.trainer, worker.advantages, brightness, PROMPTS, cfg, stage)


def test_ema_follows_every_optimizer_step(tiny_model, tiny_cfg):
    decay = 0.8
    cfg = _cfg(tiny_cfg, ema=decay)
    trainer = PolicyTrainer(tiny_model, cfg)
    expected = {k: v.double() for k, v in trainer.weights().items()}  # starts at the init
    steps = []

    def after_step(optimizer, args, kwargs):
        steps.append(1)
        for k, w in trainer.weights().items():
            expected[k] = decay * expected[k] + (1 - decay) * w.double()

    trainer.optimizer.register_step_post_hook(after_step)
    adv = Advantages(cfg.advantage)
    records = [run_in_process(trainer, adv, brightness, PROMPTS, cfg, s) for s in (0, 1)]
    assert len(steps) == sum(r.update.optimizer_steps for r in records) >= 3
    ema = trainer.ema_weights()
    assert set(ema) == set(expected)
    for k, v in ema.items():
        torch.testing.assert_close(v.double(), expected[k], rtol=0, atol=1e-6)
    # the average lags the trained weights; rollouts are published the trained ones
    worker = LearnerWorker(cfg, trainer, adv)
    published = InProcessLearner(worker).publish()
    assert all(torch.equal(published.weights[k], w) for k, w in trainer.weights().items())
    assert any(not torch.equal(ema[k], w) for k, w in trainer.weights().items())
    grid = InProcessLearner(worker).publish(ema=True)
    assert grid.version == EMA_VERSION + worker.version
    assert all(torch.equal(grid.weights[k], v) for k, v in ema.items())
    assert all(torch.equal(worker.ema_weights()[k], v) for k, v in ema.items())


def test_resume_with_ema_equals_an_uninterrupted_run(_tiny_model_once, tiny_cfg, tmp_path):
    cfg = _cfg(tiny_cfg, ema=0.7)
    whole = _worker(copy.deepcopy(_tiny_model_once), cfg)
    for s in (0, 1):
        _stage(whole, cfg, s)

    first = _worker(copy.deepcopy(_tiny_model_once), cfg)
    record = _stage(first, cfg, 0)
    path = checkpoint.save(tmp_path, first.state(0, record.split_step))
    assert (path / checkpoint.EMA_FILE).is_file()
    (tmp_path / "config.yaml").write_text(dump_config(cfg))  # tmp_path is the run directory
    target = resolve(str(path), None, [])  # learner.evaluate scores the average
    assert all(torch.equal(target.lora[k], v) for k, v in first.ema_weights().items())
    resumed = _worker(copy.deepcopy(_tiny_model_once), cfg)
    resumed.restore(checkpoint.load(path), str(path))
    assert _stage(resumed, cfg, 1).update.optimizer_steps > 0

    for mine, theirs in (
        (resumed.weights(), whole.weights()),
        (resumed.ema_weights(), whole.ema_weights()),
    ):
        assert set(mine) == set(theirs)
        for k in mine:
            torch.testing.assert_close(mine[k], theirs[k], rtol=0, atol=1e-7)


def test_ema_off_by_default_changes_nothing(_tiny_model_once, tiny_cfg, tmp_path):
    assert tiny_cfg.train.ema is None
    off_cfg, on_cfg = _cfg(tiny_cfg), _cfg(tiny_cfg, ema=0.9)
    off = _worker(copy.deepcopy(_tiny_model_once), off_cfg)
    on = _worker(copy.deepcopy(_tiny_model_once), on_cfg)
    r_off, r_on = _stage(off, off_cfg, 0), _stage(on, on_cfg, 0)
    assert r_off.update.optimizer_steps == r_on.update.optimizer_steps > 0
    for k, w in off.weights().items():  # the average never feeds back into training
        assert torch.equal(w, on.weights()[k])
    assert off.trainer.ema is None and off.trainer.ema_weights() is None
    assert all(torch.equal(off.ema_weights()[k], w) for k, w in off.weights().items())
    state = off.state(0, r_off.split_step)
    assert state.ema is None
    path = checkpoint.save(tmp_path, state)
    assert not (path / checkpoint.EMA_FILE).exists()
    assert checkpoint.load(path).ema is None


@pytest.mark.parametrize("kl_coef", [0.0, 0.1])
def test_update_counts_its_unet_evaluations(tiny_model, tiny_cfg, kl_coef):
    cfg = tiny_cfg.model_copy(
        update={"loss": tiny_cfg.loss.model_copy(update={"kl_coef": kl_coef})}
    )
    trainer = PolicyTrainer(tiny_model, cfg)
    r = run_in_process(trainer, Advantages(cfg.advantage), brightness, PROMPTS, cfg, 0)
    selected, s = len(r.selection.index), r.split_step
    guided = 2  # tiny_cfg's guidance_scale is 3.0: each latent goes through the UNet twice
    # every epoch forwards and backwards each selected trajectory's s interval steps
    expected = cfg.train.epochs * selected * s * guided * 2
    if kl_coef:  # the pretrained model's means: one forward per trained transition
        expected += len(np.unique(r.selection.index)) * s * guided
    assert selected > 0
    m = r.metrics()
    assert m["update_unet_evaluations"] == expected
    assert m["unet_evaluations"] == r.unet_evaluations  # sampling's count keeps its name


def test_two_ranks_count_and_average_as_one(tiny_model, tiny_cfg, thread_ranks, in_threads):
    from diffusion.sampler import sample_branches
    from learner.selection import compact, select
    from learner.stage import sampler_settings
    from learner.update_plan import held_rows

    cfg = _cfg(tiny_cfg, ema=0.6)
    cfg = cfg.model_copy(update={"loss": cfg.loss.model_copy(update={"kl_coef": 0.1})})
    prompts = ["a red circle", "a blue square", "two green triangles"]
    batch = sample_branches(tiny_model, prompts, [0, 1, 2], sampler_settings(cfg, 2), 3, 2)
    adv = np.array([1.0, 0.1, -1.0, 0.9, -0.8, 0.0, 0.5, -0.2, -0.6])
    sel = select(cfg.selection, batch.trunk_ids.numpy(), adv)
    batch, adv, sel = batch.select(torch.as_tensor(sel.index)), adv[sel.index], compact(sel)
    want = PolicyTrainer(copy.deepcopy(tiny_model), cfg).update(batch, adv, sel, stage=2)
    ranks = [PolicyTrainer(copy.deepcopy(tiny_model), cfg, g) for g in thread_ranks(2)]
    mine = [batch.select(h) for h in held_rows(cfg, sel, 2, 2)]
    pairs = zip(ranks, mine, strict=True)
    jobs = [lambda t=t, b=b: t.update(b, adv, sel, stage=2) for t, b in pairs]
    got = in_threads(jobs)
    assert got[0].update_unet_evaluations == got[1].update_unet_evaluations
    assert got[0].update_unet_evaluations == want.update_unet_evaluations > 0
    e0, e1 = ranks[0].ema_weights(), ranks[1].ema_weights()
    assert all(torch.equal(e0[k], e1[k]) for k in e0)  # every rank holds the same average
