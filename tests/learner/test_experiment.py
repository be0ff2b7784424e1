"""learner.experiment end to end: the shipped toy presets, shrunk to one tiny stage on the
tiny random pipeline, through a local Ray; the statistics over seeds on their own."""

from __future__ import annotations

import json
import shutil

import pytest

from configs.load import DEFAULT_PRESET
from learner.experiment import DDPO_PRESET
from learner.experiment import main as experiment_main
from learner.experiment_report import BEGIN, END, replace_block
from toyworld.prompts import load_prompts

_tiny_train = "toyworld/prompts/binding_train.txt"


def _tiny(tiny_pipeline_dir) -> list[str]:
    # for both presets; their trunks per stage differ (B² 4 branches, DDPO 1), so the
    # `presets` fixture writes those into copies of the shipped presets
    return [
        "stages=1",
        f"model.pretrained={tiny_pipeline_dir}",
        "sampling.num_steps=4",
        "sampling.micro_batch=16",
        "schedule.end=4",
        "train.epochs=1",
        "train.lora.rank=2",
        "runtime.rollout_actors=1",
        "logging.mlflow=false",
        "logging.grid_every=0",
        f"prompts.train={_tiny_train}",
        "prompts.test=toyworld/prompts/binding_test.txt",
    ]


@pytest.fixture()
def presets(tmp_path):
    b2 = tmp_path / "toy_b2.yaml"
    b2.write_text(DEFAULT_PRESET.read_text().replace("trunks_per_stage: 32", "trunks_per_stage: 2"))
    ddpo = tmp_path / "toy_ddpo.yaml"
    text = DDPO_PRESET.read_text().replace("trunks_per_stage: 128", "trunks_per_stage: 8")
    ddpo.write_text(text.replace("start: 10", "start: 4").replace("end: 10", "end: 4"))
    return b2, ddpo


