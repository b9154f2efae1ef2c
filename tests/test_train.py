"""Training commands on a tiny model and hand-made fixtures (tests/fixtures/train_molecules.smi,
train_tiny.mgf, tiny_val.mgf): outputs, configuration precedence, exact resume, the fold guard, the
losses and an overfitting check."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from rdkit import Chem
from safetensors.torch import load_file

from matchms_diffms.train import common
from matchms_diffms.train.cli import diffms_register_commands, train_group
from matchms_diffms.train.assembly import init_fold_merge
from matchms_diffms.train.graphs import GraphSet, featurize_smiles
from matchms_diffms.train.encoder import fingerprint_losses, fold_or, tanimoto

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SMI = FIXTURES / "train_molecules.smi"
TRAIN_MGF = FIXTURES / "train_tiny.mgf"
VAL_MGF = FIXTURES / "tiny_val.mgf"

TINY = {"preset": "tiny", "encoder_hidden": 16, "encoder_heads": 2, "magma_modulo": 16,
        "fp_sizes": [32, 64, 128, 256, 512], "cond_dim": 128, "decoder_layers": 2, "hidden_mlp_X": 16,
        "hidden_mlp_E": 16, "hidden_mlp_y": 32, "dx": 16, "de": 16, "dy": 16, "decoder_heads": 2,
        "dim_ffX": 16, "dim_ffE": 16, "dim_ffy": 16}
QUIET = ["--no-progress", "--threads", "1", "--log-every", "1"]


@pytest.fixture(scope="module")
def tiny_json(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


def invoke(*args, ok=True):
    result = CliRunner().invoke(train_group, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def records(run: Path) -> list[dict]:
    return common.read_log(run / "log.jsonl")


def decoder_args(run, tiny_json, *extra):
    return ["decoder", "--out", run, "--smiles", SMI, "--exclude-mgf", VAL_MGF, "--model-config", tiny_json,
            "--batch-size", 4, *QUIET, *extra]


@pytest.fixture(scope="module")
def decoder_run(tmp_path_factory, tiny_json) -> Path:
    run = tmp_path_factory.mktemp("dec") / "run"
    invoke(*decoder_args(run, tiny_json, "--steps", 4, "--val-fraction", 0, "--seed", 3))
    return run


@pytest.fixture(scope="module")
def encoder_run(tmp_path_factory, tiny_json) -> Path:
    run = tmp_path_factory.mktemp("enc") / "run"
    invoke("encoder", "--out", run, "--train", TRAIN_MGF, "--val", VAL_MGF, "--model-config", tiny_json,
           "--steps", 4, "--batch-size", 4, *QUIET)
    return run


# ------------------------------------------------------------------------------------------ decoder
# kept molecules of train_molecules.smi (by hand): 22 entries minus bromophenol (Br), tetramethylammonium
# (charge), sodium acetate (2 fragments), methane (1 atom), the second phenylalanine (same ik14) and
# theobromine (a structure of tiny_val.mgf, excluded)
KEPT = ["CC(=O)Nc1ccc(O)cc1", "CC(=O)Oc1ccccc1C(=O)O", "CN1CCCC1c1cccnc1", "CC(C)Cc1ccc(C(C)C(=O)O)cc1",
        "NCCc1c[nH]c2ccc(O)cc12", "NCCc1ccc(O)c(O)c1", "N[C@@H](Cc1ccccc1)C(=O)O", "CC(C)OC(=O)Nc1cccc(Cl)c1",
        "OC(Cn1cncn1)(Cn1cncn1)c1ccc(F)cc1F", "Nc1ncnc2[nH]cnc12", "OCC(O)CO", "Cn1c(=O)c2c(ncn2C)n(C)c1=O",
        "O=C(O)c1ccccc1O", "CCOC(=O)C=Cc1ccccc1", "OP(=O)(O)OCC(O)CO", "CSCCC(N)C(=O)O"]


def test_decoder_run_filters_excludes_and_records_statistics(decoder_run):
    start = records(decoder_run)[0]
    assert start["event"] == "start"
    data = start["data"]
    assert data["skipped"] == {"unsupported_element": 1, "charged": 1, "multiple_fragments": 1,
                               "too_few_atoms": 1, "duplicate": 1, "excluded_fold": 1}
    assert data["kept"] == len(KEPT) == start["n_train"] and start["n_val"] == 0
    assert data["excluded_structures"] == 3

    # edge marginals and max_n_nodes recomputed independently from RDKit
    counts = np.zeros(5)
    bond_class = {Chem.BondType.SINGLE: 1, Chem.BondType.DOUBLE: 2, Chem.BondType.TRIPLE: 3,
                  Chem.BondType.AROMATIC: 4}
    pairs, max_n = 0, 0
    for smi in KEPT:
        mol = Chem.MolFromSmiles(smi)
        n = mol.GetNumAtoms()
        pairs += n * (n - 1)
        max_n = max(max_n, n)
        for b in mol.GetBonds():
            counts[bond_class[b.GetBondType()]] += 2
    counts[0] = pairs - counts[1:].sum()
    expected = counts / counts.sum()
    weights_cfg = json.loads((decoder_run / "weights" / "config.json").read_text())
    model_cfg = weights_cfg["config"]
    np.testing.assert_allclose(model_cfg["edge_marginals"], expected, atol=1e-8)
    assert model_cfg["max_n_nodes"] == max_n == 22
    assert model_cfg["reference_padding"] is False
    assert weights_cfg["info"]["trained"] == ["decoder"]
    assert json.loads((decoder_run / "model_config.json").read_text()) == model_cfg


def test_decoder_run_log_checkpoint_and_weights(decoder_run):
    from matchms_diffms.weights import load_weights_dir

    recs = records(decoder_run)
    steps = [r for r in recs if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    for r in steps:
        assert np.isfinite(r["loss"]) and r["lr"] > 0 and r["elapsed_s"] >= 0 and r["epoch"] == r["step"] / 4
    end = recs[-1]
    assert end["event"] == "end" and end["finished"] and end["world_size"] == 1
    cfg = json.loads((decoder_run / "run_config.json").read_text())
    assert cfg["lr"] == 1.5e-3 and cfg["batch_size"] == 4 and cfg["seed"] == 3 and cfg["command"] == "decoder"
    assert [p.name for p in common.checkpoint_paths(decoder_run)] == ["step-00000004.pt"]
    ckpt = common.load_checkpoint(common.checkpoint_paths(decoder_run)[-1])    # weights_only=True inside
    assert ckpt["step"] == 4 and set(ckpt) >= {"model", "optimizer", "scheduler", "rng"}
    model, info = load_weights_dir(decoder_run / "weights")
    for k, v in model.decoder.state_dict().items():
        torch.testing.assert_close(v, ckpt["model"][k], rtol=0, atol=0)
    assert info["stage"] == "decoder"
    # merge layer of the exported model is the fold map 512 -> 128
    w = model.merge_function.weight.detach()
    assert w.shape == (128, 512) and float(w.sum()) == 512 and float(model.merge_function.bias.detach().abs().sum()) == 0
    assert all(float(w[j % 128, j]) == 1 for j in range(512))


@pytest.mark.parametrize("source", ["weights", "part", "run"])
def test_decoder_init_from_starts_at_the_given_weights(decoder_run, tmp_path, source):
    from matchms_diffms.train.assembly import save_part
    from matchms_diffms.weights import load_weights_dir

    start, _ = load_weights_dir(decoder_run / "weights")
    # the exported weights, the decoder alone ('train save-part') or the run's newest checkpoint
    init = {"weights": decoder_run / "weights", "part": tmp_path / "part", "run": decoder_run}[source]
    if source == "part":
        save_part(decoder_run, "decoder", init)
    run = tmp_path / "cont"
    # no --model-config: the architecture comes from the starting weights; --steps 0 exports them as loaded
    invoke("decoder", "--out", run, "--smiles", SMI, "--exclude-mgf", VAL_MGF, "--batch-size", 4, *QUIET,
           "--steps", 0, "--val-fraction", 0, "--init-from", init)
    same, _ = load_weights_dir(run / "weights")
    for k, v in start.decoder.state_dict().items():
        assert torch.equal(v, same.decoder.state_dict()[k]), k
    assert records(run)[0]["data"]["init_from"] == str(init.resolve())


def test_decoder_init_from_then_trains_away_from_the_given_weights(decoder_run, tmp_path):
    from matchms_diffms.weights import load_weights_dir

    start, _ = load_weights_dir(decoder_run / "weights")
    invoke("decoder", "--out", tmp_path / "more", "--smiles", SMI, "--exclude-mgf", VAL_MGF, "--batch-size", 4,
           *QUIET, "--steps", 2, "--val-fraction", 0, "--init-from", decoder_run / "weights")
    moved, _ = load_weights_dir(tmp_path / "more" / "weights")
    assert any(not torch.equal(v, moved.decoder.state_dict()[k]) for k, v in start.decoder.state_dict().items())


def test_save_part_averages_the_newest_checkpoints(tiny_json, tmp_path):
    from safetensors.torch import load_file

    run = tmp_path / "run"
    invoke(*decoder_args(run, tiny_json, "--steps", 3, "--val-fraction", 0, "--ckpt-every", 1, "--keep-checkpoints", 0))
    ckpts = [common.load_checkpoint(p)["model"] for p in common.checkpoint_paths(run)]
    assert len(ckpts) == 3
    invoke("save-part", run, "-o", tmp_path / "mean", "--average", 2)
    mean = load_file(tmp_path / "mean" / "decoder.safetensors")
    assert set(mean) == set(ckpts[-1])
    for key, value in mean.items():
        torch.testing.assert_close(value, (ckpts[1][key] + ckpts[2][key]) / 2, rtol=0, atol=1e-7)
    assert any(not torch.equal(mean[k], ckpts[2][k]) for k in mean)     # not the newest alone
    cfg = json.loads((tmp_path / "mean" / "model_config.json").read_text())
    assert cfg["_step"] == 3 and cfg["_averaged_steps"] == [2, 3]
    # the mean is a starting point like any part folder; asking for more checkpoints than there are fails
    invoke("decoder", "--out", tmp_path / "cont", "--smiles", SMI, "--exclude-mgf", VAL_MGF, "--batch-size", 4,
           *QUIET, "--steps", 0, "--val-fraction", 0, "--init-from", tmp_path / "mean")
    result = invoke("save-part", run, "-o", tmp_path / "too-many", "--average", 4, ok=False)
    assert result.exit_code != 0 and "at least 4 (found 3)" in result.output
    assert not (tmp_path / "too-many").exists()


def test_featurised_cache_is_plain_npz_and_reused(decoder_run, tiny_json, tmp_path):
    cache = next((decoder_run / "cache").glob("decoder-data-*.npz"))
    with np.load(cache, allow_pickle=False) as data:       # no pickled objects inside
        assert "fp" in data.files and data["fp"].shape == (len(KEPT), 128 // 8)
    # a second run with the same data settings and --cache-dir reuses the file (no featurisation)
    run = tmp_path / "again"
    invoke(*decoder_args(run, tiny_json, "--steps", 1, "--val-fraction", 0, "--seed", 3,
                         "--cache-dir", decoder_run / "cache"))
    assert not (run / "cache").exists()
    assert records(run)[0]["data"]["cache"] == str(cache)


def test_featurize_smiles_graph_and_fingerprint():
    from matchms_diffms.chem.molecules import morgan_fingerprint

    atoms = ["C", "O", "P", "N", "S", "Cl", "F", "H"]
    (ik14, nodes, bonds, fp, hydrogens), reason = featurize_smiles("OC(=O)c1ccccc1", atoms, 256, 2, 50)
    assert reason is None and ik14 == "WPYMKLBDIGXBTP" and hydrogens == 6
    assert nodes.tolist() == [1, 0, 1, 0, 0, 0, 0, 0, 0]
    # node order = atoms of the canonical non-isomeric SMILES O=C(O)c1ccccc1
    assert sorted(map(tuple, bonds.tolist())) == [(0, 1, 2), (1, 2, 1), (1, 3, 1), (3, 4, 4), (3, 8, 4),
                                                  (4, 5, 4), (5, 6, 4), (6, 7, 4), (7, 8, 4)]
    np.testing.assert_array_equal(np.unpackbits(fp), morgan_fingerprint("OC(=O)c1ccccc1", 256, 2))
    assert featurize_smiles("CCCCCC", atoms, 256, 2, 5) == (None, "too_many_atoms")
    assert featurize_smiles("C[CH2]", atoms, 256, 2, 50) == (None, "radical")
    assert featurize_smiles("not a smiles", atoms, 256, 2, 50) == (None, "invalid_smiles")


def test_graph_batch_layout():
    g = GraphSet.from_records([np.array([0, 1], np.int8), np.array([0, 0, 3], np.int8)],
                              [np.array([[0, 1, 2]], np.int16), np.array([[0, 1, 1], [1, 2, 3]], np.int16)])
    X, E, mask = g.batch([0, 1], 8, torch.device("cpu"))
    assert X.shape == (2, 3, 8) and E.shape == (2, 3, 3, 5)
    assert mask.tolist() == [[True, True, False], [True, True, True]]
    assert E[0, 0, 1].tolist() == [0, 0, 1, 0, 0] and E[0, 1, 0].tolist() == [0, 0, 1, 0, 0]
    assert E[0, 2].abs().sum() == 0 and E[0, :, 2].abs().sum() == 0          # padding all-zero
    assert E[1, 0, 2].tolist() == [1, 0, 0, 0, 0]                            # no bond = class 0
    assert torch.diagonal(E, dim1=1, dim2=2).abs().sum() == 0                # diagonal all-zero
    assert E[1, 2, 1].tolist() == [0, 0, 0, 1, 0] and X[1, 2, 3] == 1 and X[0, 2].sum() == 0


def test_graph_set_subset_and_arrays_round_trip():
    rng = np.random.default_rng(0)
    nodes = [rng.integers(0, 8, rng.integers(1, 6)).astype(np.int8) for _ in range(50)]
    bonds = [rng.integers(0, 5, (rng.integers(0, 4), 3)).astype(np.int16) for _ in range(50)]
    fps = [rng.integers(0, 255, 4).astype(np.uint8) for _ in range(50)]
    g = GraphSet.from_records(nodes, bonds, fps, [f"K{i:013d}" for i in range(50)])
    g = GraphSet.from_arrays(g.arrays())
    idx = rng.permutation(50)[:20]
    sub = g.subset(idx)
    assert len(sub) == 20
    for k, i in enumerate(idx):
        np.testing.assert_array_equal(sub.nodes(k), nodes[i])
        np.testing.assert_array_equal(sub.bond_rows(k), bonds[i])
        np.testing.assert_array_equal(sub.fp[k], fps[i])
        assert sub.ik14[k] == f"K{i:013d}".encode()


# ------------------------------------------------------------------------------------------ fold map
def test_fold_map_reproduces_rdkit_folding():
    """RDKit's 2048-bit Morgan fingerprint is the 4096-bit one OR-folded (bit = hash mod size)."""
    from matchms_diffms.chem.molecules import morgan_fingerprint

    merge = torch.nn.Linear(4096, 2048)
    assert init_fold_merge(merge)
    for smi in KEPT + ["CCCCCCCCCCCCCCCC(=O)OCC(COP(=O)(O)OCCN)OC(=O)CCCCCCCC=CCCCCCCCC"]:
        fp4096 = torch.from_numpy(morgan_fingerprint(smi, 4096, 2).astype(np.float32))[None]
        fp2048 = torch.from_numpy(morgan_fingerprint(smi, 2048, 2).astype(np.float32))[None]
        torch.testing.assert_close(fold_or(fp4096, 2048), fp2048, rtol=0, atol=0)
        with torch.no_grad():
            y = merge(fp4096)
        torch.testing.assert_close(y.clamp(max=1), fp2048, rtol=0, atol=0)
    assert not init_fold_merge(torch.nn.Linear(100, 30))       # not a fold: left alone


