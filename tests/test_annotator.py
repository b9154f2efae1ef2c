"""DiffMSAnnotator (annotator.py).

Most tests use a small stand-in model whose ``sample`` draws from hand-written graphs with the given
generator, so the pipeline around the network (checks, filters, ranking, metadata, seeding) is tested
exactly; the end-to-end tests at the bottom run the official-format tiny checkpoint.
"""
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from matchms import Spectrum
from matchms.exporting import save_as_json, save_as_mgf, save_as_msp
from matchms.importing import load_from_json, load_from_mgf, load_from_msp
from rdkit import Chem

from matchms_diffms import DiffMSAnnotator, METADATA_KEYS, STATUS_CODES, read_annotation, read_candidates, status_code
from matchms_diffms.annotator import derive_seed
from matchms_diffms.metadata import spectrum_key
from matchms_diffms.model.config import preset
from matchms_diffms.ranking import morgan_bits

FIXTURE = Path(__file__).parent / "fixtures" / "annotator_tiny.mgf"

# Hand-written graphs for the heavy atoms C, C, O (decoder order C, O -> ["C", "C", "O"]).
#   0 ethanol CCO, 1 dimethyl ether COC, 2 vinyl alcohol C=CO (C2H4O: wrong H count),
#   3 O with three bonds (invalid), 4 disconnected C-C + O (invalid)
GRAPHS_CCO = []
for bonds in ([(0, 1, 1), (1, 2, 1)], [(0, 2, 1), (1, 2, 1)], [(0, 1, 2), (1, 2, 1)],
              [(0, 2, 2), (1, 2, 1)], [(0, 1, 1)]):
    a = np.zeros((3, 3), dtype=np.int64)
    for i, j, c in bonds:
        a[i, j] = a[j, i] = c
    GRAPHS_CCO.append(a)


class FakeModel:
    """Duck-typed DiffMS: ``encode`` returns a fixed fingerprint, ``sample`` picks hand-written graphs."""

    def __init__(self, weights=(0.4, 0.2, 0.2, 0.1, 0.1), fail=False):
        self.config = preset("tiny")
        self.weights = torch.tensor(weights)
        self.fail = fail
        self.encoded, self.sampled, self.hydrogens = [], [], []
        fp = morgan_bits(Chem.MolFromSmiles("COC")).astype(np.float32)
        self.fp = torch.from_numpy(fp)[None]                                # (1, 4096) favours COC

    def encode(self, tokens):
        self.encoded.append({k: v.clone() for k, v in tokens.items()})
        b = tokens["types"].shape[0]
        return self.fp.expand(b, -1), torch.zeros(b, self.config.cond_dim)

    def sample(self, atom_types, y, n_samples=100, steps=None, generator=None, return_probs=False,
               hydrogens=None):
        if self.fail:
            raise RuntimeError("sampler exploded")
        self.sampled.append((list(atom_types), n_samples, steps))
        self.hydrogens.append(hydrogens)
        n = len(atom_types)
        if list(atom_types) == ["C", "C", "O"]:
            idx = torch.multinomial(self.weights, n_samples, replacement=True, generator=generator)
            adj = np.stack([GRAPHS_CCO[i] for i in idx.tolist()])
        else:
            # any other formula: a chain of single bonds (valid, usually the wrong H count for rings etc.)
            adj = np.zeros((n_samples, n, n), dtype=np.int64)
            for i in range(n - 1):
                adj[:, i, i + 1] = adj[:, i + 1, i] = 1
            torch.rand(1, generator=generator)
        if not return_probs:
            return adj
        probs = (0.9 * np.eye(5)[np.clip(adj, 0, 4)] + 0.02).astype(np.float32)   # confident in the sample
        return adj, probs


def make_annotator(model=None, **options):
    options = {"n_samples": 50, "steps": 7, "top_k": 5, "seed": 3, **options}
    return DiffMSAnnotator(model or FakeModel(), {"name": "fake", "sha256": "ab" * 32, "path": None}, **options)


def spectrum(formula="C2H6O", adduct="[M+H]+", mz=(29.03858, 31.01784, 47.04914), inten=(100.0, 35.0, 20.0),
             precursor=47.04914, **extra):
    md = {"title": "ethanol", "ionmode": "positive", **extra}
    if formula is not None:
        md["formula"] = formula
    if adduct is not None:
        md["adduct"] = adduct
    if precursor is not None:
        md["precursor_mz"] = precursor
    return Spectrum(np.array(mz, dtype=float), np.array(inten, dtype=float), metadata=md,
                    metadata_harmonization=False)


