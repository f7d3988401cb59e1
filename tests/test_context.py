"""Conversation context: the dialogue index, batches of whole dialogues, the context layer and context runs."""

import os

import numpy as np
import pandas as pd
import pytest
import torch

import test as test_script
from conftest import CLASSES, train_args
from dataloader import DialogueIndex, SampleSet, load_features
from models import create_model, list_models
from common.errors import DataError
from engine.trainer import evaluate_run, load_run, train


def _dia_args(env, *extra):
    return train_args(env, "--dataset", "dia", "--feat", "dia-cue", "--epochs", "15", "--batch_size", "32",
                      *extra)


# ------------------------------------------------------------------------------------------- the index


def test_dialogue_index_sorts_by_order_and_keeps_unknown_names_alone(tmp_path):
    pd.DataFrame({"name": ["a2", "a0", "b0", "a1", "b1"], "dialogue": ["A", "A", "B", "A", "B"],
                  "order": [2, 0, 0, 1, 1]}).to_csv(tmp_path / "l.csv", index=False)
    pd.DataFrame({"name": ["c0"]}).to_csv(tmp_path / "names_only.csv", index=False)  # no dialogue column: skipped
    index = DialogueIndex.from_csvs([str(tmp_path / "l.csv"), str(tmp_path / "names_only.csv")], "dialogue")
    assert len(index) == 5 and "c0" not in index
    names = ["b1", "x", "a1", "a2", "b0", "a0", "y"]
    groups = index.groups(names)
    assert [[names[p] for p in g] for g in groups] == [["b0", "b1"], ["x"], ["a0", "a1", "a2"], ["y"]]
    # only the names of the list: a dialogue cut short by the list keeps only its listed utterances
    assert [[n for n in np.array(["a2", "b0"])[g]] for g in index.groups(["a2", "b0"])] == [["a2"], ["b0"]]
    pd.DataFrame({"name": ["a0"], "dialogue": ["B"], "order": [0]}).to_csv(tmp_path / "clash.csv", index=False)
    with pytest.raises(DataError, match="another dialogue"):
        DialogueIndex.from_csvs([str(tmp_path / "l.csv"), str(tmp_path / "clash.csv")], "dialogue")
    with pytest.raises(DataError, match="does not exist"):
        DialogueIndex.from_csvs([str(tmp_path / "nowhere.csv")], "dialogue")


def test_dialogue_batches_hold_whole_dialogues_once_each_in_a_seeded_order(dialogues):
    names = dialogues.labels["name"].tolist()[::-1]  # reversed: the index, not the list, gives the order
    samples = SampleSet(load_features(["dia-cue"]), names, np.arange(len(names)) % 3)
    index = DialogueIndex.for_dataset({"label_csv": str(dialogues.tmp / "dia_labels.csv"),
                                       "test_label_csv": str(dialogues.tmp / "dia_test_labels.csv"),
                                       "group_col": "dialogue"})
    samples.set_dialogues(index.groups(names))
    batches = list(samples.iter_batches(20, shuffle=True, seed=1))
    assert len(batches) == samples.num_batches(20, shuffle=True, seed=1)
    seen = np.concatenate([b["idx"] for b in batches])
    assert np.array_equal(np.sort(seen), np.arange(len(names)))  # every utterance exactly once
    label_of = dict(zip(dialogues.labels["name"], dialogues.labels["dialogue"]))
    order_of = dict(zip(dialogues.labels["name"], dialogues.labels["order"]))
    for b in batches:
        assert len(b["idx"]) <= 20 or b["dialog_index"].shape[0] == 1  # a long dialogue may fill a batch alone
        di, mask = b["dialog_index"].numpy(), b["dialog_mask"].numpy()
        assert np.array_equal(np.sort(di[mask]), np.arange(len(b["idx"])))  # each flat position once
        assert (di[~mask] == -1).all()
        for row, m in zip(di, mask):
            members = [names[b["idx"][p]] for p in row[m]]
            assert len({label_of[n] for n in members}) == 1  # one dialogue per row
            assert [order_of[n] for n in members] == sorted(order_of[n] for n in members)
            assert len(members) == sum(label_of[n] == label_of[members[0]] for n in names)  # the whole dialogue
        assert torch.equal(b["labels"], samples.labels[torch.as_tensor(b["idx"])])
    again = np.concatenate([b["idx"] for b in samples.iter_batches(20, shuffle=True, seed=1)])
    other = np.concatenate([b["idx"] for b in samples.iter_batches(20, shuffle=True, seed=2)])
    assert np.array_equal(seen, again) and not np.array_equal(seen, other)
    samples.set_dialogues(None)  # back to single utterances: the utterance path as before
    plain = list(samples.iter_batches(20))
    assert "dialog_index" not in plain[0] and np.array_equal(plain[0]["idx"], np.arange(20))
    with pytest.raises(ValueError, match="exactly once"):
        samples.set_dialogues([np.arange(5)])