# ------------------------------------------------------------------------------------------ encoder
def test_encoder_losses():
    target = torch.zeros(2, 512)
    target[0, [1, 300]] = 1
    target[1, [7]] = 1
    perfect = {"fp": target.clone(), "int_preds": [fold_or(target, s) for s in (32, 64, 128, 256)]}
    losses = fingerprint_losses(perfect, target, 0.4)
    torch.testing.assert_close(losses["total"], torch.zeros(2), atol=1e-6, rtol=0)
    # p = 0.5 everywhere: cos = |t|_1 / (sqrt(n) |t|_2) for binary t
    half = {"fp": torch.full((2, 512), 0.5), "int_preds": [torch.full((2, s), 0.5) for s in (32, 64, 128, 256)]}
    losses = fingerprint_losses(half, target, 0.4)
    expected_main = torch.tensor([1 - 2 / (512 ** 0.5 * 2 ** 0.5), 1 - 1 / 512 ** 0.5])
    torch.testing.assert_close(losses["main"], expected_main, rtol=1e-5, atol=1e-6)
    # bit 300 folds onto 300 % 256 = 44, 300 % 128 = 44, 300 % 64 = 44, 300 % 32 = 12; bit 1 stays 1
    assert fold_or(target, 32)[0].nonzero().flatten().tolist() == [1, 12]
    iterative0 = sum(1 - 2 / (s ** 0.5 * 2 ** 0.5) for s in (32, 64, 128, 256))
    torch.testing.assert_close(losses["iterative"][0], torch.tensor(iterative0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses["total"], losses["main"] + 0.4 * losses["iterative"])
    assert tanimoto(torch.tensor([[1., 1, 0, 0]]), torch.tensor([[1., 0, 1, 0]])).item() == pytest.approx(1 / 3)


def test_encoder_run_validation_metrics_and_export(encoder_run):
    from matchms_diffms.weights import load_weights_dir

    recs = records(encoder_run)
    start = recs[0]
    assert start["n_train"] == 12 and start["n_val"] == 3
    assert start["data"]["train"]["skipped"] == {} and start["data"]["val"]["used"] == 3
    val = [r for r in recs if "val_loss" in r]
    assert val and {"val_cosine", "val_tanimoto"} <= set(val[-1])
    assert all(np.isfinite(r["main_loss"]) and np.isfinite(r["iterative_loss"]) for r in recs if "loss" in r)
    cfg = json.loads((encoder_run / "run_config.json").read_text())
    assert (cfg["optimizer"], cfg["lr"], cfg["weight_decay"]) == ("radam", 7.7e-4, 1e-7)
    model, info = load_weights_dir(encoder_run / "weights")
    assert info["trained"] == ["encoder"] and model.config.reference_padding is False


def test_encoder_skips_spectra_the_model_cannot_use(tmp_path, tiny_json):
    # the [M+Na]+ and a negative-mode copy: with only [M+H]+ slots both are skipped and counted
    text = TRAIN_MGF.read_text()
    neg = text.split("END IONS")[0].replace("ADDUCT=[M+H]+", "ADDUCT=[M-H]-").replace("IONMODE=positive",
                                                                                     "IONMODE=negative")
    mgf = tmp_path / "mixed_train.mgf"
    mgf.write_text(text + "\n" + neg.strip() + "\nEND IONS\n")
    cfg = tmp_path / "only_h.json"
    cfg.write_text(json.dumps({**TINY, "adducts": ["[M+H]+"]}))
    run = tmp_path / "run"
    invoke("encoder", "--out", run, "--train", mgf, "--model-config", cfg, "--steps", 1, "--batch-size", 4, *QUIET)
    data = records(run)[0]["data"]["train"]
    assert data["read"] == 13 and data["skipped"] == {"unsupported_adduct": 3} and data["used"] == 10


# ------------------------------------------------------------------------------------------ finetune
def test_finetune_assembles_pretrained_parts(decoder_run, encoder_run, tmp_path):
    from matchms_diffms.train.finetune import assemble_model
    from matchms_diffms.weights import load_weights_dir

    dec, _ = load_weights_dir(decoder_run / "weights")
    enc, _ = load_weights_dir(encoder_run / "weights")
    model, sources = assemble_model({"init": None, "encoder": str(encoder_run / "weights"),
                                     "decoder": str(decoder_run / "weights"), "seed": 0, "model": {}})
    assert sources["merge"] == "fold map"
    for part, ref in (("encoder", enc.encoder), ("decoder", dec.decoder)):
        for (k, v), (k2, v2) in zip(getattr(model, part).state_dict().items(), ref.state_dict().items()):
            assert k == k2
            torch.testing.assert_close(v, v2, rtol=0, atol=0)
    assert model.config.edge_marginals == dec.config.edge_marginals
    assert model.config.max_n_nodes == dec.config.max_n_nodes == 22

    run = tmp_path / "ft"
    invoke("finetune", "--out", run, "--encoder", encoder_run / "weights", "--decoder", decoder_run / "weights",
           "--train", TRAIN_MGF, "--val", VAL_MGF, "--steps", 3, "--batch-size", 4, *QUIET)
    recs = records(run)
    start = recs[0]
    # fluconazole, 22 heavy atoms, fits; all 12 spectra are usable; the 3 val spectra too
    assert start["n_train"] == 12 and start["n_val"] == 3
    assert {"val_loss", "val_tanimoto"} <= set([r for r in recs if "val_loss" in r][-1])
    tuned, info = load_weights_dir(run / "weights")
    assert info["trained"] == ["encoder", "merge", "decoder"]
    changed = [not torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), model.state_dict().values())]
    assert any(changed)
    cfg = json.loads((run / "run_config.json").read_text())
    assert cfg["lr"] == 2e-4 and cfg["optimizer"] == "adamw"


