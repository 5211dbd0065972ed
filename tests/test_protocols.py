"""Evaluation protocols: leave-one-method-out and cross-dataset runs on a small generated
benchmark built for real (face tracking + oracle teacher), with very few training steps.

The held-out numbers are checked against an independent computation: the run's model
re-scores the test split through the inference path (``detect.score_split``), and
scikit-learn's ``roc_auc_score`` on all reals + the held-out manipulation's fakes must give
the table's AUC.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from avdetect import config_specs, evaluation, protocols
from avdetect.errors import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[1]
MANIPULATIONS = ("lipsync", "voiceclone")
NAME = "synthetic_av/ptest_oracle"
CAD = f"{REPO}/configs/cad.py:tiny"
CAD_NO_LORA = f"{REPO}/configs/cad.py:tiny,rank=0"
# The trainer tests' toy method (compiles in about a second): the LOMO mechanics.
TOY = f"{REPO}/tests/toy_method.py"
# Few steps, unoptimised XLA (fast compiles), no periodic evaluation: only the protocol's
# mechanics are under test here, not how well anything learns.
FAST = ["train.fast_compile=True", "train.eval_every=0", "train.ckpt_every=0"]


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """14 generated 1.2-second clips (real, lipsync, voiceclone; every split has both
    fake manipulations), built with the oracle teacher (K = 14) under its own config name."""
    from avdetect.data import build
    from avdetect.teachers import build_teacher
    from datasets.synthetic_av import generate
    from datasets.synthetic_av.synthetic_av import SyntheticAvConfig

    root = tmp_path_factory.mktemp("protocols")
    generate.generate(root / "gen", num_clips=14, seed=0, seconds=1.2, size=128, workers=2,
                      progress=False, method_weights={m: 1.0 for m in MANIPULATIONS})
    cfg = SyntheticAvConfig(name=NAME.split("/")[1], preset="tiny", face_size=32,
                            teacher_dim=14)
    build.build("synthetic_av", data_dir=str(root / "tfds"), manual_dir=str(root / "gen"),
                workers=2, teacher=build_teacher("oracle"), builder_kwargs={"config": cfg})
    return root / "tfds"


def _args(mode, workdir, data_dir, configs, **kw):
    return protocols.ProtocolArgs(mode=mode, configs=configs, workdir=str(workdir),
                                  data_dir=str(data_dir), steps=2, overrides=list(FAST), **kw)


def test_lomo_one_run_per_held_out_method(built, tmp_path):
    out = protocols.run(_args("lomo", tmp_path, built, [TOY], data=NAME), log=lambda *a: None)
    label = "toy_method"
    assert set(out["results"]) == {label}
    rows = out["results"][label]
    assert set(rows) == set(MANIPULATIONS)
    for m in MANIPULATIONS:
        wd = pathlib.Path(rows[m]["workdir"])
        assert wd == tmp_path / "toy_method" / f"holdout_{m}"
        saved = json.loads((wd / "config.json").read_text())
        assert saved["data"]["train_exclude_manipulations"] == [m]     # trained without m
        assert saved["train"]["steps"] == 2 and not rows[m]["reused"]

        # Independent reference: re-score the test split with the run's model, take every
        # real video and m's fakes, and let scikit-learn compute the AUC.
        from avdetect import detect, inference
        model = inference.load_model(str(wd))
        records = detect.score_split(model, "test", progress=False)
        videos = evaluation.aggregate_videos(records)
        names = np.array(model.method_names)[videos["method"]]
        keep = (names == "real") | (names == m)
        assert set(names[keep & (videos["label"] == 1)]) == {m}
        expected = roc_auc_score(videos["label"][keep], videos["score"][keep])
        assert rows[m]["auc"] == pytest.approx(expected, abs=1e-6)
        assert (rows[m]["n_real"], rows[m]["n_fake"]) == (int((names == "real").sum()),
                                                          int((names == m).sum()))

    # The table: a row per held-out manipulation (+ the mean), a column per config.
    lines = out["table"].splitlines()
    assert "| held-out manipulation | toy_method |" in lines
    for m in MANIPULATIONS:
        assert any(line.startswith(f"| {m} (") for line in lines), m
    mean = np.mean([rows[m]["auc"] for m in MANIPULATIONS])
    assert f"| mean | {mean:.4f} |" in lines
    stored = json.loads(pathlib.Path(out["paths"][0]).read_text())
    assert stored["results"][label][MANIPULATIONS[0]]["auc"] == rows[MANIPULATIONS[0]]["auc"]
    assert pathlib.Path(out["paths"][1]).read_text() == out["table"]

    # The same command again reuses every finished run.
    again = protocols.run(_args("lomo", tmp_path, built, [TOY], data=NAME), log=lambda *a: None)
    assert all(r["reused"] for r in again["results"][label].values())
    assert again["table"] == out["table"]


def test_lomo_runs_cad_with_its_pretrained_encoders(built, tmp_path):
    """CAD's default config (Whisper tiny.en + face mesh, real weights) through LOMO: the
    run trains without the held-out manipulation and the row matches its own test report."""
    out = protocols.run(_args("lomo", tmp_path, built, [CAD], data=NAME,
                              manipulations=["lipsync"]),
                        log=lambda *a: None)
    row = out["results"]["cad:tiny"]["lipsync"]
    wd = pathlib.Path(row["workdir"])
    saved = json.loads((wd / "config.json").read_text())
    assert saved["data"]["train_exclude_manipulations"] == ["lipsync"]
    assert saved["model"]["audio"]["name"] == "whisper"
    assert saved["model"]["visual"]["name"] == "face_mesh"
    own = json.loads((wd / "eval_test.json").read_text())["video"]["per_method"]["lipsync"]
    assert row["auc"] == pytest.approx(own["auc"], abs=1e-6)
    assert row["n_fake"] == own["n_fake"] > 0 and row["n_real"] == own["n_real"] > 0


def test_cross_trains_once_and_evaluates_each_split(built, tmp_path):
    tests = [f"{NAME}:test", f"{NAME}:validation"]
    out = protocols.run(_args("cross", tmp_path, built, [CAD], train_data=NAME, tests=tests),
                        log=lambda *a: None)
    lines = out["table"].splitlines()
    # eval.trim_silence is on in the shipped configs: a '(trimmed)' column beside each
    assert "| test split | cad:tiny | cad:tiny (trimmed) |" in lines
    wd = tmp_path / "cad_tiny"
    assert sorted(p.name for p in (wd / "checkpoints").iterdir() if p.name.isdigit()) == ["2"]
    # The trainer's own reports on the same splits (threshold from validation) are an
    # independent path to the same numbers.
    for t, split in zip(tests, ("test", "validation")):
        own = json.loads((wd / f"eval_{split}.json").read_text())["video"]["overall"]
        got = out["results"]["cad:tiny"][t]
        assert got["auc"] == pytest.approx(own["auc"], abs=1e-6)
        assert got["acc"] == pytest.approx(own["acc"], abs=1e-6)
        own_trimmed = json.loads((wd / f"eval_{split}.json").read_text())["trimmed"]
        assert got["auc_trimmed"] == pytest.approx(own_trimmed["video"]["overall"]["auc"],
                                                   abs=1e-6)
        assert (wd / "cross" / f"eval_synthetic_av_ptest_oracle_{split}.json").is_file()
        assert any(line.startswith(f"| {t} ({own['n_real']}+{own['n_fake']}) |")
                   for line in lines)


def test_table_has_a_column_per_config_and_a_mean_row():
    results = {"baseline:tiny": {"lipsync": {"auc": 0.5, "n_real": 3, "n_fake": 1},
                                 "desync": {"auc": 0.75, "n_real": 3, "n_fake": 2}},
               "cad:tiny": {"lipsync": {"auc": 1.0, "n_real": 3, "n_fake": 1},
                            "desync": {"auc": None, "n_real": 3, "n_fake": 2}}}
    assert protocols.markdown_table(results, row_title="held-out manipulation").splitlines() == [
        "| held-out manipulation | baseline:tiny | cad:tiny |", "|---|---|---|",
        "| lipsync (3+1) | 0.5000 | 1.0000 |", "| desync (3+2) | 0.7500 | – |",
        "| mean | 0.6250 | 1.0000 |"]


def test_configs_and_tests_parse(built, tmp_path):
    assert protocols._configs_arg([f"{CAD},{CAD_NO_LORA}"]) == [CAD, CAD_NO_LORA]
    assert protocols._configs_arg(["configs/cad.py:tiny,steps=5,configs/baseline.py"]) == [
        "configs/cad.py:tiny,steps=5", "configs/baseline.py"]
    assert protocols.parse_test("cmdfd/face112:w2l") == ("cmdfd/face112", "w2l")
    assert protocols.parse_test("fakeavceleb") == ("fakeavceleb", "test")
    # a pinned build version is part of the name, not a split
    assert protocols.parse_test("realtalk/face112:1.3.0:train") == ("realtalk/face112:1.3.0",
                                                                     "train")
    assert protocols.parse_test("realtalk/face112:1.3.0") == ("realtalk/face112:1.3.0", "test")
    assert config_specs.config_label("configs/corrdistill.py:tiny") == "corrdistill:tiny"

    c = config_specs.load_config(f"{REPO}/configs/corrdistill.py:tiny")
    config_specs.apply_overrides(c, ["optim.lr=3e-4", "data.train_exclude_manipulations=['a']"])
    assert c.optim.lr == 3e-4 and c.data.train_exclude_manipulations == ("a",)
    with pytest.raises(ConfigError, match="no key 'optim.nope'"):
        config_specs.apply_overrides(c, ["optim.nope=1"])

    # The teacher dimension comes from the dataset (oracle: 14 visemes, not 40).
    assert c.model.teacher_classes == 40
    bound = config_specs.bind_dataset(c, NAME, str(built))
    assert bound.model.teacher_classes == 14 and c.model.teacher_classes == 40
    assert protocols.fake_manipulations(NAME, str(built)) == MANIPULATIONS


def test_bad_requests_raise_typed_errors(built, tmp_path):
    with pytest.raises(ConfigError, match="not manipulations of"):
        protocols.run(_args("lomo", tmp_path, built, [CAD], data=NAME,
                            manipulations=["faceswap"]), log=lambda *a: None)
    with pytest.raises(ConfigError, match="cannot open dataset"):
        protocols.run(_args("lomo", tmp_path, built, [CAD], data="synthetic_av/nothing_here"),
                      log=lambda *a: None)
    with pytest.raises(ConfigError, match="does not exist"):
        config_specs.load_config("configs/no_such_method.py:tiny")
    assert protocols.main(["lomo", f"--config={CAD}", f"--workdir={tmp_path}",
                           f"--data_dir={built}"]) == 2            # lomo needs --data


def test_manipulations_flag_and_its_older_spelling():
    """--manipulations names the held-out manipulations; --methods still parses the same."""
    for flag in ("--manipulations", "--methods"):
        args = protocols.parse_args(["lomo", "--config=configs/baseline.py:tiny",
                                     "--workdir=w", f"{flag}=lipsync, voiceclone"])
        assert args.manipulations == ["lipsync", "voiceclone"]
    assert protocols.parse_args(["lomo", "--config=a.py", "--workdir=w"]).manipulations is None