# ------------------------------------------------------------------------------------------- the layer


def _model(name, **kw):
    torch.manual_seed(0)
    cfg = dict(hidden_dim=16, seq_dim=8, seq_heads=2, max_len=16, context=1, context_hidden=8)
    cfg.update(kw)
    return create_model(name, [12, 7], [False, False], 3, **cfg)


def _dialog_index(lengths):
    width, start, rows = max(lengths), 0, []
    for k in lengths:
        rows.append(list(range(start, start + k)) + [-1] * (width - k))
        start += k
    index = torch.tensor(rows)
    return index, index >= 0


@pytest.mark.parametrize("level", ["fused", "expert", "both"])
@pytest.mark.parametrize("name", list_models())
def test_context_never_crosses_a_dialogue_and_padding_changes_nothing(name, level):
    model = _model(name, context=2, context_level=level).eval()
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(10, 12, generator=g), torch.randn(10, 7, generator=g)]
    with torch.no_grad():
        both = model(feats, None, **dict(zip(("dialog_index", "dialog_mask"), _dialog_index([3, 7]))))["logits"]
        changed = [x.clone() for x in feats]
        for x in changed:  # another dialogue's features change completely
            x[3:] = torch.randn(7, x.shape[1], generator=g) * 5
        other = model(changed, None, **dict(zip(("dialog_index", "dialog_mask"), _dialog_index([3, 7]))))["logits"]
        alone = model([x[:3] for x in feats], None,
                      **dict(zip(("dialog_index", "dialog_mask"), _dialog_index([3]))))["logits"]
        singles = model(feats, None)["logits"]  # no dialogues: every utterance alone
    assert torch.allclose(both[:3], other[:3], atol=1e-5)  # dialogue 1 is blind to dialogue 2
    assert not torch.allclose(both[3:], other[3:], atol=1e-3)
    assert torch.allclose(both[:3], alone, atol=1e-5)  # padded to 7 or not: the same output
    assert not torch.allclose(both[:3], singles[:3], atol=1e-4)  # the neighbours do matter


@pytest.mark.parametrize("name", list_models())
def test_every_model_with_context_forward_backward_and_its_own_losses(name):
    model = _model(name)
    base = _model(name, context=0)
    assert model.config["context"] == 1 and "context" not in base.config
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(9, 12, generator=g), torch.randn(9, 7, generator=g)]
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
    index, mask = _dialog_index([4, 1, 4])
    out = model(feats, None, dialog_index=index, dialog_mask=mask)
    assert out["logits"].shape == (9, 3) and out["utterance_logits"].shape == (9, 3)
    assert torch.isfinite(out["logits"]).all()
    loss = model.loss(out, labels)
    # the wrapped model's own loss (moe's head CE, KL, contrastive; mmim's MI bounds) is part of it
    own = model.base.loss({**out, "logits": out["utterance_logits"]}, labels)
    assert float(loss.detach()) > float(own.detach()) > 0
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert float(sum(g.abs().sum() for n, g in grads.items() if n.startswith("context_layer."))) > 0
    assert float(sum(g.abs().sum() for n, g in grads.items() if n.startswith("base.encoders."))) > 0
    with pytest.raises(ValueError, match="context"):
        _model(name, context=-1)


