"""Benchmarks write their figures as JSON (``--json PATH``) besides printing them."""

from __future__ import annotations

import json
import math
import sys

import pytest

from tests.test_31_preprocess import build_hand_study

TRAIN_KEYS = ("matmul_gflops", "backbone_img_s", "head_img_s", "head_fraction_of_matmul", "sweep_s_bank",
              "sweep_s_per_epoch", "sweep_ratio_per_epoch_over_bank", "sweep_over_flop_floor", "precision_chosen")


@pytest.mark.slow
def test_bench_train_json(tmp_path, capsys, monkeypatch):
    from benchmarks import bench_train

    monkeypatch.setenv("AVALANCHE_HPC_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "train.json"
    bench_train.main(["--quick", "--batch", "4", "--slots", "2", "--pool", "40", "--massifs", "1", "--seeds", "1",
                      "--epochs", "2", "--json", str(out)])
    printed = capsys.readouterr().out
    figures = json.loads(out.read_text())
    for key in TRAIN_KEYS:
        assert key in figures, key
    for key in TRAIN_KEYS[:-1]:
        assert isinstance(figures[key], float) and math.isfinite(figures[key]) and figures[key] > 0, key
    assert figures["sweep"]["runs"] == 2
    assert figures["sweep_ratio_per_epoch_over_bank"] == pytest.approx(
        figures["sweep_s_per_epoch"] / figures["sweep_s_bank"])
    assert f"{figures['sweep_ratio_per_epoch_over_bank']:.1f}x" in printed and "figures ->" in printed


def test_bench_preprocess_json(tmp_path, capsys, monkeypatch):
    from benchmarks import bench_preprocess

    root = build_hand_study(tmp_path / "s")
    out = tmp_path / "pre.json"
    monkeypatch.setattr(sys, "argv", ["bench_preprocess", "--study", str(root), "--skip-scaling", "--json", str(out)])
    bench_preprocess.main()
    figures = json.loads(out.read_text())
    for key in ("preprocess_over_grouped_read", "preprocess_over_grouped_read_float32",
                "preprocess_over_grouped_read_float16", "float16_max_abs_error_db", "shards_bytes_float16"):
        assert key in figures and math.isfinite(figures[key]), key
    assert figures["preprocess_over_grouped_read"] == figures["preprocess_over_grouped_read_float32"]
    assert figures["shards_bytes_float16"] < figures["shards_bytes_float32"]
    assert 0 < figures["float16_max_abs_error_db"] <= figures["max_abs_db"] * 2.0**-11
    assert "float16 rounding: largest error" in capsys.readouterr().out
