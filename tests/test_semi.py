"""Semi-supervised drivers on the tiny data set: two-stage, the ACL loop and its resume, no leakage."""

import json
import os

import pandas as pd
import pytest

from conftest import CLASSES, train_args  # noqa: F401
from pseudo import drivers as semi
from dataloader.files import DataError, read_split_json

TRAIN_ARGS = ["--dataset", "tiny", "--feat", "tiny-signal,tiny-noise", "--epochs", "6", "--lr", "3e-3",
              "--batch_size", "16", "--hidden_dim", "32", "--dropout", "0.1", "--num_workers", "2", "--no_plots"]


def _setup(env, n_labelled=15):
    """A low-resource split of the tiny set (n labelled, the rest of its training list as the pool) and a
    teacher: right with confidence 5 on even pool positions, wrong with confidence 1 on odd ones."""
    from dataloader.splits import low_resource_split
    base = os.path.join(str(env.tmp), "train_lst", "tiny", "seed0.json")
    split, pool, truth = low_resource_split(base, n_labelled, 0, str(env.tmp / "lab.json"), "TINY")
    rows = []
    for i, name in enumerate(pool):
        true = truth[name]
        lab = true if i % 2 == 0 else CLASSES[(CLASSES.index(true) + 1) % 3]
        rows.append({"name": name, "label": lab, "scores": {c: float(c == lab) for c in CLASSES},
                     "confidence": 5 if i % 2 == 0 else 1, "description": "", "teacher": "t"})
    teacher = env.tmp / "teacher.jsonl"
    teacher.write_text("".join(json.dumps(r) + "\n" for r in rows))
    truth_csv = env.tmp / "truth.csv"
    pd.DataFrame({"name": list(truth), "discrete": list(truth.values())}).to_csv(truth_csv, index=False)
    return split, pool, truth, str(teacher), str(truth_csv)