@pytest.mark.parametrize("name", list_models())
def test_expert_level_context_feeds_the_models_own_fusion(name):
    g = torch.Generator().manual_seed(2)
    feats = [torch.randn(9, 12, generator=g), torch.randn(9, 7, generator=g)]
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
    index, mask = _dialog_index([4, 1, 4])
    expert = _model(name, context_level="expert")
    assert expert.context_layer is None and len(expert.expert_context) == 2
    out = expert(feats, None, dialog_index=index, dialog_mask=mask)
    assert out["logits"].shape == (9, 3) and torch.isfinite(out["logits"]).all() and "utterance_logits" not in out
    assert expert.base.expert_context is None  # the hook lasts one call only
    loss = expert.loss(out, labels)
    assert float(loss.detach()) == pytest.approx(float(expert.base.loss(out, labels).detach()))  # the model's own
    loss.backward()
    grads = {n: p.grad for n, p in expert.named_parameters() if p.requires_grad}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert all(float(sum(g.abs().sum() for n, g in grads.items() if n.startswith(f"expert_context.{i}."))) > 0
               for i in range(2))
    # the wrapped model alone (an utterance-level run's weights) still loads into the expert-level model's base
    expert.base.load_state_dict(_model(name, context=0).state_dict())
    both = _model(name, context_level="both")
    out = both(feats, None, dialog_index=index, dialog_mask=mask)
    assert out["utterance_logits"].shape == (9, 3) and both.config["context_level"] == "both"
    both.loss(out, labels).backward()
    assert all(p.grad is not None for n, p in both.named_parameters() if n.startswith(("expert_context.", "head.")))
    with pytest.raises(ValueError, match="context_level"):
        _model(name, context_level="speaker")


# ------------------------------------------------------------------------------------------- runs


def test_context_beats_no_context_where_the_answer_is_in_the_neighbours(dialogues):
    alone = train(_dia_args(dialogues, "--run_name", "alone", "--test"))
    ctx = train(_dia_args(dialogues, "--run_name", "ctx", "--test", "--context", "1", "--epochs", "30"))
    assert alone["test_f1"] < 0.75  # own features: the cue, or a guess
    assert ctx["test_f1"] > 0.9 and ctx["test_f1"] > alone["test_f1"] + 0.2
    per_expert = train(_dia_args(dialogues, "--run_name", "ctx_expert", "--test", "--context", "1", "--epochs", "30",
                                 "--context_level", "expert"))
    assert per_expert["test_f1"] > 0.9  # the neighbours reach the head through the expert states as well
    log = open(os.path.join(ctx["run_dir"], "train.log")).read()
    assert "context: valid:" in log and "dialogues" in log
    # an utterance-level run initialises a context run's wrapped model
    warm = train(_dia_args(dialogues, "--run_name", "warm", "--context", "1", "--epochs", "1", "--model_pretrain",
                           os.path.join(alone["run_dir"], "best.pth")))
    assert warm["valid_f1"] > 0