def test_experiment_trains_evaluates_and_writes_the_summary(
    tiny_pipeline_dir, tmp_path, presets, capsys, monkeypatch
):
    results = tmp_path / "RESULTS.md"
    results.write_text(f"# Results\n\nhand-written\n\n{BEGIN}\nold\n{END}\n\n## After\n")
    out = tmp_path / "exp"
    argv = [
        "--presets",
        *map(str, presets),
        "--seeds",
        "7",
        "--images-per-prompt",
        "1",
        "--out",
        str(out),
        "--results",
        str(results),
        "--set",
        *_tiny(tiny_pipeline_dir),
    ]
    assert experiment_main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["presets"]) == {"toy_b2", "toy_ddpo"}
    for name, entry in summary["presets"].items():
        assert entry["seeds"] == [7]
        assert len(entry["train_seconds"]) == 1 and entry["train_seconds"][0] > 0
        for split in ("train", "test"):
            row = entry["splits"][split]
            for metric in ("oracle_accuracy", "clip_score", "bert_score", "diversity"):
                stats = row[metric]
                assert len(stats["values"]) == 1 and stats["std"] == 0, (name, split, metric)
                base = summary["base"][split][metric]
                assert stats["change"] == pytest.approx(stats["mean"] - base)
    assert summary["presets"]["toy_b2"]["algorithm"] == "b2"
    assert summary["images_per_prompt"] == {"train": 1, "test": 1}
    assert summary["presets"]["toy_ddpo"]["algorithm"] == "ddpo"
    for name in ("toy_b2", "toy_ddpo"):
        run = out / "runs" / f"{name}-s7"
        assert json.loads((run / "summary.json").read_text())["stages_completed"] == 1
        assert list((run / "eval").glob("*_all.json")), run
    for name in ("comparison.md", "summary.md", "reward.png", "eval.png", "side_by_side.png"):
        assert (out / name).stat().st_size > 100, name
    text = results.read_text()
    assert text.startswith("# Results\n\nhand-written\n") and text.endswith(f"{END}\n\n## After\n")
    assert "old" not in text and "| toy_b2 (b2) | 7 | test |" in text
    assert "](exp/reward.png)" in text  # images linked relative to the results file
    assert "Training time per run (each run's summary.json): toy_b2 " in text

    # a second call keeps the complete runs and their evaluations (the same numbers) and
    # resumes the one whose driver died after its last checkpoint (no summary.json)
    (out / "runs" / "toy_ddpo-s7" / "summary.json").unlink()
    capsys.readouterr()
    assert experiment_main(argv) == 0
    log = capsys.readouterr().out
    assert log.count("complete, kept") == 1 and "toy_ddpo-s7: resuming" in log
    assert log.count("evaluation kept") == 3
    assert (out / "runs" / "toy_ddpo-s7" / "summary.json").is_file()
    again = json.loads((out / "summary.json").read_text())
    for entry in (*again["presets"].values(), *summary["presets"].values()):
        entry.pop("train_seconds")  # the resumed run's time is its own
    assert again["presets"] == summary["presets"] and again["base"] == summary["base"]

    # other held-out prompts: the runs are kept (training never reads them), every
    # evaluation is made again on the new prompts, and the grid shows them
    capsys.readouterr()
    from learner import compare

    shown = []
    grid = compare.side_by_side
    monkeypatch.setattr(
        compare, "side_by_side", lambda *a, **k: shown.append(k["prompts"]) or grid(*a, **k)
    )
    spatial = "toyworld/prompts/spatial_test.txt"
    assert experiment_main([*argv, f"prompts.test={spatial}"]) == 0
    assert shown == [load_prompts(spatial)]
    log = capsys.readouterr().out
    assert log.count("complete, kept") == 2 and "evaluation kept" not in log
    wanted = set(load_prompts(spatial))
    for name in ("toy_b2", "toy_ddpo"):
        (result,) = (out / "runs" / f"{name}-s7" / "eval").glob("*_all.json")
        splits = json.loads(result.read_text())["splits"]
        assert set(splits["test"]["per_prompt"]) == wanted
        assert set(splits["train"]["per_prompt"]) == set(load_prompts(_tiny_train))
    third = json.loads((out / "summary.json").read_text())
    assert third["base"]["train"] == summary["base"]["train"]
    assert third["base"]["test"] != summary["base"]["test"]

    # every run's record (no checkpoints): a run directory deleted since is restored from
    # it and reported as before, without training or evaluating it again
    for name in ("toy_b2", "toy_ddpo"):
        record = out / "records" / f"{name}-s7"
        assert {p.name for p in record.iterdir()} == {
            "config.yaml",
            "summary.json",
            "metrics.jsonl",
            "eval",
        }
        assert not list((out / "records").glob(".*"))  # no temporary leftovers
    shutil.rmtree(out / "runs" / "toy_b2-s7")
    capsys.readouterr()

    def no_ray(cfg):
        raise AssertionError("nothing trains: no Ray is started")

    monkeypatch.setattr("learner.run.connect", no_ray)
    assert experiment_main([*argv, f"prompts.test={spatial}"]) == 0
    log = capsys.readouterr().out
    assert "toy_b2-s7: complete, kept (from its record, no checkpoints)" in log
    assert log.count("evaluation kept") == 3 and "evaluating" not in log
    assert "side_by_side.png leaves out the runs without checkpoints: toy_b2-s7" in log
    fourth = json.loads((out / "summary.json").read_text())
    assert fourth["presets"]["toy_b2"]["splits"] == third["presets"]["toy_b2"]["splits"]
    # what the record does not hold needs the checkpoint: one line, nothing trained
    assert experiment_main(argv) == 2
    err = capsys.readouterr().err
    assert "toy_b2-s7: no checkpoint (restored from its record)" in err
    assert len(err.strip().splitlines()) == 1


def test_held_out_prompts_are_not_part_of_a_run():
    from configs.load import load_config
    from learner.run import config_diff

    cfg = load_config(DEFAULT_PRESET)
    assert config_diff(cfg, load_config(DEFAULT_PRESET, ["prompts.test=x.txt"])) is None
    assert config_diff(cfg, load_config(DEFAULT_PRESET, ["prompts.train=x.txt"])) == "prompts"


def test_unequal_budgets_are_refused(tiny_pipeline_dir, tmp_path, presets, capsys):
    tiny = [*_tiny(tiny_pipeline_dir), "sampling.trunks_per_stage=2"]  # B² 8 images, DDPO 2
    argv = ["--presets", *map(str, presets), "--out", str(tmp_path / "exp"), "--set", *tiny]
    assert experiment_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "differ in reward queries" in err[0], err
    assert not (tmp_path / "exp").exists()  # nothing written


def test_the_shipped_presets_spend_equal_budgets():
    """`python -m learner.experiment` with no arguments compares the two toy presets: they
    must agree on everything `budget` checks, the number of images above all."""
    from configs.load import load_config
    from learner.experiment_plan import Arm, budget, check_budgets

    arms = [Arm(p.stem, p, load_config(p)) for p in (DEFAULT_PRESET, DDPO_PRESET)]
    check_budgets(arms)  # raises on any difference
    assert budget(arms[0].cfg)["reward queries (stages x trunks x branches)"] == 96 * 32 * 4


