"""Backbone precision and layout (learn/precision.py): modes, the probe, pinning, the bank key."""

from __future__ import annotations

import json

import pytest
import torch

from avalanche_hpc.digest import sha256_text
from avalanche_hpc.errors import ConfigError
from avalanche_hpc.learn import precision
from avalanche_hpc.learn.features import bank_key
from avalanche_hpc.learn.model import Backbone, build_vgg16
from avalanche_hpc.learn.weights import resolve_weights


@pytest.fixture(scope="module")
def vgg():
    return build_vgg16(resolve_weights("none"))


def test_modes_agree_with_fp32(vgg):
    x = torch.randn(4, 3, 50, 50, generator=torch.Generator().manual_seed(0))
    bb = Backbone(vgg)
    ref = bb(x)
    for mode, tol in (("fp32-cl", 1e-4), ("bf16", precision.BF16_MAX_REL_ERROR)):
        bb.set_precision(mode)
        if mode == "fp32-cl":
            assert bb.features[0].weight.is_contiguous(memory_format=torch.channels_last)
        got = bb(x)
        assert got.dtype == torch.float32 and got.shape == ref.shape
        assert float((got - ref).norm() / ref.norm()) < tol, mode
    bb.set_precision("fp32")
    assert torch.equal(bb(x), ref)  # the fp32 weights survive a bf16 round trip
    assert all(p.dtype == torch.float32 for p in bb.state_dict().values())
    with pytest.raises(ConfigError, match="precision 'fp16'"):
        bb.set_precision("fp16")


def test_probe_measures_pins_and_caches(vgg, tmp_path, monkeypatch):
    monkeypatch.setenv("AVALANCHE_HPC_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(precision.ENV, raising=False)
    monkeypatch.setattr(precision, "_MEMO", {})
    cpu = torch.device("cpu")
    p = precision.probe(vgg.features, cpu, batch=2, reps=1)
    assert set(p.images_per_s) == set(precision.MODES) and all(r > 0 for r in p.images_per_s.values())
    assert p.chosen in precision.MODES and p.bf16_rel_error < precision.BF16_MAX_REL_ERROR
    fastest_fp32 = max(("fp32", "fp32-cl"), key=p.images_per_s.get)
    bf16_wins = p.images_per_s["bf16"] >= precision.BF16_MIN_SPEEDUP * p.images_per_s[fastest_fp32]
    assert p.chosen == ("bf16" if bf16_wins else fastest_fp32)
    # an experiment's choice is measured once, then read back (here: from the machine cache)
    calls = []

    def factory():
        calls.append(1)
        return vgg.features

    exp1 = precision.experiment_precision(tmp_path / "e1", "auto", factory, cpu)
    record = json.loads((tmp_path / "e1" / "precision-cpu.json").read_text())
    assert record["chosen"] == exp1 and calls == [1]
    assert precision.machine_cache_path(cpu).is_file()
    assert precision.experiment_precision(tmp_path / "e2", "auto", factory, cpu) == exp1 and calls == [1]
    # the experiment's file pins it even when the machine's changes
    other = "fp32" if exp1 != "fp32" else "bf16"
    precision.machine_cache_path(cpu).write_text(json.dumps({"chosen": other}))
    assert precision.experiment_precision(tmp_path / "e1", "auto", factory, cpu) == exp1
    assert precision.experiment_precision(tmp_path / "e3", "auto", factory, cpu) == other
    # explicit modes and the environment need no probe
    assert precision.experiment_precision(tmp_path / "e4", "fp32", factory, cpu) == "fp32"
    monkeypatch.setenv(precision.ENV, "fp32-cl")
    assert precision.experiment_precision(tmp_path / "e5", "auto", factory, cpu) == "fp32-cl" and calls == [1]
    monkeypatch.setenv(precision.ENV, "half")
    with pytest.raises(ConfigError, match="AVALANCHE_HPC_PRECISION"):
        precision.experiment_precision(tmp_path / "e6", "auto", factory, cpu)


def test_bank_key_depends_on_precision_and_fp32_keys_are_unchanged():
    from avalanche_hpc.learn.features import BANK_VERSION, VIEW_SEED
    from avalanche_hpc.learn.inputs import MAPPING_ID

    old = sha256_text(f"v{BANK_VERSION}|abc|none|K4|crop50|seed{VIEW_SEED}|{MAPPING_ID}")[:20]
    assert bank_key("abc", "none", 4, 50) == old == bank_key("abc", "none", 4, 50, "fp32")
    assert len({bank_key("abc", "none", 4, 50, m) for m in precision.MODES}) == 3
