"""The Colab notebook (launch/colab/evaluate.ipynb) runs top to bottom on CPU.

Executed with nbclient against a tiny trained checkpoint exported to a params file, the
'random' dataset (no build needed) and two real fixture clips; its numbers are checked
against scikit-learn on the per-video scores it wrote, its outputs for the table, the ROC
figure and one timeline per clip.
"""

from __future__ import annotations

import json
import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient
from sklearn.metrics import roc_auc_score

import tiny_checkpoint
from avdetect import export

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "launch" / "colab" / "evaluate.ipynb"


def test_notebook_is_valid_and_parametrised():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")   # stored clean


def test_notebook_runs_on_cpu(tmp_path, realav_clips, monkeypatch):
    workdir = tiny_checkpoint.train_toy_workdir(tmp_path / "wd")
    model_file = export.export_model(str(workdir), str(tmp_path / "toy.msgpack"))
    clips = [str(p) for p in realav_clips if p.name in ("real_video-retalking_6.mp4",
                                                        "fake_video-retalking_lnet_1.mp4")]
    out = tmp_path / "nb_out"
    # The kernel inherits this environment: the toy method lives in tests/.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "tests"), str(REPO)]))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("AVDETECT_NB_MODEL", model_file)
    monkeypatch.setenv("AVDETECT_NB_CLIPS", os.pathsep.join(clips))
    monkeypatch.setenv("AVDETECT_NB_OUT", str(out))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    executed = NotebookClient(nb, timeout=240, kernel_name="python3",
                              resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(o.get("text", "") if o.output_type == "stream" else
                     o.get("data", {}).get("text/markdown", "") + o.get("data", {}).get("text/plain", "")
                     for o in outputs)
    assert "backend: cpu" in text and f"step {4}" in text
    assert "| category: FVFA |" in text and "| RVFA |" in text                  # report + table
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1 + len(clips)                                     # ROC + timelines
    results = json.loads((out / "results.json").read_text())
    vid = results["videos"]
    overall = results["report"]["video"]["overall"]
    assert overall["n"] == len(vid["label"]) == 8                             # random_eval_videos
    assert overall["auc"] == pytest.approx(roc_auc_score(vid["label"], vid["score"]))
    report = json.loads((workdir / "eval_test.json").read_text())
    assert overall["auc"] == pytest.approx(report["video"]["overall"]["auc"])  # = the trainer's eval
    assert results["threshold"] == pytest.approx(report["threshold"]["value"])
    assert [c["file"] for c in results["clips"]] == clips