def test_replace_block_appends_when_markers_are_missing(tmp_path):
    path = tmp_path / "R.md"
    path.write_text("# R\n")
    replace_block(path, "table\n")
    assert path.read_text() == f"# R\n\n{BEGIN}\ntable\n{END}\n"
    replace_block(path, "new\n")
    assert path.read_text() == f"# R\n\n{BEGIN}\nnew\n{END}\n"


def test_summary_statistics_and_table():
    from pathlib import Path

    from configs.load import load_config
    from learner.experiment_plan import Arm
    from learner.experiment_report import summarise, summary_markdown

    def result(acc_train, acc_test):
        split = lambda acc: {  # noqa: E731
            "images": 100,
            "oracle_accuracy": acc,
            "clip_score": 0.5,
            "bert_score": 0.8,
            "diversity": 0.3,
        }
        return {"splits": {"train": split(acc_train), "test": split(acc_test)}}

    base = result(0.30, 0.10) | {"diversity_embedding": "open_clip x"}
    arms = [Arm("toy_b2", Path("b2.yaml"), load_config(DEFAULT_PRESET))]
    runs = {"toy_b2": [(0, result(0.40, 0.12)), (1, result(0.50, 0.16))]}
    summary = summarise(arms, runs, base) | {"diversity_embedding": "open_clip x"}
    acc = summary["presets"]["toy_b2"]["splits"]["train"]["oracle_accuracy"]
    assert acc["mean"] == pytest.approx(0.45) and acc["change"] == pytest.approx(0.15)
    assert acc["std"] == pytest.approx(0.0707107, rel=1e-5)  # sample std of 0.40, 0.50
    table = summary_markdown(summary, "cmd", "img", 90.0)
    assert "| toy_b2 (b2) | 0, 1 | train | 45.0 ± 7.1 % (+15.0) | 0.500 ± 0.000 (+0.000) |" in table
    assert "| base | - | test | 10.0 % |" in table and "(this invocation: 1.5 min;" in table


def test_a_run_made_with_another_config_is_refused(tmp_path, capsys):
    from configs.load import dump_config, load_config

    out = tmp_path / "exp"
    run = out / "runs" / "toy_b2-s0"
    run.mkdir(parents=True)
    other = load_config(DEFAULT_PRESET, ["seed=0", "train.lr=0.001"])
    (run / "config.yaml").write_text(dump_config(other))
    (run / "summary.json").write_text(json.dumps({"stages_completed": other.stages}))
    argv = ["--presets", str(DEFAULT_PRESET), "--seeds", "0", "--out", str(out)]
    assert experiment_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "toy_b2-s0: made with another config" in err[0], err
    assert "'train'" in err[0]


def test_the_default_evaluation_sizes_both_splits_alike():
    """The shipped preset's 5 train prompts get as many images as its 20 held-out ones:
    about IMAGES_PER_SPLIT each, not 103 a prompt in both (515 against 2,060)."""
    from configs.load import load_config
    from learner.evaluate import images_per_prompt
    from learner.experiment import IMAGES_PER_SPLIT, parse_args

    cfg = load_config(DEFAULT_PRESET)
    args = parse_args([])
    assert args.images_per_split == IMAGES_PER_SPLIT and args.images_per_prompt is None
    counts = images_per_prompt(cfg, ["train", "test"], None, args.images_per_split)
    sizes = {s: n * len(load_prompts(getattr(cfg.prompts, s))) for s, n in counts.items()}
    assert all(IMAGES_PER_SPLIT <= n < IMAGES_PER_SPLIT + 20 for n in sizes.values()), sizes
    assert images_per_prompt(cfg, ["train", "test"], 3, 2048) == {"train": 3, "test": 3}


def test_bad_evaluation_sizes_stop_before_anything_trains(tmp_path, capsys):
    out = tmp_path / "exp"
    assert experiment_main(["--images-per-split", "0", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == "error: --images-per-split 0: must be >= 1"
    assert experiment_main(["--images-per-prompt", "-1", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == "error: --images-per-prompt -1: must be >= 1"
    with pytest.raises(SystemExit):  # argparse: one way to size the splits at a time
        experiment_main(["--images-per-split", "8", "--images-per-prompt", "2"])
    assert not out.exists()