# ------------------------------------------------------------------------------------------ resume
def _weights(run: Path) -> dict:
    return load_file(str(run / "weights" / "model.safetensors"))


@pytest.mark.parametrize("command", ["decoder", "encoder"])
def test_resume_gives_the_parameters_of_an_uninterrupted_run(command, tmp_path, tiny_json):
    if command == "decoder":
        args = ["--smiles", SMI, "--val-fraction", 0.2, "--model-config", tiny_json]
    else:     # augmentation on: the noise generator state must survive the interruption too
        args = ["--train", TRAIN_MGF, "--model-config", tiny_json, "--augment-prob", 0.7]
    common_args = [*args, "--steps", 7, "--batch-size", 4, "--ckpt-every", 3, "--seed", 11, *QUIET]
    full, part = tmp_path / "full", tmp_path / "part"
    invoke(command, "--out", full, *common_args)
    invoke(command, "--out", part, *common_args, "--stop-at", 3)
    assert not (part / "weights").exists()
    assert [p.name for p in common.checkpoint_paths(part)] == ["step-00000003.pt"]
    # lose the logged work after the checkpoint, as a killed job would
    invoke(command, "--out", part, "--resume", "--no-progress")
    a, b = _weights(full), _weights(part)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    losses_full = [r["loss"] for r in records(full) if "loss" in r]
    losses_part = [r["loss"] for r in records(part) if "loss" in r]
    assert losses_full == losses_part and len(losses_full) == 7
    # a different seed gives different parameters (the comparison above can fail)
    other = tmp_path / "other"
    invoke(command, "--out", other, *[a if a != 11 else 12 for a in common_args])
    assert any(not torch.equal(_weights(other)[k], a[k]) for k in a)


