"""Weights are data, never code: sha256 checked on load, tampered files refused, checkpoints that need pickle
refused without executing anything, broken files give one-line errors (weights.py, official.py)."""
from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import tarfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from matchms_diffms import cli
from matchms_diffms.official import WeightsError, read_checkpoint
from matchms_diffms.files import sha256_file
from matchms_diffms.weights import load_model, load_weights_dir
from reliability_helpers import TINY_CONFIG, assert_no_traceback, make_tiny_weights, run_cli

OFFICIAL_OVERRIDES = {k: TINY_CONFIG[k] for k in ("encoder_layers", "encoder_heads", "decoder_heads",
                                                  "diffusion_steps", "reference_padding", "max_n_nodes")}


class Payload:
    """Unpickling this object would call ``open(marker, "w")``: creating the marker file proves execution."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    return make_tiny_weights(tmp_path_factory.mktemp("w") / "tiny")


@pytest.fixture(scope="module")
def official_ckpt(tmp_path_factory):
    """A tiny model (official 4096-bit fingerprint head) saved the way the released checkpoints are:
    ``{"state_dict": tensors}`` via torch.save."""
    from safetensors.torch import load_file

    folder = make_tiny_weights(tmp_path_factory.mktemp("w4096") / "tiny", fp_sizes=[256, 512, 1024, 2048, 4096])
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    torch.save({"state_dict": load_file(str(folder / "model.safetensors"))}, path)
    return path


def copy_dir(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def invoke(*args):
    result = CliRunner().invoke(cli.main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def one_error_line(result) -> str:
    assert_no_traceback(result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


# ------------------------------------------------------------------------------------------ sha256
def test_sha256_recorded_and_checked(weights_dir):
    meta = json.loads((weights_dir / "config.json").read_text())
    assert meta["sha256"] == sha256_file(weights_dir / "model.safetensors")
    model, info = load_weights_dir(weights_dir)
    assert info["sha256"] == meta["sha256"] and info["format"] == "matchms-diffms"


def test_tampered_tensor_file_is_refused(weights_dir, tmp_path):
    bad = copy_dir(weights_dir, tmp_path / "tampered")
    raw = bytearray((bad / "model.safetensors").read_bytes())
    raw[-5] ^= 0x01                                               # one bit of one weight
    (bad / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(WeightsError, match="does not match config.json.*modified or corrupted"):
        load_weights_dir(bad)
    with pytest.raises(WeightsError, match="sha256"):
        load_model(str(bad))
    line = one_error_line(invoke("weights", "verify", bad))
    assert "sha256" in line


def test_tampered_config_hash_is_refused(weights_dir, tmp_path):
    bad = copy_dir(weights_dir, tmp_path / "tampered")
    meta = json.loads((bad / "config.json").read_text())
    meta["sha256"] = "0" * 64
    (bad / "config.json").write_text(json.dumps(meta))
    with pytest.raises(WeightsError, match="does not match"):
        load_weights_dir(bad)
    del meta["sha256"]
    (bad / "config.json").write_text(json.dumps(meta))
    with pytest.raises(WeightsError, match="does not match"):
        load_weights_dir(bad)


@pytest.mark.parametrize("content, message", [
    ("{not json", "unreadable config"),
    ("[1, 2]", "unknown weights format"),
    (json.dumps({"format": "something-else/9"}), "unknown weights format"),
])
def test_broken_config_json(weights_dir, tmp_path, content, message):
    bad = copy_dir(weights_dir, tmp_path / "bad")
    (bad / "config.json").write_text(content)
    with pytest.raises(WeightsError, match=message):
        load_weights_dir(bad)


def test_config_without_model_config(weights_dir, tmp_path):
    bad = copy_dir(weights_dir, tmp_path / "bad")
    meta = json.loads((bad / "config.json").read_text())
    del meta["config"]
    (bad / "config.json").write_text(json.dumps(meta))
    with pytest.raises(WeightsError, match="invalid config"):
        load_weights_dir(bad)


def test_missing_tensor_file(weights_dir, tmp_path):
    bad = copy_dir(weights_dir, tmp_path / "bad")
    (bad / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match="model.safetensors missing"):
        load_weights_dir(bad)


def test_annotate_with_tampered_weights_is_a_one_line_error(weights_dir, tmp_path):
    bad = copy_dir(weights_dir, tmp_path / "tampered")
    raw = bytearray((bad / "model.safetensors").read_bytes())
    raw[-1] ^= 0xFF
    (bad / "model.safetensors").write_bytes(bytes(raw))
    mgf = tmp_path / "in.mgf"
    mgf.write_text("BEGIN IONS\nTITLE=a\nPEPMASS=47.04914\nADDUCT=[M+H]+\nFORMULA=C2H6O\n29.03858 100\nEND IONS\n")
    result = invoke("annotate", mgf, "-o", tmp_path / "out.mgf", "--weights", bad, "--no-progress")
    assert result.exit_code == 2
    assert "sha256" in one_error_line(result)
    assert not (tmp_path / "out.mgf").exists()
    assert not (tmp_path / "out.mgf.partial.jsonl").exists()


# ------------------------------------------------------------------------------------------ pickle
def _evil_files(tmp_path: Path, marker: Path) -> dict[str, Path]:
    """Checkpoints carrying an object with a malicious ``__reduce__``, in every container we read."""
    evil = {"state_dict": {"decoder.x": torch.zeros(2), "payload": Payload(marker)}}
    files = {}
    files["torch_zip"] = tmp_path / "evil.ckpt"
    torch.save(evil, files["torch_zip"])
    files["raw_pickle"] = tmp_path / "evil_raw.ckpt"
    files["raw_pickle"].write_bytes(pickle.dumps({"state_dict": {"payload": Payload(marker)}}, protocol=2))
    files["protocol0"] = tmp_path / "evil_p0.ckpt"
    files["protocol0"].write_bytes(pickle.dumps(Payload(marker), protocol=0))
    files["gzip"] = tmp_path / "evil.ckpt.gz"
    files["gzip"].write_bytes(gzip.compress(files["torch_zip"].read_bytes()))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = files["torch_zip"].read_bytes()
        info = tarfile.TarInfo("diffms_checkpoints/diffms_msg.ckpt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    files["tar_gz"] = tmp_path / "diffms_checkpoints.tar.gz"
    files["tar_gz"].write_bytes(gzip.compress(buf.getvalue()))
    return files


def test_payload_really_executes_when_unpickled(tmp_path):
    """Control: the test's payload is live (so the refusals below are not vacuous)."""
    marker = tmp_path / "executed"
    pickle.loads(pickle.dumps(Payload(marker))).close()
    assert marker.exists()


