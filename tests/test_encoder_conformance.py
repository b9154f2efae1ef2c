"""Spectrum encoder vs the official implementation (``../shared/conformance/encoder_io.npz``).

The featurised batches are rebuilt from ``subformulae.json`` with ``tokens_from_annotation`` + ``collate``
and must equal the fixture exactly; the tiny official checkpoint then has to reproduce every stored
activation within the README tolerances. Run with ``-s`` to see the largest deviation per array.
"""
import json

import numpy as np
import pytest
import torch

from matchms_diffms.model.config import OFFICIAL_ADDUCT_SLOTS, preset
from matchms_diffms.model.encoder import PosCosEmbedding, SpectraEncoder, token_input_dim
from matchms_diffms.model.tokens import collate, tokens_from_annotation

GROUPS = {"batch24": 61, "single0": None, "single1": None, "single2": None}   # group -> collate pad_to
FEATURE_ARRAYS = ["types", "form_vec", "ion_vec", "intens", "num_peaks"]
ATOL = {"input_vec": 1e-6, "peak_emb": 1e-6, "pairwise": 1e-6, "layer0_out": 1e-5, "layer1_out": 1e-5,
        "h0": 1e-5, "int_pred_256": 1e-5, "int_pred_512": 1e-5, "int_pred_1024": 1e-5,
        "int_pred_2048": 1e-5, "fp4096": 1e-5, "frag_fp": 1e-5, "y": 1e-5}
# README section 4: same spectrum batched (24 spectra, padded to 61) vs alone, max |difference|.
QUIRK = {"single0": (1, {"h0": 0.60, "fp4096": 0.067, "y": 0.032}),
         "single1": (10, {"h0": 1.02, "fp4096": 0.079, "y": 0.044})}


@pytest.fixture(scope="module")
def encoder_io(conformance_dir):
    with np.load(conformance_dir / "encoder_io.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def annotations(conformance_dir):
    return json.loads((conformance_dir / "subformulae.json").read_text())


def _split(state_dict, prefix):
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}


def _tiny_encoder(state_dict, reference_padding=True):
    enc = SpectraEncoder(preset("tiny").replace(reference_padding=reference_padding))
    enc.load_state_dict(_split(state_dict, "encoder."), strict=True)
    return enc.eval()


@pytest.fixture(scope="module")
def tiny(tiny_state_dict):
    torch.set_num_threads(1)
    merge = torch.nn.Linear(4096, 2048)
    merge.load_state_dict(_split(tiny_state_dict, "merge_function."), strict=True)
    return {"ref": _tiny_encoder(tiny_state_dict, True), "masked": _tiny_encoder(tiny_state_dict, False),
            "merge": merge.eval()}


def _batch(annotations, names, pad_to=None):
    return collate([tokens_from_annotation(annotations[n], OFFICIAL_ADDUCT_SLOTS) for n in names], pad_to=pad_to)


@torch.no_grad()
def _run(tiny, mode, batch):
    out = tiny[mode](batch)
    arrays = {"input_vec": out["input_vec"], "peak_emb": out["peak_emb"], "pairwise": out["pairwise"],
              "h0": out["h0"], "fp4096": out["fp"], "frag_fp": out["frag_fp"], "y": tiny["merge"](out["fp"])}
    for i, layer_out in enumerate(out["layer_outputs"]):
        arrays[f"layer{i}_out"] = layer_out
    for p in out["int_preds"]:
        arrays[f"int_pred_{p.shape[1]}"] = p
    return {k: v.numpy() for k, v in arrays.items()}


@pytest.fixture(scope="module")
def outputs(tiny, annotations, encoder_io):
    """Reference-padding outputs per fixture group."""
    return {g: _run(tiny, "ref", _batch(annotations, encoder_io[f"{g}_names"], pad_to))
            for g, pad_to in GROUPS.items()}


def _max_dev(a, b):
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


# ------------------------------------------------------------------------------------------ featurisation

@pytest.mark.parametrize("group", list(GROUPS))
def test_featurised_batch_exact(group, annotations, encoder_io):
    names = encoder_io[f"{group}_names"]
    if group == "batch24":
        assert list(names) == list(annotations), "batch24 is in subformulae.json order"
    batch = _batch(annotations, names, GROUPS[group])
    for key in FEATURE_ARRAYS:
        ours, ref = batch[key].numpy(), encoder_io[f"{group}_{key}"]
        assert ours.shape == ref.shape, key
        np.testing.assert_array_equal(ours, ref.astype(ours.dtype), err_msg=f"{group}_{key}")
        assert np.array_equal(ours.astype(np.float64), ref.astype(np.float64)), key


# ------------------------------------------------------------------------------------------ checkpoint

def test_tiny_checkpoint_loads_strict(tiny_state_dict):
    enc = _tiny_encoder(tiny_state_dict)
    ours = enc.state_dict()
    theirs = _split(tiny_state_dict, "encoder.")
    assert list(ours) == list(theirs)                       # same keys, same order
    for k in theirs:
        assert torch.equal(ours[k], theirs[k]), k
    table = enc.spectra_encoder[0].form_embedder_mod.int_to_feat_matrix
    assert not table.requires_grad
    # our freshly computed table (float32, as the reference) equals the stored official one
    assert _max_dev(PosCosEmbedding().int_to_feat_matrix.detach(), table.detach()) <= 1e-7