def test_resume_refuses_to_change_the_run_and_fresh_runs_refuse_old_folders(decoder_run, tmp_path, tiny_json):
    run = tmp_path / "r"
    shutil.copytree(decoder_run, run)
    result = invoke("decoder", "--out", run, "--resume", "--lr", 0.5, "--no-progress", ok=False)
    assert result.exit_code != 0 and "lr" in result.output and "cannot change" in result.output
    result = invoke(*decoder_args(run, tiny_json, "--steps", 4), ok=False)
    assert result.exit_code != 0 and "--resume" in result.output
    result = invoke("encoder", "--out", run, "--resume", "--train", TRAIN_MGF, "--no-progress", ok=False)
    assert result.exit_code != 0 and "decoder" in result.output


def test_resume_log_drops_work_after_the_checkpoint(tmp_path):
    log = common.RunLog(tmp_path / "log.jsonl", common.Dist())
    for s in range(1, 6):
        log.write({"step": s, "loss": float(s)})
    log.truncate_after(3)
    assert [r["step"] for r in common.read_log(tmp_path / "log.jsonl")] == [1, 2, 3]


# ------------------------------------------------------------------------------------------ fold guard
def test_training_refuses_validation_and_test_inputs(tmp_path, tiny_json, decoder_run, encoder_run):
    cases = [
        ["encoder", "--train", VAL_MGF],
        ["finetune", "--train", VAL_MGF, "--decoder", decoder_run / "weights", "--encoder", encoder_run / "weights"],
        ["decoder", "--smiles-from-mgf", VAL_MGF],
    ]
    # a file with an innocent name whose records say FOLD=val
    disguised = tmp_path / "spectra.mgf"
    disguised.write_text(VAL_MGF.read_text())
    cases.append(["encoder", "--train", disguised])
    smi = tmp_path / "test_molecules.smi"
    smi.write_text("CCO\n")
    cases.append(["decoder", "--smiles", smi])
    for i, case in enumerate(cases):
        result = invoke(case[0], "--out", tmp_path / f"run{i}", *case[1:], "--model-config", tiny_json,
                        "--steps", 1, *QUIET, ok=False)
        assert result.exit_code != 0, case
        assert "refusing" in result.output and ("val" in result.output or "test" in result.output), result.output
    # validation files are fine for metrics (see test_encoder_run_validation_metrics_and_export)


