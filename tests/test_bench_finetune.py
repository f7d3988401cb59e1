"""bench/finetune.py: its plan, table and gain on hand-computed numbers, and a whole run on the tiny dialogue
data set with the fine-tuning CLI replaced by a stand-in that writes features (seconds, no model)."""

import os

import numpy as np
import pytest

import config
from conftest import load_script


@pytest.fixture
def bench():
    return load_script("bench/finetune.py")


def test_plan_makes_one_job_per_seed_and_arm_and_every_downstream_run(bench):
    args = bench.build_parser().parse_args(["--seeds", "0,1,2", "--ft_seeds", "0,1", "--folds", "4"])
    args.arms, args.seeds, args.ft_seeds = ["frozen", "ft", "cf"], [0, 1, 2], [0, 1]
    args.frozen_feat, args.split = "meld-minilm-UTT", "official.json"
    jobs, runs = bench.plan(args)
    # one job per fine-tuning seed: with --folds it makes the ft arm's embedding and the cf arm's probabilities
    assert [(j["seed"], j["folds"]) for j in jobs] == [(0, 4), (1, 4)]
    assert len({j["name"] for j in jobs}) == 2 and all(j["name"].startswith("meld-minilm-ft-cf4-") for j in jobs)
    assert len(runs) == 2 * 3 * (1 + 2 + 2)  # contexts x seeds x (frozen + 2 ft seeds + 2 cf seeds)
    assert {r["feat"] for r in runs if r["arm"] == "cf"} == {j["name"] + "-probs" for j in jobs if j["folds"]}
    argv = bench.finetune_argv(args, "s.json", jobs[0]["name"], 0, 4)
    assert argv[argv.index("--folds") + 1] == "4" and "--quiet" in argv and argv[argv.index("--modality") + 1] == "text"
    args.ft_context_window += 1  # another setting, another feature name: a feature is reused only when it matches
    assert bench.feature_name(args, 0, 4) != jobs[0]["name"]
    args.arms = ["frozen", "ft"]
    assert [(j["seed"], j["folds"]) for j in bench.plan(args)[0]] == [(0, 0), (1, 0)]


def test_table_and_gain_on_hand_computed_numbers(bench):
    rows = [{"arm": a, "context": c, "seed": s, "test_f1": f, "valid_f1": 0.5}
            for a, c, s, f in [("frozen", 0, 0, 0.50), ("frozen", 0, 1, 0.52), ("frozen", 3, 0, 0.55),
                               ("frozen", 3, 1, 0.57), ("ft", 0, 0, 0.58), ("ft", 0, 1, 0.60),
                               ("ft", 3, 0, 0.59), ("ft", 3, 1, 0.61)]]
    assert bench.gain_points(rows, 3) == pytest.approx(4.0)  # 0.60 - 0.56
    assert bench.gain_points(rows, 0) == pytest.approx(8.0)
    assert bench.gain_points(rows, 3, arm="cf") is None
    table = bench.summary_table(rows, [0, 3])
    assert table[0].startswith("| arm | no context | context 3 |")
    assert table[2] == "| frozen | 0.5100 +- 0.0100 | 0.5600 +- 0.0100 | 0.5000 | 2 |"
    assert table[3].startswith("| fine-tuned | 0.5900 +- 0.0100 | 0.6000 +- 0.0100 |")


def fake_finetune(dialogues):
    """Stands in for preprocess/finetune_encoder.py: the 'fine-tuned' feature is the dialogue's mean cue (what an
    encoder with the dialogue in its input could learn), written where the CLI writes (``<name>-UTT``, with
    --folds ``<name>-UTT-probs`` too)."""
    calls = []
    cue = {n: np.load(os.path.join(dialogues.root, "dia-cue", n + ".npy")) for n in dialogues.labels["name"]}
    by_dia = dialogues.labels.groupby("dialogue")["name"].apply(list)

    def run(argv):
        calls.append(argv)
        name = argv[argv.index("--feature_name") + 1]
        out = {}
        for names in by_dia:
            m = np.mean([cue[n] for n in names], axis=0)
            out.update({n: m for n in names})
        parts = {name + "-UTT": out}
        if "--folds" in argv:
            parts[name + "-UTT-probs"] = {n: np.exp(v[:3]) / np.exp(v[:3]).sum() for n, v in out.items()}
        for feat, vecs in parts.items():
            folder = dialogues.tmp / feat
            os.makedirs(folder)
            for n, v in vecs.items():
                np.save(folder / (n + ".npy"), v.astype(np.float32))
        return 0.01

    return run, calls


def test_the_bench_runs_frozen_finetuned_and_crossfitted_arms_and_reuses_what_it_made(
        bench, dialogues, monkeypatch, capsys):
    monkeypatch.setattr(config, "FEAT_TEXT_DICT", dict(config.FEAT_TEXT_DICT))
    monkeypatch.setattr(config, "MODALITY_DICTS", {**config.MODALITY_DICTS, "text": config.FEAT_TEXT_DICT})
    run, calls = fake_finetune(dialogues)
    monkeypatch.setattr(bench, "run_finetune", run)
    monkeypatch.setattr(bench, "FT_CLI", bench.__file__)
    argv = ["--dataset", "dia", "--split", str(dialogues.tmp / "train_lst" / "dia" / "seed0.json"),
            "--frozen_feat", "dia-cue", "--arms", "frozen,ft,cf", "--seeds", "0", "--ft_seeds", "0",
            "--folds", "2", "--ds_epochs", "4", "--context", "2", "--device", "cpu",
            "--save_root", str(dialogues.tmp / "bench"), "--extra=--hidden_dim 16"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(calls) == 1 and "--folds" in calls[0]
    assert out[-1].startswith("gain: ")
    gain = float(out[-1].split()[1])
    assert gain > 0  # the dialogue's mean cue beats a lone utterance's
    assert any(line.startswith("| cross-fitted (probs) |") for line in out)
    # a second run makes nothing again: the features and the downstream runs are reused
    assert bench.main(argv) == 0
    out2 = capsys.readouterr().out
    assert len(calls) == 1 and out2.count("already made, reused") == 1 and "(cached)" in out2
    assert out2.strip().splitlines()[-1] == out[-1]
    # --report trains nothing and prints the same table from the runs already scored
    assert bench.main(argv + ["--report", "--seeds", "0,1"]) == 0
    out3 = capsys.readouterr().out
    assert len(calls) == 1 and "not run yet (--report)" in out3 and out3.strip().splitlines()[-1] == out[-1]