@pytest.mark.parametrize("container", ["torch_zip", "raw_pickle", "protocol0", "gzip", "tar_gz"])
def test_checkpoint_needing_pickle_is_refused_and_nothing_runs(tmp_path, container):
    marker = tmp_path / "executed"
    path = _evil_files(tmp_path, marker)[container]
    with pytest.raises(WeightsError, match="refused to load") as info:
        read_checkpoint(path)
    assert "pickle" in str(info.value) and "\n" not in str(info.value)
    if container != "protocol0":
        assert "io.open" in str(info.value)                      # names what it would have created
    with pytest.raises(WeightsError, match="refused to load"):
        load_model(str(path))
    result = invoke("weights", "convert", path, "-o", tmp_path / "converted")
    assert result.exit_code != 0
    assert "refused to load" in one_error_line(result) and "pickle" in result.stderr
    assert not marker.exists()
    assert not (tmp_path / "converted").exists()


def test_annotate_refuses_a_pickle_checkpoint_in_a_fresh_process(tmp_path):
    marker = tmp_path / "executed"
    path = _evil_files(tmp_path, marker)["torch_zip"]
    mgf = tmp_path / "in.mgf"
    mgf.write_text("BEGIN IONS\nTITLE=a\nPEPMASS=47.04914\nADDUCT=[M+H]+\nFORMULA=C2H6O\n29.03858 100\nEND IONS\n")
    proc = run_cli("annotate", mgf, "-o", tmp_path / "out.tsv", "--weights", path, "--no-progress")
    assert proc.returncode == 2
    assert_no_traceback(proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "refused to load" in lines[0] and "pickle" in lines[0], proc.stderr
    assert not marker.exists()
    assert not (tmp_path / "out.tsv").exists()


# ------------------------------------------------------------------------------------------ broken files
def _broken(official_ckpt: Path, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    raw = official_ckpt.read_bytes()
    gz = gzip.compress(raw, compresslevel=1)
    out = {}

    def put(name, data, message):
        p = tmp_path / name
        p.write_bytes(data)
        out[name] = (p, message)

    put("truncated.ckpt", raw[: len(raw) // 2], "truncated or corrupted")
    put("truncated_header.ckpt", raw[:100], "truncated or corrupted")
    put("empty.ckpt", b"", "truncated or corrupted")
    put("random.ckpt", os.urandom(4096), "")
    put("text.ckpt", b"this is not a checkpoint\n" * 10, "")
    put("truncated.ckpt.gz", gz[: len(gz) // 2], "corrupted gzip")
    put("garbled.ckpt.gz", gz[:10] + bytes(b ^ 0x5A for b in gz[10:2000]) + gz[2000:], "")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("diffms_checkpoints/diffms_msg.ckpt")
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
    tgz = gzip.compress(buf.getvalue(), compresslevel=1)
    put("truncated.tar.gz", tgz[: len(tgz) // 2], "corrupted gzip")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("README")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    put("no_member.tar.gz", gzip.compress(buf.getvalue()), "no member 'diffms_msg.ckpt'")
    for name, obj, message in [("list.ckpt", [1, 2], "expected a dict"),
                               ("non_tensor.ckpt", {"state_dict": {"a": 1}}, "only tensors"),
                               ("wrong_keys.ckpt", {"state_dict": {"a": torch.zeros(2)}}, "not a DiffMS checkpoint"),
                               ("missing_keys.ckpt", None, "missing keys")]:
        if obj is None:
            state = torch.load(official_ckpt, weights_only=True)["state_dict"]
            obj = {"state_dict": {k: v for k, v in state.items() if not k.startswith("decoder.mlp_out_y")}}
        data = io.BytesIO()
        torch.save(obj, data)
        put(name, data.getvalue(), message)
    return out


def test_good_official_checkpoint_converts(official_ckpt, tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(OFFICIAL_OVERRIDES))
    result = invoke("weights", "convert", official_ckpt, "--config", cfg, "-o", tmp_path / "converted")
    assert result.exit_code == 0, result.output
    _, info = load_weights_dir(tmp_path / "converted")
    assert info["sha256"] == sha256_file(tmp_path / "converted" / "model.safetensors")


def test_broken_checkpoints_give_one_line_errors(official_ckpt, tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(OFFICIAL_OVERRIDES))
    for name, (path, message) in _broken(official_ckpt, tmp_path).items():
        out = tmp_path / f"out_{name}"
        result = invoke("weights", "convert", path, "--config", cfg, "-o", out)
        assert result.exit_code == 1, (name, result.output)
        line = one_error_line(result)
        assert message in line and str(path) in line, (name, line)
        assert not out.exists(), name


def test_bad_convert_config_is_a_one_line_error(official_ckpt, tmp_path):
    for content, message in [('{"no_such_field": 1}', "invalid configuration"), ("[1", "Expecting")]:
        cfg = tmp_path / "cfg.json"
        cfg.write_text(content)
        result = invoke("weights", "convert", official_ckpt, "--config", cfg, "-o", tmp_path / "out")
        assert result.exit_code != 0
        assert message in one_error_line(result)