# ------------------------------------------------------------------------------------------ configuration
def test_config_file_and_command_line_precedence(tmp_path, tiny_json):
    run_json = tmp_path / "run.json"
    run_json.write_text(json.dumps({"lr": 0.01, "batch_size": 2, "schedule": "cosine", "val_fraction": 0,
                                    "model": {"name": "from-file"}}))
    run = tmp_path / "run"
    invoke("decoder", "--out", run, "--config", run_json, "--smiles", SMI, "--batch-size", 8, "--steps", 2,
           "--model-config", tiny_json, *QUIET)
    cfg = json.loads((run / "run_config.json").read_text())
    assert cfg["lr"] == 0.01 and cfg["batch_size"] == 8 and cfg["schedule"] == "cosine"
    assert cfg["weight_decay"] == 1e-12 and cfg["smiles"] == [str(SMI.resolve())]
    assert cfg["model"]["name"] == "from-file" and cfg["model"]["dx"] == 16     # both model layers merged
    assert json.loads((run / "weights" / "config.json").read_text())["config"]["name"] == "from-file"
    assert [r["lr"] for r in records(run) if "loss" in r] == [0.01, 0.005]      # cosine, per step
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"learning_rate": 1}))
    result = invoke("decoder", "--out", tmp_path / "b", "--config", bad, "--smiles", SMI, *QUIET, ok=False)
    assert result.exit_code != 0 and "learning_rate" in result.output