# ------------------------------------------------------------------------------------------ happy path
def test_annotates_a_clone_with_the_contract_metadata():
    model = FakeModel()
    ann = make_annotator(model, complete=False)       # counts as sampled (completion: see the test below)
    s = spectrum()
    before = s.metadata
    out = ann(s)
    assert out is not s and s.metadata == before                      # input untouched
    assert out.get("diffms_status") == "ok"
    cands = read_candidates(out.get("diffms_candidates"))
    # only the formula-exact, valid, connected structures, deduplicated: ethanol and dimethyl ether
    assert sorted(c["smiles"] for c in cands) == ["CCO", "COC"]
    assert all(c["formula"] == "C2H6O" for c in cands)
    counts = {c["smiles"]: c["count"] for c in cands}
    # replay the generator the annotator must have used: seed 3, the spectrum's identity, formula, adduct
    gen = torch.Generator().manual_seed(derive_seed(3, spectrum_key(s), "C2H6O", "[M+H]+"))
    drawn = np.bincount(torch.multinomial(model.weights, 50, replacement=True, generator=gen).numpy(),
                        minlength=5)
    assert counts == {"CCO": drawn[0], "COC": drawn[1]}
    n_valid = out.get("diffms_n_valid")
    assert n_valid == drawn[0] + drawn[1] + drawn[2]                  # vinyl alcohol is valid ...
    assert out.get("diffms_n_formula_match") == drawn[0] + drawn[1]   # ... but has the wrong formula
    for c in cands:
        assert c["frequency"] == pytest.approx(c["count"] / (drawn[0] + drawn[1]), abs=1e-6)
    # the predicted fingerprint is exactly COC's, so COC ranks first even if sampled less often
    assert cands[0]["smiles"] == "COC" and cands[0]["tanimoto"] == 1.0
    assert cands[0]["score"] >= cands[1]["score"]
    assert out.get("diffms_smiles") == "COC"
    assert out.get("diffms_inchikey") == Chem.MolToInchiKey(Chem.MolFromSmiles("COC"))
    assert out.get("diffms_score") == cands[0]["score"] and 0 <= out.get("diffms_score") <= 1
    assert out.get("diffms_formula") == "C2H6O"
    assert out.get("diffms_formula_source") == "metadata"
    assert out.get("diffms_adduct") == "[M+H]+" and out.get("diffms_adduct_assumed") is False
    assert out.get("diffms_model") == "fake@abababababab"
    assert (out.get("diffms_n_samples"), out.get("diffms_steps"), out.get("diffms_seed")) == (50, 7, 3)
    assert isinstance(out.get("diffms_seconds"), float)
    # the encoder saw exactly one unpadded spectrum: 3 annotated peaks + CLS
    assert model.encoded[0]["types"].shape == (1, 4) and model.encoded[0]["types"][0, -1] == 3
    assert model.sampled == [(["C", "C", "O"], 50, 7)]
    # every value is a plain Python type (matchms exports them)
    for key in METADATA_KEYS:
        v = out.get(key)
        assert v is None or type(v) in (str, int, float, bool), (key, type(v))


def test_adduct_assumed_from_ion_mode():
    out = make_annotator()(spectrum(adduct=None))
    assert out.get("diffms_status") == "ok"
    assert out.get("diffms_adduct") == "[M+H]+" and out.get("diffms_adduct_assumed") is True


def test_steps_default_to_model_and_validation():
    ann = make_annotator(steps=None)
    assert ann.steps == 500
    with pytest.raises(ValueError):
        make_annotator(steps=501)
    with pytest.raises(ValueError):
        make_annotator(n_samples=0)


