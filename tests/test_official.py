"""Official checkpoints: presets vs the released layouts, containers (.ckpt, .gz, tar.gz), shape inference."""
import gzip
import io
import json
import tarfile

import pytest
import torch

from matchms_diffms.model.config import preset
from matchms_diffms.model.diffms import DiffMS
from matchms_diffms.official import WeightsError, infer_config, load_official, read_checkpoint

ARCH_FIELDS = ("encoder_hidden", "magma_modulo", "cond_dim", "decoder_layers", "hidden_mlp_X", "dx", "hidden_mlp_E",
               "de", "hidden_mlp_y", "dy", "dim_ffX", "dim_ffE", "dim_ffy", "atom_types", "fp_sizes")


@pytest.mark.parametrize("name", ["msg", "canopus"])
def test_preset_maps_one_to_one_onto_the_released_layout(conformance_dir, name):
    official = json.loads((conformance_dir / f"official_keys_{name}.json").read_text())["keys"]
    with torch.device("meta"):                                   # shapes only, no 85 M floats
        model = DiffMS(preset(name))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    ours["noise_schedule.betas"] = [model.config.diffusion_steps + 1]     # a buffer we recompute, not a key
    assert set(ours) == set(official)
    assert {k: ours[k] for k in official} == {k: official[k]["shape"] for k in official}
    # and the shapes alone give back the preset's architecture
    state = {k: torch.empty(v["shape"], device="meta") for k, v in official.items()}
    inferred = infer_config(state)
    assert {f: getattr(inferred, f) for f in ARCH_FIELDS} == {f: getattr(preset(name), f) for f in ARCH_FIELDS}


@pytest.fixture(scope="module")
def tiny_raw(conformance_dir):
    return gzip.decompress((conformance_dir / "tiny_official.ckpt.gz").read_bytes())


def _tar_gz(members: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), compresslevel=1)     # fast: the tiny checkpoint is 87 MB


def test_the_same_weights_from_every_container(conformance_dir, tiny_raw, tmp_path):
    plain = tmp_path / "tiny.ckpt"
    plain.write_bytes(tiny_raw)
    archive = tmp_path / "diffms_checkpoints.tar.gz"
    archive.write_bytes(_tar_gz({"checkpoints/encoder_msg.pt": b"not used",
                                 "checkpoints/diffms_msg.ckpt": tiny_raw}))
    states = [read_checkpoint(p) for p in (plain, conformance_dir / "tiny_official.ckpt.gz", archive,
                                           f"{archive}::checkpoints/diffms_msg.ckpt")]
    for state in states[1:]:
        assert state.keys() == states[0].keys()
        assert all(torch.equal(state[k], states[0][k]) for k in state)
    model, config = load_official(archive, {"max_n_nodes": 50})
    assert {f: getattr(config, f) for f in ARCH_FIELDS} == {f: getattr(preset("tiny"), f) for f in ARCH_FIELDS}
    assert config.reference_padding and config.max_n_nodes == 50
    assert not model.training


def test_archive_without_the_member_names_its_members(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(_tar_gz({"checkpoints/other.ckpt": b"x"}))
    with pytest.raises(WeightsError, match="no member 'diffms_msg.ckpt'.*checkpoints/other.ckpt"):
        read_checkpoint(archive)


def test_legacy_model_prefix_and_missing_keys(tiny_raw, tmp_path):
    state = torch.load(io.BytesIO(tiny_raw), weights_only=True)["state_dict"]
    legacy = {("model." + k[len("decoder."):] if k.startswith("decoder.") else k): v for k, v in state.items()}
    path = tmp_path / "legacy.ckpt"
    torch.save({"state_dict": legacy}, path)
    model, _ = load_official(path)
    assert torch.equal(model.decoder.mlp_in_X[0].weight, state["decoder.mlp_in_X.0.weight"])
    del state["merge_function.bias"]
    torch.save({"state_dict": state}, path)
    with pytest.raises(WeightsError, match="1 missing keys .*merge_function.bias"):
        load_official(path)
