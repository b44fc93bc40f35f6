"""Fine-tuning onto a mesh reads each tensor into its shards: ``train.init_from`` of a
safetensors checkpoint folder over FSDP on four simulated devices equals the unsharded
load bit for bit, reading only slices of each sharded tensor (a subprocess, since the
device count is fixed when JAX starts)."""

from __future__ import annotations

from test_sharding import run_script


def test_init_from_reads_each_devices_slices_bit_for_bit(tmp_path):
    results = run_script("sharded_load.py", str(tmp_path), devices=4)
    assert set(results) == {"hf", "xlstm_large"}
    for fmt, r in results.items():
        # Every byte of the files read once (replicated slices read once per host), and
        # every sharded parameter read in pieces smaller than its tensor.
        assert r["bytes_read"] == r["data_bytes"], (fmt, r)
        assert r["slice_reads"] >= r["sharded_leaves"] > 0, (fmt, r)
        assert r["largest_read"] < r["largest_tensor"], (fmt, r)