# ------------------------------------------------------------------------------------------ statuses
@pytest.mark.parametrize("kwargs, code, text", [
    ({"mz": (), "inten": ()}, "no_peaks", "no peaks"),
    ({"mz": (29.0, 31.0), "inten": (0.0, 0.0)}, "no_peaks", "zero"),
    ({"mz": (29.0, np.inf), "inten": (1.0, 1.0)}, "invalid_peaks", "non-finite m/z"),   # NaN m/z: matchms refuses
    ({"mz": (29.0, 31.0), "inten": (1.0, np.nan)}, "invalid_peaks", "non-finite intensity"),
    ({"mz": (29.0, 31.0), "inten": (1.0, np.inf)}, "invalid_peaks", "non-finite intensity"),
    ({"mz": (29.0, 31.0), "inten": (1.0, -1.0)}, "invalid_peaks", "negative intensity"),
    ({"formula": None, "precursor": None}, "no_formula", "no molecular formula"),
    ({"formula": "C2H6Xx"}, "invalid_formula", ""),
    ({"formula": "C3H8O"}, "formula_mismatch", "C3H8O"),
    ({"formula": "C2H5Br", "precursor": None}, "unsupported_element", "Br"),
    ({"adduct": "[M-H]-", "precursor": None}, "unsupported_adduct", "[M-H]-"),
    ({"adduct": "[2M+H]+"}, "unsupported_adduct", "2M"),
    ({"formula": "C60H122", "precursor": None}, "too_many_atoms", "60 heavy atoms"),
    ({"formula": "CH4", "precursor": None}, "too_few_atoms", "1 heavy atom"),
])
def test_skip_statuses(kwargs, code, text):
    model = FakeModel()
    out = make_annotator(model)(spectrum(**kwargs))
    status = out.get("diffms_status")
    assert status_code(status) == code, status
    assert text in status
    assert code in STATUS_CODES
    assert read_candidates(out.get("diffms_candidates")) == [] and out.get("diffms_smiles") is None
    assert model.sampled == []                                         # nothing was sampled
    assert out.get("diffms_model") == "fake@abababababab"


def test_no_annotated_peaks_is_not_a_skip():
    # peaks that match no subformula of C2H6O within 20 ppm: only the CLS token is encoded
    model = FakeModel()
    out = make_annotator(model)(spectrum(mz=(33.5, 40.2), inten=(10.0, 5.0)))
    assert status_code(out.get("diffms_status")) == "no_annotated_peaks"
    assert model.encoded[0]["types"].shape == (1, 1)
    assert len(read_candidates(out.get("diffms_candidates"))) == 2 and out.get("diffms_smiles")


def test_no_valid_candidates():
    out = make_annotator(FakeModel(weights=(0, 0, 0.5, 0.3, 0.2)), complete=False)(spectrum())
    status = out.get("diffms_status")
    assert status_code(status) == "no_valid_candidates", status
    assert out.get("diffms_n_valid") > 0 and out.get("diffms_n_formula_match") == 0
    assert out.get("diffms_formula") == "C2H6O" and out.get("diffms_smiles") is None


def test_unexpected_error_becomes_status_and_is_logged(caplog):
    ann = make_annotator(FakeModel(fail=True))
    with caplog.at_level(logging.ERROR, logger="matchms.diffms"):
        outs = list(ann.annotate_many([spectrum(title="bad one"), None, spectrum(title="bad two")]))
    assert outs[1] is None
    assert outs[0].get("diffms_status") == "error: RuntimeError: sampler exploded"
    assert outs[2].get("diffms_status") == "error: RuntimeError: sampler exploded"
    messages = [r.getMessage() for r in caplog.records if r.name == "matchms.diffms"]
    assert any("title=bad one" in m and "sampler exploded" in m for m in messages)
    assert any("title=bad two" in m for m in messages)


def test_none_in_none_out_and_stale_keys_removed():
    ann = make_annotator(FakeModel(weights=(0, 0, 0.5, 0.3, 0.2)), complete=False)
    assert ann(None) is None
    first = make_annotator()(spectrum())
    assert first.get("diffms_smiles")
    again = ann(first)                                                # re-annotated, now without candidates
    assert status_code(again.get("diffms_status")) == "no_valid_candidates"
    assert again.get("diffms_smiles") is None and again.get("diffms_score") is None
    assert first.get("diffms_smiles")                                 # input untouched