def test_train_group_registers_through_the_plugin_hook():
    import click

    @click.group()
    def main():
        pass

    diffms_register_commands(main)
    assert set(main.commands["train"].commands) == {"decoder", "encoder", "finetune", "assemble", "pack-graphs",
                                                    "save-part"}


# ------------------------------------------------------------------------------------------ batching
def test_make_batches_is_deterministic_sharded_and_bucketed():
    sizes = np.array([5, 30, 6, 31, 7, 29, 8, 32, 5, 30, 6, 31, 20])
    b1 = common.make_batches(len(sizes), 4, seed=1, epoch=0, sizes=sizes, bucket="sorted")
    assert b1 == common.make_batches(len(sizes), 4, seed=1, epoch=0, sizes=sizes, bucket="sorted")
    assert b1 != common.make_batches(len(sizes), 4, seed=1, epoch=1, sizes=sizes, bucket="sorted")
    flat = [i for b in b1 for i in b]
    assert len(b1) == 3 and all(len(b) == 4 for b in b1) and len(set(flat)) == 12
    ranges = sorted((int(sizes[b].min()), int(sizes[b].max())) for b in b1)
    assert all(hi <= lo_next for (_, hi), (lo_next, _) in zip(ranges, ranges[1:]))   # consecutive size ranges
    padding = sum(int((sizes[b].max() - sizes[b]).sum()) for b in b1)
    unsorted = common.make_batches(len(sizes), 4, seed=1, epoch=0)
    assert padding < sum(int((sizes[b].max() - sizes[b]).sum()) for b in unsorted)
    # the item left out differs between epochs (random, not always the largest)
    left = {(set(range(13)) - {i for b in common.make_batches(13, 4, 1, e, sizes, "sorted") for i in b}).pop()
            for e in range(12)}
    assert len(left) > 3
    batch = [10, 11, 12, 13, 14]
    assert common.shard(batch, common.Dist(rank=0, world_size=2)) == [10, 12, 14]
    assert common.shard(batch, common.Dist(rank=1, world_size=2)) == [11, 13]
    with pytest.raises(ValueError):
        common.make_batches(1, 4, 0, 0, world_size=2)


def test_compact_graph_file_loads_identical_arrays_and_old_files_still_load(tmp_path):
    from matchms_diffms.train.graphs import GRAPHS_FORMAT, load_graphs, save_graphs, save_npz

    rng = np.random.default_rng(1)
    nodes = [rng.integers(0, 10, rng.integers(1, 46)).astype(np.int8) for _ in range(40)]
    bonds = [np.sort(rng.integers(0, 45, (rng.integers(0, 58), 3)), axis=1).astype(np.int16) for _ in range(40)]
    fps = [np.packbits(rng.random(2048) < 0.02) for _ in range(40)]
    g = GraphSet.from_records(nodes, bonds, fps, [f"K{i:013d}" for i in range(40)])
    save_graphs(tmp_path / "compact.npz", g, {"kept": 40})
    save_npz(tmp_path / "plain.npz", g.arrays(), {"kept": 40})
    with np.load(tmp_path / "compact.npz", allow_pickle=False) as data:
        assert str(data["format"]) == GRAPHS_FORMAT and data["bonds"].dtype == np.uint8
        assert "atom_offsets" not in data.files
    for name in ("compact.npz", "plain.npz"):
        back, meta = load_graphs(tmp_path / name)
        assert meta == {"kept": 40}
        for key in ("n_atoms", "atoms", "atom_offsets", "bonds", "bond_offsets", "fp", "ik14"):
            a, b = getattr(back, key), getattr(g, key)
            assert a.dtype == b.dtype and np.array_equal(a, b), (name, key)
    assert (tmp_path / "compact.npz").stat().st_size < (tmp_path / "plain.npz").stat().st_size

    result = invoke("pack-graphs", tmp_path / "plain.npz", tmp_path / "packed.npz")
    assert "40 molecules" in result.output
    assert np.array_equal(load_graphs(tmp_path / "packed.npz")[0].bonds, g.bonds)
    np.savez(tmp_path / "future.npz", format=np.array("matchms-diffms-graphs/9"), meta=np.array("{}"))
    with pytest.raises(ValueError, match="graphs/9"):
        load_graphs(tmp_path / "future.npz")