@pytest.fixture
def lowres(tiny, monkeypatch):
    import importlib.util
    import sys
    spec = importlib.util.spec_from_file_location("bench_low_resource",
                                                  os.path.join(os.path.dirname(__file__), "..", "bench",
                                                               "low_resource.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setitem(sys.modules, "bench_low_resource", mod)
    return tiny


def test_low_resource_split_is_stratified_and_disjoint(lowres):
    split, pool, truth, _, _ = _setup(lowres, 15)
    doc = read_split_json(split, CLASSES)
    lab = doc["train_info"]["names"]
    assert len(lab) == 15 and not set(lab) & set(pool)
    assert not set(pool) & set(doc["valid_info"]["names"])
    assert len(lab) + len(pool) == 96  # the tiny seed-0 training list
    counts = pd.Series(doc["train_info"]["emos"]).value_counts()
    assert counts.min() >= 4  # stratified: 15 over 3 roughly balanced classes


def test_two_stage_teacher_pseudo_labels(lowres):
    split, pool, truth, teacher, truth_csv = _setup(lowres)
    out = str(lowres.tmp / "semi")
    res = semi.two_stage("tiny", 0, split, TRAIN_ARGS, "teacher", {"min_conf": 4}, [teacher], pool, truth_csv,
                         out, device="cpu")
    # the teacher is confident exactly on even pool positions, where it is right
    assert res["n_pseudo"] == len(pool[::2]) and res["precision"] == pytest.approx(1.0)
    doc = read_split_json(res["pseudo_split"], CLASSES)
    tr = doc["train_info"]
    assert len(tr["names"]) == 15 + len(pool[::2])
    assert tr["sources"][:15] == ["labelled"] * 15 and set(tr["sources"][15:]) == {"teacher"}
    assert tr["names"][15:] == pool[::2]
    assert [tr["emos"][15 + i] for i in range(3)] == [truth[n] for n in pool[::2][:3]]
    for key in ("stage1", "stage2"):
        assert 0 <= res[key]["test_f1"] <= 1
    report = pd.read_csv(os.path.join(out, "pseudo_teacher_report.csv"))
    assert report.set_index("group").loc["all", "count"] == len(pool[::2])


def test_pseudo_labels_never_reach_validation_or_test(lowres):
    split, pool, truth, teacher, truth_csv = _setup(lowres)
    doc = read_split_json(split, CLASSES)
    valid = doc["valid_info"]["names"]
    test = list(pd.read_csv(lowres.tmp / "test.csv")["name"])
    # a careless pool that holds validation and test names: they are dropped before any selection
    leaky_pool = pool + valid[:5] + test[:5]
    res = semi.two_stage("tiny", 0, split, TRAIN_ARGS, "student", {"top_k": 1000}, [teacher], leaky_pool,
                         truth_csv, str(lowres.tmp / "semi2"), device="cpu")
    names = read_split_json(res["pseudo_split"], CLASSES)["train_info"]["names"]
    assert not set(names) & (set(valid) | set(test))
    assert res["n_pseudo"] == len(pool)  # the student takes the whole (clean) pool with top_k 1000
    frame = pd.DataFrame({"name": [valid[0]], "emo": ["happy"], "source": ["x"], "confidence": [1.0],
                          "weight": [1.0]})
    with pytest.raises(DataError, match="validation/test"):
        semi.write_pseudo_split(str(lowres.tmp / "bad.json"), doc, frame, forbidden=set(valid))


def test_acl_loop_resumes_after_interruption(lowres, monkeypatch):
    split, pool, truth, teacher, truth_csv = _setup(lowres)
    out = str(lowres.tmp / "acl")
    kw = {"theta": 0.9, "top_k": 8}
    real = semi.train_run
    calls = []

    def crashing(*a, **k):
        calls.append(a[3])
        if len(calls) == 3:  # stage1, acl_iter1, then the run for iteration 2 dies
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(semi, "train_run", crashing)
    with pytest.raises(KeyboardInterrupt):
        semi.acl_loop("tiny", 0, split, TRAIN_ARGS, [teacher], pool, truth_csv, out, max_iter=3, acl_kw=kw,
                      device="cpu")
    state = json.load(open(os.path.join(out, "acl_state.json")))
    assert len(state["history"]) == 2 and not state["done"]
    stage1_ckpt = os.path.join(out, "tiny", "seed0", "auto_attention", "stage1", "best.pth")
    mtime = os.path.getmtime(stage1_ckpt)
    calls.clear()
    monkeypatch.setattr(semi, "train_run", real)
    res = semi.acl_loop("tiny", 0, split, TRAIN_ARGS, [teacher], pool, truth_csv, out, max_iter=3, acl_kw=kw,
                        device="cpu")
    assert os.path.getmtime(stage1_ckpt) == mtime  # finished runs are not trained again
    hist = res["history"]
    assert [h["iteration"] for h in hist][:2] == [0, 1]
    # per iteration: at most top_k per class; p_t decays 0.6, 0.5, 0.4
    for h in hist:
        assert all(v <= 8 for v in h["counts"].values())
    assert [round(h["p_t"], 6) for h in hist] == [0.6, 0.5, 0.4][:len(hist)]
    taken = [n for n in read_split_json(os.path.join(out, f"acl_iter{len(hist)}.json"), CLASSES)["train_info"]
             ["names"][15:]] if hist[-1]["taken"] else []
    assert len(taken) == len(set(taken))  # a sample is moved to the labelled pool once
    assert res["n_pseudo"] == sum(h["taken"] for h in hist)
    assert 0 <= res["stage2"]["test_f1"] <= 1


def test_acl_rerun_after_a_round_that_took_no_sample_finishes(lowres):
    """A round that takes nothing ends the loop without writing its next split list; a rerun (the README's own
    resume) must finish from the model that round trained, not look for acl_iter<t+1>.json."""
    split, pool, truth, teacher, truth_csv = _setup(lowres)
    out = str(lowres.tmp / "acl_none")
    kw = {"theta": 1.5, "p_init": 0.6}  # no refined score reaches 1.5: the first round takes nothing
    first = semi.acl_loop("tiny", 0, split, TRAIN_ARGS, [teacher], pool, truth_csv, out, max_iter=3, acl_kw=kw,
                          device="cpu")
    state = json.load(open(os.path.join(out, "acl_state.json")))
    assert state["done"] and [h["taken"] for h in state["history"]] == [0]
    assert not os.path.exists(os.path.join(out, "acl_iter1.json"))
    ckpt = os.path.join(out, "tiny", "seed0", "auto_attention", "stage1", "best.pth")
    mtime = os.path.getmtime(ckpt)
    again = semi.acl_loop("tiny", 0, split, TRAIN_ARGS, [teacher], pool, truth_csv, out, max_iter=3, acl_kw=kw,
                          device="cpu")
    assert os.path.getmtime(ckpt) == mtime  # nothing trained again
    assert again["stage2"] == first["stage2"] and again["n_pseudo"] == 0 and again["history"] == first["history"]
    # a state file of an earlier version (no final_iteration) resumes the same way
    del state["final_iteration"]
    json.dump(state, open(os.path.join(out, "acl_state.json"), "w"))
    assert semi.acl_loop("tiny", 0, split, TRAIN_ARGS, [teacher], pool, truth_csv, out, max_iter=3, acl_kw=kw,
                         device="cpu")["stage2"] == first["stage2"]


def test_a_missing_split_list_gets_the_fix_that_fits_it(tmp_path):
    with pytest.raises(DataError, match="build_splits.py --dataset <name>` --kfold K"):
        read_split_json(str(tmp_path / "fold3.json"))
    with pytest.raises(DataError, match="rerun the command that writes it") as e:
        read_split_json(str(tmp_path / "acl_iter2.json"))
    assert "build_splits" not in str(e.value)


def test_two_stage_rerun_with_other_train_args_is_refused_never_reports_the_old_f1(lowres):
    split, pool, truth, teacher, truth_csv = _setup(lowres)
    out = str(lowres.tmp / "semi_rerun")
    first = semi.two_stage("tiny", 0, split, TRAIN_ARGS, "teacher", {"min_conf": 4}, [teacher], pool, truth_csv,
                           out, device="cpu")
    # the same command again: the finished runs of the same settings are reused, the same figures come back
    again = semi.two_stage("tiny", 0, split, TRAIN_ARGS, "teacher", {"min_conf": 4}, [teacher], pool, truth_csv,
                           out, device="cpu")
    assert again["stage2"]["test_f1"] == first["stage2"]["test_f1"]
    # other training settings: stage 1 of these settings is not there, and the old one is not reported as it
    other = [a if a != "6" else "3" for a in TRAIN_ARGS]  # --epochs 3
    with pytest.raises(DataError, match=r"other settings \(epochs: 6 there, 3 now"):
        semi.two_stage("tiny", 0, split, other, "teacher", {"min_conf": 4}, [teacher], pool, truth_csv, out,
                       device="cpu")
    assert json.load(open(os.path.join(out, "tiny", "seed0", "auto_attention", "stage1", "summary.json")))[
        "valid_f1"] == first["stage1"]["valid_f1"]  # the old run is left as it was


def test_low_resource_bench_runs_on_a_data_set_without_a_preset(lowres, capsys):
    """Any registered data set: no preset, so --feat, --teachers and --train_args are given (and asked for)."""
    import bench_low_resource as lr

    _, _, _, teacher, _ = _setup(lowres)
    root = str(lowres.tmp / "lowres")
    assert lr.main(["--dataset", "tiny", "--n", "15", "--seeds", "0", "--save_root", root]) == 2
    err = capsys.readouterr().err
    assert "has no preset" in err and "--feat, --teachers, --train_args" in err
    assert lr.main(["--dataset", "nosuch", "--save_root", root]) == 2
    assert "unknown --dataset 'nosuch'" in capsys.readouterr().err
    args = ["--dataset", "tiny", "--n", "15", "--seeds", "0", "--strategies", "none,teacher,acl", "--max_iter", "1",
            "--feat", "tiny-signal,tiny-noise", "--teachers", teacher, "--device", "cpu", "--save_root", root,
            "--threads", "1", "--train_args", " ".join(TRAIN_ARGS[4:])]
    assert lr.main(args) == 0
    out = capsys.readouterr().out
    table = pd.read_csv(os.path.join(root, "table.csv"))
    assert set(table["strategy"]) == {"none", "teacher", "acl"} and (table["n"] == 15).all()
    assert "best gain over none at N=15:" in out
    assert lr.main(args) == 0  # a rerun reads the finished runs
    assert pd.read_csv(os.path.join(root, "table.csv"))["f1_mean"].tolist() == table["f1_mean"].tolist()


def test_semi_draws_the_labelled_few_on_any_data_set(lowres, capsys):
    import semi as semi_script

    _, _, _, teacher, _ = _setup(lowres)
    out = str(lowres.tmp / "semi_lr")
    assert semi_script.main(["--mode", "two_stage", "--strategy", "teacher", "--dataset", "tiny", "--seed", "0",
                             "--n_labelled", "15", "--teachers", teacher, "--out", out, "--device", "cpu",
                             "--train_args", " ".join(TRAIN_ARGS[2:])]) == 0
    lab = read_split_json(os.path.join(out, "labelled.json"), CLASSES)
    base = read_split_json(os.path.join(str(lowres.tmp), "train_lst", "tiny", "seed0.json"), CLASSES)
    truth = pd.read_csv(os.path.join(out, "pool_truth.csv"))
    assert len(lab["train_info"]["names"]) == 15 and len(truth) == len(base["train_info"]["names"]) - 15
    assert not set(truth["name"]) & set(lab["train_info"]["names"])
    assert lab["valid_info"]["names"] == base["valid_info"]["names"]
    res = json.load(open(os.path.join(out, "result.json")))
    assert res["n_pseudo"] > 0 and res["precision"] is not None  # measured against the held-back labels
    assert "pseudo labels (precision" in capsys.readouterr().out


def test_issue23_low_resource_headline_is_chosen_by_validation_f1(lowres):
    import bench_low_resource as lr

    rows = [{"n": 15, "seed": s, "strategy": st, "valid_f1": v, "test_f1": t}
            for s in (0, 1)
            for st, v, t in [("none", 0.50, 0.40), ("teacher", 0.70, 0.45), ("acl", 0.60, 0.55)]]
    rows.append({"n": 30, "seed": 0, "strategy": "acl", "valid_f1": 0.99, "test_f1": 0.99})  # another N
    best, gain, test = lr.best_gain(rows, 15)
    # acl has the best test F1, but teacher the best validation F1: the headline is teacher's test figure
    assert best == "teacher" and test == pytest.approx(0.45) and gain == pytest.approx(5.0)
    best, gain, _ = lr.best_gain([r for r in rows if r["strategy"] == "none"], 15)
    assert best is None and gain != gain  # nothing to compare: nan


def test_issue23_pseudo_label_refuses_a_teacher_that_covers_none_of_the_pool(lowres, capsys):
    from conftest import load_script
    pl = load_script("pseudo_label.py")
    split, pool, _, _, _ = _setup(lowres)
    pool_csv = lowres.tmp / "pool.csv"
    pd.DataFrame({"name": pool}).to_csv(pool_csv, index=False)
    rows = [{"name": f"elsewhere_{i}", "label": CLASSES[i % 3], "scores": {c: float(c == CLASSES[i % 3])
                                                                             for c in CLASSES},
             "confidence": 5, "description": "", "teacher": "t"} for i in range(10)]
    teacher = lowres.tmp / "other_teacher.jsonl"
    teacher.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = str(lowres.tmp / "pl" / "pseudo.json")
    assert pl.main(["--dataset", "tiny", "--split", split, "--unlabeled", str(pool_csv), "--strategy", "teacher",
                    "--teachers", str(teacher), "--out", out, "--threads", "1"]) == 2
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "0% coverage" in lines[0]
    assert str(teacher) in err and str(pool_csv) in err and "do not match" in err
    assert not os.path.exists(out) and not os.path.exists(os.path.dirname(out))