# ------------------------------------------------------------------------------------------ formulas
def test_several_formula_candidates_are_merged_by_score():
    # SIRIUS proposes two formulas; the metadata has none
    sirius = {"ethanol": [("C2H6O", "[M+H]+", 10.0), ("C3H8O", "[M+H]+", 5.0)]}
    model = FakeModel()
    s = spectrum(formula=None, precursor=None)
    out = make_annotator(model, formula_context={"sirius_formulas": sirius})(s)
    assert [a for a, _, _ in model.sampled] == [["C", "C", "O"], ["C", "C", "C", "O"]]
    assert model.hydrogens == [6, 8]                    # each candidate's hydrogen count reaches the decoder
    cands = read_candidates(out.get("diffms_candidates"))
    formulas = {c["formula"] for c in cands}
    assert formulas == {"C2H6O", "C3H8O"}                             # CCCO chain has formula C3H8O
    scores = [c["score"] for c in cands]
    assert scores == sorted(scores, reverse=True)
    assert out.get("diffms_formula_source") == "sirius"
    assert out.get("diffms_formula") == cands[0]["formula"]
    # max_formulas=1 keeps only SIRIUS' first formula
    model1 = FakeModel()
    make_annotator(model1, max_formulas=1, formula_context={"sirius_formulas": sirius})(s)
    assert len(model1.sampled) == 1


def test_mass_decomposition_formula_when_none_given():
    out = make_annotator()(spectrum(formula=None))
    assert out.get("diffms_formula_source") == "mass_decomposition"
    assert out.get("diffms_formula") == "C2H6O"
    assert out.get("diffms_status") == "ok"


# ------------------------------------------------------------------------------------------ determinism
def test_seeding_is_stable_and_order_independent():
    specs = [spectrum(title=f"s{i}") for i in range(5)]
    a = [o.get("diffms_candidates") for o in make_annotator().annotate_many(specs)]
    b = [o.get("diffms_candidates") for o in make_annotator().annotate_many(specs[:2])]
    c = [make_annotator()(s).get("diffms_candidates") for s in reversed(specs)][::-1]
    assert a[:2] == b and a == c
    assert len(set(a)) > 1                                             # identities differ -> seeds differ
    # another seed gives other samples
    f = [make_annotator(seed=4)(s).get("diffms_candidates") for s in specs]
    assert f != a


def test_annotate_many_is_lazy():
    model = FakeModel()
    it = make_annotator(model).annotate_many(spectrum(title=f"s{i}") for i in range(5))
    assert model.sampled == []
    first = next(it)
    assert first.get("diffms_status") == "ok" and len(model.sampled) == 1
    assert len(list(it)) == 4


def test_seed_none_is_drawn_and_recorded():
    ann = make_annotator(seed=None)
    assert isinstance(ann.seed, int)
    out = ann(spectrum())
    assert out.get("diffms_seed") == ann.seed
    replay = make_annotator(seed=ann.seed)(spectrum())
    assert replay.get("diffms_candidates") == out.get("diffms_candidates")


def test_spectrum_key_and_derive_seed():
    s = spectrum()
    assert spectrum_key(s) == spectrum_key(s.clone())
    other = spectrum(inten=(100.0, 35.0, 21.0))
    assert spectrum_key(other) != spectrum_key(s)
    assert derive_seed(1, "a") == derive_seed(1, "a") != derive_seed(2, "a")
    assert 0 <= derive_seed(1, "a") < 2 ** 63
    # pinned value: a change of the derivation would silently change every published result
    assert derive_seed(0, "index:0", "C2H6O", "[M+H]+") == derive_seed(0, "index:0", "C2H6O", "[M+H]+")
    import hashlib
    expected = int.from_bytes(hashlib.sha256(b"0|index:0|C2H6O|[M+H]+").digest()[:8], "little") & (2 ** 63 - 1)
    assert derive_seed(0, "index:0", "C2H6O", "[M+H]+") == expected


# ------------------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("ext, save, load", [
    ("mgf", lambda s, f: save_as_mgf(s, f, file_mode="w"), load_from_mgf),
    ("msp", lambda s, f: save_as_msp(s, f, mode="w"), load_from_msp),
    ("json", save_as_json, load_from_json),
])
def test_metadata_survives_matchms_export(tmp_path, ext, save, load):
    out = make_annotator()(spectrum())
    skipped = make_annotator()(spectrum(formula="C2H5Br", precursor=None))
    f = str(tmp_path / f"a.{ext}")
    save([out, skipped], f)
    back = list(load(f))
    assert len(back) == 2
    want, got = read_annotation(out), read_annotation(back[0])
    for key in ("status", "smiles", "inchikey", "score", "formula", "formula_source", "adduct",
                "adduct_assumed", "model", "n_samples", "steps", "seed", "n_valid", "n_formula_match"):
        assert got[key] == want[key], key
    assert got["candidates"] == want["candidates"]
    assert isinstance(got["score"], float) and isinstance(got["adduct_assumed"], bool)
    assert read_annotation(back[1])["status"].startswith("unsupported_element")
    assert read_annotation(back[1])["candidates"] == []


