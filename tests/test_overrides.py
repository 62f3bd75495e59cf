"""--set KEY=VALUE (graphspec/overrides.py): typed values, keys checked with a did-you-mean, values
checked as the spec's own, the resolved spec recorded in the run directory and used by the verbs
that read a checkpoint back."""
import json
import os

import numpy as np
import pytest

from conftest import ROOT, main
from graphspec import SpecError, UserError
from graphspec import overrides as O
from graphspec.spec import read

LSTM = os.path.join(ROOT, "specs", "lstm.yaml")


def test_values_have_the_type_they_would_have_in_the_file():
    assert O.parse("dims.H=64").value == 64
    assert O.parse("train.lr=1e-3").value == 0.001
    assert O.parse("train.optimizer=sgd").value == "sgd"
    assert O.parse("train.len={t: 50}").value == {"t": 50}
    assert O.parse("params.W.init=normal(0.2)").value == "normal(0.2)"
    assert O.parse("nodes.h=tanh(a)").path == ("nodes", "h")


def test_the_overridden_spec_is_the_spec_with_those_values():
    g, text = O.load(LSTM, ["dims.H=16", "data.length=12", "train.clip=0.5", "train.len.t=20"])
    assert g.dims["H"] == 16
    assert g.data == {"task": "adding", "length": 12}
    assert g.train["clip"] == 0.5 and g.train["len"] == {"t": 20} and g.train["lr"] == 0.005
    again = read(LSTM, text).data            # the resolved text says the same
    assert again["dims"] == {"H": 16} and again["train"]["clip"] == 0.5
    assert text.startswith(f"# {LSTM} with overrides") and "# --set dims.H=16\n" in text
    _, plain = O.load(LSTM, [])
    assert plain == open(LSTM).read()        # no override: the file's own text, comments and all


@pytest.mark.parametrize("flag, message", [
    ("train.cilp=1", "--set train.cilp=1: train has no key 'cilp'; did you mean 'clip'? (keys: optimizer, lr, "
                     "schedule, decay, decay_every, momentum, weight_decay, clip, batch, steps, per_example, seed, "
                     "eval_every, len, target, warmup, stop_at_target, patience, keep_best)"),
    ("dims.HH=3", "--set dims.HH=3: the spec has no dim 'HH'; did you mean 'H'? (dims: H)"),
    ("params.V_0=3", "--set params.V_0=3: the spec has no param 'V_0'; did you mean 'V_o'? (params: V_o, c)"),
    ("trian.lr=1", "--set trian.lr=1: the spec has no key 'trian'; did you mean 'train'? (keys: name, doc, data, "
                   "dims, blocks, inputs, params, nodes, loss, outputs, train, decode)"),
    ("data.length.x=3", "--set data.length.x=3: data.length is an integer, not a mapping with keys"),
    ("train.lr", "--set train.lr: give KEY=VALUE, e.g. --set train.lr=0.001 or --set dims.H=128"),
    ("train lr=1", "--set train lr=1: 'train lr' is not a dotted path of names like train.lr or dims.H"),
    ("train.lr=", "--set train.lr=: an empty value; give KEY=VALUE (quote '' for an empty string)"),
    ("train.lr=[1", "--set train.lr=[1: the value is not YAML (expected ',' or ']', but got '<stream end>'); "
                    "quote it in the shell if it holds spaces"),
])
def test_a_wrong_key_or_form_is_one_line(flag, message):
    with pytest.raises(UserError) as e:
        O.load(LSTM, [flag])
    assert str(e.value) == message


@pytest.mark.parametrize("flag, message", [
    ("train.lr=-1", "--set train.lr=-1: train/lr: -1 is less than or equal to the minimum of 0"),
    ("train.batch=1.5", "--set train.batch=1.5: train/batch: 1.5 is not of type 'integer'"),
    ("dims.H=0", "--set dims.H=0: dim 'H' must be a positive integer or 'data', got 0"),
    ("train.optimizer=adm", "--set train.optimizer=adm: train/optimizer: 'adm' is not one of sgd, momentum, adam; "
                            "did you mean 'adam'?"),
    ("nodes.p=c + V_o @ last(hh)", "--set nodes.p=c + V_o @ last(hh):1:16: unknown name 'hh'; did you mean 'h'?"),
])
def test_a_value_gets_the_checks_it_would_get_in_the_file(flag, message):
    with pytest.raises(SpecError) as e:
        O.load(LSTM, [flag])
    assert str(e.value) == message


def test_sweep_values_split_on_commas_outside_brackets():
    assert O.split_values("1,2, 3") == ["1", "2", "3"]
    assert O.split_values("{t: 5, s: 6},normal(0.1),'a,b'") == ["{t: 5, s: 6}", "normal(0.1)", "'a,b'"]
    assert [o.value for o in O.parse_sweep("train.lr=0.1,0.01")] == [0.1, 0.01]
    with pytest.raises(UserError, match=r"^--set train.lr=0.1,0.1: a value is listed twice$"):
        O.parse_sweep("train.lr=0.1,0.1")
    assert O.fingerprint(["train.lr=0.010"]) == O.fingerprint(["train.lr=1e-2"]) != O.fingerprint(["train.lr=0.02"])


def test_train_records_the_override_and_every_verb_reads_it_back(tmp_path):
    out = tmp_path / "run"
    sets = ["--set", "dims.H=4", "--set", "data.length=6", "--set", "train.steps=4", "--set", "train.eval_every=2",
            "--set", "train.batch=4"]
    code, so, err = main("train", LSTM, "--out", out, "--quiet", *sets)
    assert code == 0, err
    config = (out / "config.yaml").read_text()
    assert "# --set dims.H=4\n" in config and read(str(out / "config.yaml")).data["dims"] == {"H": 4}
    ck = np.load(out / "last.npz")
    meta = json.loads(str(ck["meta"]))
    assert meta["set"] == ["dims.H=4", "data.length=6", "train.steps=4", "train.eval_every=2", "train.batch=4"]
    assert ck["param/V_o"].shape == (1, 4) and meta["cfg"]["steps"] == 4
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4 + 2      # 4 steps, 2 validations
    code, so, err = main("eval", out / "last.npz")                         # the model of H=4 is rebuilt
    assert code == 0 and "mse" in json.loads(so), err
    # resuming with other values would mix two runs in one directory
    code, so, err = main("train", LSTM, "--out", out, "--quiet", "--resume", *sets[:-2])
    assert code == 2
    assert err.startswith(f"graphspec: {out}/last.npz was written for a different spec (hash ")


def test_without_overrides_config_yaml_is_the_files_own_text(tmp_path):
    code, so, err = main("train", LSTM, "--out", tmp_path / "r", "--quiet", "--steps", "2", "--batch", "2")
    assert code == 0, err
    assert (tmp_path / "r" / "config.yaml").read_text() == open(LSTM).read()
    assert "set" not in json.loads(str(np.load(tmp_path / "r" / "last.npz")["meta"]))