# ------------------------------------------------------------------------------------------ overfitting
def test_decoder_overfits_four_molecules(tmp_path, tiny_json):
    """200 steps on 4 molecules: the edge loss (deterministic evaluation, 100 noise draws, eval mode) must
    beat the best input-blind predictor -- the edge marginal, whose cross-entropy is its entropy H(m) --
    by 20 %, and the untrained network by half."""
    from matchms_diffms.model.decoder import GraphTransformer
    from matchms_diffms.model.diffusion import NoiseSchedule, edge_marginals
    from matchms_diffms.train.decoder import diffusion_edge_loss
    from matchms_diffms.train.graphs import load_graphs
    from matchms_diffms.weights import load_weights_dir

    smi = tmp_path / "four.smi"
    smi.write_text("CC(=O)Nc1ccc(O)cc1\nCN1CCCC1c1cccnc1\nOCC(O)CO\nCCOC(=O)C=Cc1ccccc1\n")
    run = tmp_path / "run"
    invoke("decoder", "--out", run, "--smiles", smi, "--model-config", tiny_json, "--steps", 200,
           "--batch-size", 4, "--lr", 3e-3, "--schedule", "constant", "--val-fraction", 0, "--ckpt-every", 200,
           *QUIET)
    losses = [r["loss"] for r in records(run) if "loss" in r]
    assert len(losses) == 200 and all(np.isfinite(losses))
    assert np.mean(losses[-20:]) < np.mean(losses[:10])

    model, _ = load_weights_dir(run / "weights")
    cfg = model.config
    g, _ = load_graphs(next((run / "cache").glob("*.npz")))
    X, E0, mask = g.batch([0, 1, 2, 3], cfg.n_atom_types, torch.device("cpu"))
    y = g.fingerprints([0, 1, 2, 3], torch.device("cpu"))
    schedule, m = NoiseSchedule(cfg.diffusion_steps), edge_marginals(cfg.edge_marginals)

    def mean_loss(decoder):
        decoder.eval()
        gen = torch.Generator().manual_seed(5)
        with torch.no_grad():
            return np.mean([float(diffusion_edge_loss(decoder, cfg, schedule, m, X, E0, y, mask, gen))
                            for _ in range(100)])

    torch.manual_seed(0)
    trained, fresh = mean_loss(model.decoder), mean_loss(GraphTransformer(cfg))
    entropy = float(-(m * torch.log(m.clamp(min=1e-12))).sum())     # 0 log 0 = 0 (no triple bond here)
    assert trained < 0.8 * entropy and trained < 0.5 * fresh, (trained, entropy, fresh)


def test_bf16_precision_is_the_same_loss_within_bf16_rounding_and_trains(decoder_run, tiny_json, tmp_path):
    """``--precision bf16`` autocasts the network pass only: the loss equals the float32 one to bf16
    rounding (same noise), its gradients are float32, a run with it trains, and other values are refused."""
    from matchms_diffms.model.diffusion import NoiseSchedule, edge_marginals
    from matchms_diffms.train.decoder import diffusion_edge_loss
    from matchms_diffms.train.graphs import load_graphs
    from matchms_diffms.weights import load_weights_dir

    model, _ = load_weights_dir(decoder_run / "weights")
    cfg, decoder = model.config, model.decoder.eval()
    g, _ = load_graphs(next((decoder_run / "cache").glob("*.npz")))
    idx = list(range(min(4, len(g))))
    X, E0, mask = g.batch(idx, cfg.n_atom_types, torch.device("cpu"))
    y = g.fingerprints(idx, torch.device("cpu"))
    schedule, m = NoiseSchedule(cfg.diffusion_steps), edge_marginals(cfg.edge_marginals)
    losses = {p: diffusion_edge_loss(decoder, cfg, schedule, m, X, E0, y, mask, torch.Generator().manual_seed(1),
                                     precision=p) for p in ("fp32", "bf16")}
    assert losses["bf16"].dtype == torch.float32
    bf16, fp32 = float(losses["bf16"].detach()), float(losses["fp32"].detach())
    assert abs(bf16 - fp32) < 0.02 * fp32 and bf16 != fp32           # close, and the autocast really ran
    losses["bf16"].backward()
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in decoder.parameters())
    with pytest.raises(ValueError, match="precision"):
        diffusion_edge_loss(decoder, cfg, schedule, m, X, E0, y, mask, torch.Generator(), precision="fp16")

    run = tmp_path / "bf16"
    invoke(*decoder_args(run, tiny_json, "--steps", 3, "--val-fraction", 0, "--precision", "bf16"))
    assert json.loads((run / "run_config.json").read_text())["precision"] == "bf16"
    assert all(np.isfinite(r["loss"]) for r in records(run) if "loss" in r)
    assert invoke(*decoder_args(tmp_path / "bad", tiny_json, "--precision", "fp16"), ok=False).exit_code == 2