def test_read_candidates_accepts_lists_and_python_repr():
    c = [{"smiles": "CCO", "score": 0.5}]
    assert read_candidates(c) == c
    assert read_candidates(json.dumps(c)) == c
    assert read_candidates(repr(c)) == c
    assert read_candidates(None) == [] and read_candidates("") == []
    with pytest.raises(ValueError):
        read_candidates('{"a": 1}')


# ------------------------------------------------------------------------------------------ tiny checkpoint
@pytest.fixture(scope="module")
def tiny_annotator_factory(conformance_dir):
    torch.set_num_threads(1)

    def make(**options):
        options = {"n_samples": 64, "steps": 10, "top_k": 5, "seed": 0, **options}
        return DiffMSAnnotator.from_pretrained(str(conformance_dir / "tiny_official.ckpt.gz"), **options)
    return make


def test_tiny_checkpoint_end_to_end(tiny_annotator_factory):
    spectra = list(load_from_mgf(str(FIXTURE)))
    ann = tiny_annotator_factory()
    outs = list(ann.annotate_many(spectra))
    codes = [status_code(o.get("diffms_status")) for o in outs]
    assert codes[4] == "unsupported_element" and codes[5] == "unsupported_adduct"
    assert all(c in ("ok", "no_valid_candidates", "no_annotated_peaks") for c in codes[:4]), codes
    assert codes[0] == "ok"                                    # ethanol: valid samples at 64 x 10
    assert outs[3].get("diffms_formula_source") == "mass_decomposition"
    for o in outs[:4]:
        for c in read_candidates(o.get("diffms_candidates")):
            mol = Chem.MolFromSmiles(c["smiles"])
            assert mol is not None and len(Chem.GetMolFrags(mol)) == 1
            from rdkit.Chem.rdMolDescriptors import CalcMolFormula
            assert CalcMolFormula(mol) == o.get("diffms_formula") == c["formula"]   # formula-exact
            assert 0.0 <= c["score"] <= 1.0
    assert outs[0].get("diffms_model").startswith("tiny_official.ckpt.gz@")
    assert tiny_annotator_factory(top_k=2).model is ann.model                  # weights loaded once per process
    # deterministic: a second annotator, order changed
    again = [tiny_annotator_factory().annotate(s) for s in reversed(spectra)][::-1]
    assert [o.get("diffms_candidates") for o in again] == [o.get("diffms_candidates") for o in outs]


def test_completion_turns_unusable_samples_into_formula_exact_candidates():
    """Samples that are invalid or have the wrong H count are replaced by constrained decoding (counted, marked)."""
    plain = make_annotator(FakeModel(weights=(0, 0, 0.5, 0.3, 0.2)), complete=False)(spectrum())
    out = make_annotator(FakeModel(weights=(0, 0, 0.5, 0.3, 0.2)))(spectrum())
    assert status_code(plain.get("diffms_status")) == "no_valid_candidates"
    assert out.get("diffms_status") == "ok"
    assert out.get("diffms_n_formula_match") == 0 and out.get("diffms_n_completed") == 50
    cands = read_candidates(out.get("diffms_candidates"))
    assert {c["smiles"] for c in cands} <= {"CCO", "COC"}
    assert all(c["formula"] == "C2H6O" for c in cands)
    assert {c["source"] for c in cands} == {"decoded"}
    assert "constrained decoding is off" in plain.get("diffms_status")
    sampled = make_annotator(FakeModel())(spectrum())                      # mostly valid ethanol / DME samples
    assert "sampled" in {c["source"].split("+")[0] for c in read_candidates(sampled.get("diffms_candidates"))}


def test_heavy_atom_limit_defaults_to_the_trained_size():
    model = FakeModel()
    model.config = model.config.replace(max_n_nodes=2, max_heavy_atoms=10)
    out = make_annotator(model)(spectrum())                                # C2H6O: 3 heavy atoms
    assert status_code(out.get("diffms_status")) == "too_many_atoms"
    assert "trained on at most 2" in out.get("diffms_status") and "up to 10" in out.get("diffms_status")
    assert make_annotator(model, max_heavy_atoms=3)(spectrum()).get("diffms_status") == "ok"
    with pytest.raises(ValueError):
        make_annotator(model, max_heavy_atoms=11)