def test_context_run_saves_loads_and_predicts_in_the_list_order(dialogues, capsys):
    s = train(_dia_args(dialogues, "--test", "--context", "2", "--model", "moe", "--epochs", "4",
                        "--context_level", "both"))
    run = s["run_dir"]
    model, ckpt = load_run(run)
    assert model.needs_dialogues and ckpt["model"] == "moe" and ckpt["model_config"]["context"] == 2
    assert ckpt["model_config"]["context_level"] == "both" and model.expert_context is not None
    assert any(k.startswith("context_layer.gru.") for k in ckpt["state_dict"])
    test_pred = pd.read_csv(os.path.join(run, "test_pred.csv"))
    names = pd.read_csv(dialogues.tmp / "dia_test.csv")["name"].tolist()
    assert test_pred["name"].tolist() == names
    labels = str(dialogues.tmp / "dia_test_labels.csv")
    res = evaluate_run(run, str(dialogues.tmp / "dia_test.csv"), labels, device="cpu")
    probs = [f"prob_{c}" for c in CLASSES]
    assert np.allclose(res["predictions"][probs].to_numpy(), test_pred[probs].to_numpy(), atol=1e-5)
    assert res["f1"] == pytest.approx(s["test_f1"])
    # the same names in another order: the same prediction for each name
    shuffled = list(np.random.default_rng(0).permutation(names))
    again = evaluate_run(run, shuffled, device="cpu")["predictions"].set_index("name").loc[names, probs]
    assert np.allclose(again.to_numpy(), test_pred[probs].to_numpy(), atol=1e-5)
    # the validation predictions come in the split's order
    valid = pd.read_csv(os.path.join(run, "valid_pred.csv"))
    split = pd.read_json(dialogues.tmp / "train_lst" / "dia" / "seed0.json")
    assert valid["name"].tolist() == split["valid_info"]["names"]
    # test.py, with an explicit dialogue table too
    out = str(dialogues.tmp / "pred.csv")
    assert test_script.main(["--run", run, "--names", str(dialogues.tmp / "dia_test.csv"), "--labels", labels,
                             "--out", out, "--device", "cpu", "--dialogue_csv", labels]) == 0
    assert np.allclose(pd.read_csv(out)[probs].to_numpy(), test_pred[probs].to_numpy(), atol=1e-5)
    assert f"TEST: acc:{s['test_acc']:.4f}" in capsys.readouterr().out


def test_context_model_trains_on_a_data_set_without_dialogue_ids(tiny):
    s = train(train_args(tiny, "--context", "1", "--run_name", "ctx", "--test"))
    assert s["valid_f1"] > 0.9 and s["test_f1"] > 0.9  # each utterance its own dialogue: its features decide
    log = open(os.path.join(s["run_dir"], "train.log")).read()
    import re
    n_utt, n_dia = re.search(r"context: train: (\d+) utterances in (\d+) dialogues", log).groups()
    assert n_utt == n_dia  # every utterance alone
    pred = pd.read_csv(os.path.join(s["run_dir"], "test_pred.csv"))
    assert len(pred) == 30 and {"weight_tiny-signal", "weight_tiny-noise"} <= set(pred.columns)


def test_own_state_masking_hides_utterances_only_while_training_and_never_a_lone_one():
    from models.context import DialogueContext
    torch.manual_seed(0)
    layer = DialogueContext(8, 16, context=1, dropout=0.0, mask=0.5)
    plain = DialogueContext(8, 16, context=1, dropout=0.0, mask=0.0)
    plain.load_state_dict(layer.state_dict())
    h = torch.randn(21, 8)
    index, mask = _dialog_index([1, 20])  # a lone utterance, then a dialogue of 20
    with torch.no_grad():
        ref = plain.eval()(h, index, mask)
        assert torch.equal(layer.eval()(h, index, mask), ref)  # at test time nothing is hidden
        layer.train()
        hidden_any = False
        for _ in range(5):
            out = layer(h, index, mask)
            assert torch.allclose(out[0], ref[0], atol=1e-6)  # no neighbours: never hidden
            hidden_any |= not torch.allclose(out[1:], ref[1:], atol=1e-4)
        assert hidden_any
    with pytest.raises(ValueError, match="context_mask"):
        DialogueContext(8, 16, context=1, mask=1.0)