@pytest.mark.parametrize("name", ["msg", "canopus"])
def test_released_key_layout(name, conformance_dir):
    official = json.loads((conformance_dir / f"official_keys_{name}.json").read_text())["keys"]
    official = {k[len("encoder."):]: v for k, v in official.items() if k.startswith("encoder.")}
    with torch.device("meta"):
        enc = SpectraEncoder(preset(name))
    params = dict(enc.named_parameters())
    ours = enc.state_dict(keep_vars=True)
    assert list(ours) == list(official), "names and order of the encoder keys"
    for k, meta in official.items():
        assert list(ours[k].shape) == meta["shape"], k
        assert str(ours[k].dtype) == "torch." + meta["dtype"], k
        assert (k in params) == (meta["kind"] == "parameter"), k
        assert ours[k].requires_grad == meta.get("requires_grad", True), k
    assert sum(v.numel() for v in ours.values()) == sum(m["numel"] for m in official.values())
    assert token_input_dim(len(preset(name).adducts)) == 343


# ------------------------------------------------------------------------------------------ forward

@pytest.mark.parametrize("group", list(GROUPS))
def test_forward_matches_fixture(group, outputs, encoder_io):
    ours = outputs[group]
    devs, failed = {}, []
    for key, atol in ATOL.items():
        ref_key = f"{group}_{key}"
        if ref_key not in encoder_io:       # pairwise is stored for the single spectra only
            continue
        assert ours[key].shape == encoder_io[ref_key].shape, key
        devs[key] = _max_dev(ours[key], encoder_io[ref_key])
        if not devs[key] <= atol:
            failed.append(f"{key}: {devs[key]:.3g} > {atol:g}")
    print(f"\n[encoder conformance] {group} max |dev|: " + ", ".join(f"{k}={v:.2g}" for k, v in devs.items()))
    assert not failed, failed


def test_frag_fp_padded_rows_are_bias(outputs, tiny, encoder_io):
    bias = tiny["ref"].spectra_encoder[1][0].bias.detach().numpy()
    n = encoder_io["batch24_num_peaks"]
    frag = outputs["batch24"]["frag_fp"]
    for b in range(len(n)):
        np.testing.assert_array_equal(frag[b, n[b]:], np.broadcast_to(bias, frag[b, n[b]:].shape))


# ------------------------------------------------------------------------------------------ padding quirk

@pytest.mark.parametrize("single", list(QUIRK))
def test_reference_padding_quirk_reproduced(single, outputs):
    row, expected = QUIRK[single]
    for key, value in expected.items():
        dev = _max_dev(outputs["batch24"][key][row], outputs[single][key][0])
        print(f"\n[padding quirk] {single} vs batch24[{row}] {key}: {dev:.3g} (README {value})")
        assert 0.9 * value <= dev <= 1.1 * value, (key, dev, value)


def test_reference_padding_inert_without_padding(outputs):
    # EPA001019 has 61 tokens: no padding in the batch, so batched == alone
    for key in ("h0", "fp4096", "y"):
        assert _max_dev(outputs["batch24"][key][17], outputs["single2"][key][0]) < 1e-5, key


def test_masked_padding_batch_equals_single(tiny, annotations, encoder_io):
    names = list(encoder_io["batch24_names"])
    batched = _run(tiny, "masked", _batch(annotations, names, pad_to=64))   # more padding than needed
    worst = {}
    for i, name in enumerate(names):
        alone = _run(tiny, "masked", _batch(annotations, [name]))
        for key in ("h0", "fp4096", "y", "int_pred_256"):
            worst[key] = max(worst.get(key, 0.0), _max_dev(batched[key][i], alone[key][0]))
        group = {1: "single0", 10: "single1", 17: "single2"}.get(i)
        if group:                  # alone there is no padding: both policies equal the fixture singles
            for key in ("h0", "fp4096", "y"):
                assert _max_dev(alone[key], encoder_io[f"{group}_{key}"]) < 1e-5, (group, key)
    print(f"\n[masked padding] batched vs alone, max |dev| over 24 spectra: {worst}")
    assert all(v < 1e-5 for v in worst.values()), worst


# ------------------------------------------------------------------------------------------ units

def test_pos_cos_extra_row_and_range():
    emb = PosCosEmbedding()
    counts = torch.zeros(2, 18)
    counts[0, 0] = 255
    counts[1, 0] = 3
    out = emb(counts)                                                        # (2, 162)
    assert out.shape == (2, 162)
    torch.testing.assert_close(out[0, :9], emb._extra_embeddings[0], rtol=0, atol=0)
    expected = 1 - torch.cos(2 * torch.pi * 3 * 0.5 ** torch.linspace(1, 9, 9, dtype=torch.float64))
    torch.testing.assert_close(out[1, :9].double(), expected, rtol=0, atol=1e-6)
    assert torch.count_nonzero(out[:, 9:]) == 0                              # zero counts -> zero blocks
    for bad in (256, -1):
        counts[0, 3] = bad
        with pytest.raises(ValueError, match="0..255"):
            emb(counts)


def test_dropout_only_in_training(tiny, annotations, encoder_io):
    enc = tiny["ref"]
    batch = _batch(annotations, encoder_io["single1_names"])
    try:
        enc.train()
        torch.manual_seed(0)
        fp_train = enc(batch)["fp"].detach()
    finally:
        enc.eval()
    with torch.no_grad():
        fp_eval = enc(batch)["fp"]
    assert _max_dev(fp_train, fp_eval) > 1e-4
    np.testing.assert_allclose(fp_eval.numpy(), encoder_io["single1_fp4096"], atol=1e-5)


def test_cls_must_be_last():
    enc = SpectraEncoder(preset("tiny")).eval()
    tokens = collate([tokens_from_annotation(
        {"cand_form": "C6H6O", "cand_ion": "[M+H]+",
         "output_tbl": {"formula": ["C6H5"], "ms2_inten": [1.0], "ions": ["[M+H]+"]}}, OFFICIAL_ADDUCT_SLOTS)])
    tokens["num_peaks"] = tokens["num_peaks"] - 1
    with pytest.raises(ValueError, match="CLS"):
        enc(tokens)