# ------------------------------------------------------------------------------------------ assemble
def test_assemble_joins_encoder_and_decoder_with_the_fold_map(tmp_path):
    import torch

    from matchms_diffms.weights import load_weights_dir
    from reliability_helpers import make_tiny_weights

    enc_dir = make_tiny_weights(tmp_path / "enc", seed=1)
    dec_dir = make_tiny_weights(tmp_path / "dec", seed=2)
    result = CliRunner().invoke(train_group, ["assemble", "--encoder", str(enc_dir),
                                                   "--decoder", str(dec_dir), "-o", str(tmp_path / "joined"),
                                                   "--default-steps", "10"])
    assert result.exit_code == 0, result.output
    joined, info = load_weights_dir(tmp_path / "joined")
    enc, _ = load_weights_dir(enc_dir)
    dec, _ = load_weights_dir(dec_dir)
    for a, b in zip(joined.encoder.state_dict().values(), enc.encoder.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(joined.decoder.state_dict().values(), dec.decoder.state_dict().values()):
        assert torch.equal(a, b)
    assert not torch.equal(joined.decoder.mlp_in_X[0].weight, enc.decoder.mlp_in_X[0].weight)
    W = joined.merge_function.weight                       # fold map: bit j of y = sum of bits j + k*cond
    cond = joined.config.cond_dim
    assert torch.equal(W.sum(dim=1), torch.full((cond,), W.shape[1] / cond))
    assert joined.config.default_sampling_steps == 10
    assert info["merge"] == "fold map"


def test_assemble_refuses_swapped_parts_with_one_line(tmp_path):
    from reliability_helpers import make_tiny_weights

    enc_dir = make_tiny_weights(tmp_path / "enc", seed=1)
    result = CliRunner().invoke(train_group, ["assemble", "--encoder", str(enc_dir),
                                                   "--decoder", str(tmp_path), "-o", str(tmp_path / "joined")])
    assert result.exit_code != 0
    assert "neither a weights folder nor a run folder" in result.output


def test_prepared_graphs_replace_smiles_inputs(decoder_run, tiny_json, tmp_path):
    cache = next((decoder_run / "cache").glob("decoder-data-*.npz"))
    run = tmp_path / "graphs"
    invoke("decoder", "--out", run, "--graphs", cache, "--model-config", tiny_json, "--batch-size", 4, *QUIET,
           "--steps", 2, "--val-fraction", 0, "--seed", 3)
    start = records(run)[0]
    assert start["data"]["graphs"] == str(cache) and start["n_train"] == len(KEPT)
    assert (run / "weights" / "model.safetensors").exists()


def test_time_budget_stops_with_checkpoint_and_weights(tiny_json, tmp_path):
    run = tmp_path / "budget"
    invoke(*decoder_args(run, tiny_json, "--steps", 100000, "--val-fraction", 0, "--time-budget", "1s",
                         "--ckpt-every", 100000))
    end = records(run)[-1]
    assert end["event"] == "end" and not end["finished"] and 0 < end["step"] < 100000
    assert common.checkpoint_paths(run) and (run / "weights" / "model.safetensors").exists()
    # the budget belongs to one invocation: a resume runs its own
    invoke("decoder", "--out", run, "--resume", "--time-budget", "1s", "--no-progress")
    assert records(run)[-1]["step"] > end["step"]


@pytest.mark.parametrize("groups", [{"environment_features": True},
                                    {"environment_features": True, "hydrogen_features": True}])
def test_init_from_switches_on_our_input_features(decoder_run, tmp_path, groups):
    from matchms_diffms.weights import load_weights_dir

    cfg = tmp_path / "env.json"
    cfg.write_text(json.dumps({"model": {**groups, "decoder_dropout": 0.0}}))
    run = tmp_path / "env"
    invoke("decoder", "--out", run, "--smiles", SMI, "--exclude-mgf", VAL_MGF, "--batch-size", 4, *QUIET,
           "--config", cfg, "--steps", 1, "--val-fraction", 0, "--init-from", decoder_run / "weights")
    model, _ = load_weights_dir(run / "weights")
    assert model.config.environment_features and model.config.decoder_dropout == 0.0
    assert model.config.hydrogen_features == groups.get("hydrogen_features", False)
    y = torch.zeros(model.config.cond_dim)
    adj = model.eval().sample(["C", "C", "O"], y, n_samples=3, steps=4, hydrogens=6)
    assert adj.shape == (3, 3, 3)
    if model.config.hydrogen_features:
        with pytest.raises(ValueError, match="hydrogen"):
            model.sample(["C", "C", "O"], y, n_samples=3, steps=4)


def test_hydrogen_features_refuse_graphs_without_hydrogen_counts(decoder_run, tmp_path):
    from matchms_diffms.train.graphs import load_graphs, save_graphs

    graphs, meta = load_graphs(next((decoder_run / "cache").glob("decoder-data-*.npz")))
    graphs.hydrogens = None                                        # as an older version featurised them
    save_graphs(tmp_path / "old.npz", graphs, meta)
    cfg = tmp_path / "h.json"
    cfg.write_text(json.dumps({"model": {"environment_features": True, "hydrogen_features": True}}))
    result = CliRunner().invoke(train_group, [str(a) for a in (
        "decoder", "--out", tmp_path / "run", "--graphs", tmp_path / "old.npz", "--batch-size", 4, *QUIET,
        "--config", cfg, "--steps", 1, "--val-fraction", 0, "--init-from", decoder_run / "weights")])
    assert result.exit_code != 0 and "hydrogen counts" in result.output