def test_split_list_may_carry_the_dialogues_and_pseudo_rows_keep_its_lists(dialogues):
    from dataloader.files import read_split_json, write_split_json
    from pseudo.drivers import write_pseudo_split
    split = read_split_json(str(dialogues.tmp / "train_lst" / "dia" / "seed0.json"))
    meta = dialogues.labels.set_index("name")
    for part in ("train_info", "valid_info"):
        names = split[part]["names"]
        split[part]["dialogues"] = [int(meta.loc[n, "dialogue"][1:]) for n in names]  # ints, as JSON may hold them
        split[part]["orders"] = [int(meta.loc[n, "order"]) for n in names]
    path = str(dialogues.tmp / "with_dialogues.json")
    write_split_json(path, split["train_info"], split["valid_info"])
    # the label table without its dialogue column: the split list alone gives the dialogues
    labels = pd.read_csv(dialogues.tmp / "dia_labels.csv").drop(columns=["dialogue", "order"])
    labels.sample(frac=1, random_state=0).to_csv(dialogues.tmp / "dia_labels.csv", index=False)  # rows shuffled
    s = train(_dia_args(dialogues, "--split", path, "--context", "1", "--epochs", "30", "--run_name", "from_split"))
    log = open(os.path.join(s["run_dir"], "train.log")).read()
    assert "context: valid:" in log and "0 of one utterance" in log and "with_dialogues.json (train_info)" in log
    assert s["valid_f1"] > 0.9  # the neighbours carry the answer, so the dialogues were found and ordered
    # a split list with a dialogue list of the wrong length is refused, naming the part
    bad = dict(split["train_info"], dialogues=split["train_info"]["dialogues"][:-1])
    write_split_json(str(dialogues.tmp / "bad.json"), bad, split["valid_info"])
    with pytest.raises(DataError, match="train_info.*dialogues"):
        read_split_json(str(dialogues.tmp / "bad.json"))
    # pseudo-labelled rows extend the lists (no dialogue of their own in the split list)
    frame = pd.DataFrame({"name": ["u1", "u2"], "emo": [CLASSES[0], CLASSES[1]], "source": "teacher",
                          "confidence": [5.0, 4.0], "weight": [1.0, 1.0]})
    out = write_pseudo_split(str(dialogues.tmp / "pseudo.json"), read_split_json(path), frame)
    doc = read_split_json(out)
    assert doc["train_info"]["dialogues"][-2:] == ["", ""] and len(doc["train_info"]["orders"]) == len(
        doc["train_info"]["names"])
    index = DialogueIndex().add_split(doc, out)
    assert "u1" not in index and len(index) == len(split["train_info"]["names"]) + len(split["valid_info"]["names"])


def test_bclstm_reference_reads_whole_dialogues_and_learns_from_neighbours(dialogues, tmp_path):
    from conftest import make_dialogues
    from conftest import load_script
    ref = load_script("bench/bclstm_reference.py")
    (train, test), n_classes = ref.load_data("dia", ["dia-cue"], log=lambda *a: None)
    x, y, mask = train
    assert n_classes == 3 and x["dia-cue"].shape[0] == 45 and x["dia-cue"].shape[2] == 6
    assert int(mask.sum() + test[2].sum()) == len(dialogues.labels)
    first = dialogues.labels.iloc[:int(mask[0].sum())]  # row 0: the first dialogue, in order
    assert np.allclose(x["dia-cue"][0, :len(first)].numpy(),
                       np.stack([np.load(dialogues.root / "dia-cue" / f"{n}.npy") for n in first["name"]]))
    assert float(x["dia-cue"][0, len(first):].abs().sum()) == 0  # padding is zeros
    # learning: 300 dialogues whose answer lies only in the neighbours (an utterance alone: about half right)
    labels = make_dialogues(str(tmp_path / "big"), n_dialogues=300, seed=1)

    def tensors(dia):
        groups = [labels.index[labels["dialogue"] == d].to_numpy() for d in dia]
        feats = np.stack([np.load(tmp_path / "big" / "dia-cue" / f"{n}.npy") for n in labels["name"]])
        width = max(len(g) for g in groups)
        xs, ys, ms = np.zeros((len(groups), width, 6), np.float32), np.zeros((len(groups), width), np.int64), \
            np.zeros((len(groups), width), np.float32)
        for i, g in enumerate(groups):
            xs[i, :len(g)], ms[i, :len(g)] = feats[g], 1
            ys[i, :len(g)] = [CLASSES.index(c) for c in labels.loc[g, "discrete"]]
        return {"dia-cue": torch.from_numpy(xs)}, torch.from_numpy(ys), torch.from_numpy(ms)

    dia = sorted(labels["dialogue"].unique())
    acc, epochs = ref.run_seed((tensors(dia[:240]), tensors(dia[240:])), 3, seed=0, device="cpu", max_epochs=60,
                               lstm_width=32, log=lambda *a: None)
    assert 1 <= epochs <= 60 and acc > 0.85
