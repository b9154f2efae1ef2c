"""The decoder on its own: true fingerprint -> structure, on held-out molecules.

For every molecule the decoder is conditioned on the molecule's own binary Morgan fingerprint (radius 2,
``config.cond_dim`` bits -- exactly what decoder pretraining feeds it; the encoder and the merge layer are
not involved) and samples ``n_samples`` graphs over the molecule's heavy atoms. Reported per molecule and
as means with bootstrap 95 % intervals over molecules:

* raw samples, as drawn: share valid (RDKit sanitizes), valid and one fragment, formula-exact (valid, one
  fragment, neutral, molecular formula including hydrogens equal to the molecule's);
* ranked candidates, without completion (formula-exact samples only: DiffMS plus the formula filter) and
  with the annotator's completion of the other samples: top-1 / top-10 exact structure (first InChIKey
  block) and the best Tanimoto (Morgan radius 2, 2,048 bits) to the true molecule among the top 1 / 10;
* ``found``: the true structure is among the formula-exact samples at all.

Candidates are ranked by sample frequency only (DiffMS's ranking).

Baseline, on the same molecules (``baseline``): ``n_samples`` random formula-exact molecules
(``evaluate.random_formula_baseline``) ranked by Tanimoto to the *true* fingerprint -- everything the decoder
is given, without the decoder. ``total["vs_baseline"]`` holds the paired differences (decoder with
completion minus baseline) with their intervals.
"""
from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np

from .stats import bootstrap_mean, paired_difference

logger = logging.getLogger("matchms.diffms")

RATE_KEYS = ("valid", "single_fragment", "formula_exact")
RANK_KEYS = ("top1", "top10", "tanimoto_top1", "tanimoto_top10")


def read_molecules(path, *, limit: int | None = None, max_atoms: int | None = None,
                   atom_types=None) -> tuple[list[str], dict]:
    """Unique structures (first InChIKey block) of a SMILES file or of the ``SMILES`` of a spectra file.

    Parameters
    ----------
    path
        ``.smi`` / ``.smi.gz`` / ``.txt`` (first column) or a spectra file (``.mgf``, MassSpecGym ``.tsv``).
        A file whose name announces the training fold is refused.
    limit
        Keep the first ``limit`` usable structures.
    max_atoms, atom_types
        Skip molecules with more heavy atoms, or with elements outside the model's vocabulary.

    Returns
    -------
    smiles : list of str
    skipped : dict reason -> count
    """
    from rdkit import Chem, rdBase

    from .chem.molecules import inchikey14
    from .labelled import name_tokens, read_labelled, read_smiles

    path = Path(path)
    if {"train", "training"} & name_tokens(path):
        raise ValueError(f"refusing to evaluate the decoder on {path}: its name says it is the training fold")
    name = path.name.lower()
    if name.endswith((".smi", ".smi.gz", ".txt", ".txt.gz")):
        source = read_smiles(path)
    else:
        source = (rec.smiles for rec in read_labelled(path) if rec.smiles)
    vocab = set(atom_types) if atom_types is not None else None
    seen, out, skipped = set(), [], Counter()
    for smi in source:
        with rdBase.BlockLogs():
            mol = Chem.MolFromSmiles(smi)
        if mol is None:
            skipped["invalid_smiles"] += 1
            continue
        if len(Chem.GetMolFrags(mol)) != 1 or any(a.GetFormalCharge() for a in mol.GetAtoms()):
            skipped["charged_or_fragments"] += 1
            continue
        if vocab is not None and any(a.GetSymbol() not in vocab for a in mol.GetAtoms()):
            skipped["unsupported_element"] += 1
            continue
        if mol.GetNumAtoms() < 2 or (max_atoms is not None and mol.GetNumAtoms() > max_atoms):
            skipped["atom_count"] += 1
            continue
        key = inchikey14(mol)
        if key in seen:
            skipped["duplicate"] += 1
            continue
        seen.add(key)
        out.append(Chem.MolToSmiles(mol, isomericSmiles=False))
        if limit is not None and len(out) >= limit:
            break
    return out, dict(skipped)


def _tanimoto(a, b) -> float:
    inter = int(np.logical_and(a, b).sum())
    union = int(np.logical_or(a, b).sum())
    return inter / union if union else 0.0


def molecule_metrics(true_smiles: str, samples: np.ndarray, atoms: list[str], annotator,
                     probs: np.ndarray | None = None) -> dict:
    """Metrics of one molecule's samples (see the module docstring).

    Parameters
    ----------
    true_smiles : the molecule; samples : (S, n, n) bond classes over ``atoms``;
    annotator : a ``DiffMSAnnotator`` whose molecule step (validity, formula filter, completion) is used;
    probs : (S, n, n, 5) the sampler's last-step bond probabilities (constrained decoding uses them).
    """
    from rdkit import Chem

    from .chem.molecules import check_molecule, formula_of_smiles, graph_to_mol, inchikey14, morgan_fingerprint
    from .ranking import rank_candidates

    formula = formula_of_smiles(true_smiles)
    true_key = inchikey14(true_smiles)
    true_fp = morgan_fingerprint(true_smiles, 2048, 2)
    S = len(samples)
    n_valid = n_single = 0
    for sample in samples:
        res = check_molecule(graph_to_mol(atoms, sample))
        n_valid += bool(res.is_valid)
        n_single += bool(res.is_valid and res.num_fragments == 1)
    out = {"smiles": true_smiles, "heavy_atoms": len(atoms), "valid": n_valid / S,
           "single_fragment": n_single / S}
    for mode, complete in (("sampled", False), ("completed", True)):
        annotator.complete = complete
        _, matching, sources = annotator._molecules(atoms, samples, probs, formula)
        n_completed = sources.count("decoded")
        if mode == "sampled":
            out["formula_exact"] = len(matching) / S
            out["found"] = float(any(inchikey14(m) == true_key for m in matching))
        else:
            out["completed_share"] = n_completed / S
        ranked = rank_candidates(matching, None, formula, top_k=10, ranking="frequency") if matching else []
        keys = [c.inchikey.split("-")[0] for c in ranked]
        tanis = [_tanimoto(morgan_fingerprint(Chem.MolFromSmiles(c.smiles), 2048, 2), true_fp) for c in ranked]
        out[mode] = {"top1": float(keys[:1] == [true_key]), "top10": float(true_key in keys),
                     "tanimoto_top1": tanis[0] if tanis else 0.0,
                     "tanimoto_top10": max(tanis) if tanis else 0.0,
                     "top_smiles": [c.smiles for c in ranked[:3]]}
    return out


def baseline_metrics(true_smiles: str, n: int, seed: int) -> dict:
    """Ranking metrics of ``n`` random formula-exact molecules ranked by Tanimoto to the true fingerprint."""
    from rdkit import Chem

    from .chem.molecules import formula_of_smiles, inchikey14, morgan_fingerprint
    from .evaluate import random_formula_baseline

    true_key = inchikey14(true_smiles)
    true_fp = morgan_fingerprint(true_smiles, 2048, 2)
    smiles = random_formula_baseline(formula_of_smiles(true_smiles).hill(), n, seed=seed)
    scored = [(_tanimoto(morgan_fingerprint(Chem.MolFromSmiles(s), 2048, 2), true_fp), k, s)
              for k, s in enumerate(smiles)]
    scored.sort(key=lambda x: (-x[0], x[1]))
    keys = [inchikey14(s) for _, _, s in scored[:10]]
    return {"top1": float(keys[:1] == [true_key]), "top10": float(true_key in keys),
            "tanimoto_top1": scored[0][0] if scored else 0.0,
            "tanimoto_top10": scored[0][0] if scored else 0.0, "n": len(smiles)}


def summarize(per_molecule: list[dict]) -> dict:
    """Means with bootstrap 95 % intervals over molecules."""
    total = {k: bootstrap_mean([m[k] for m in per_molecule]) for k in RATE_KEYS + ("found",)}
    for mode in ("sampled", "completed"):
        total[mode] = {k: bootstrap_mean([m[mode][k] for m in per_molecule]) for k in RANK_KEYS}
    total["completed_share"] = bootstrap_mean([m["completed_share"] for m in per_molecule])
    if all("baseline" in m for m in per_molecule):
        total["baseline"] = {k: bootstrap_mean([m["baseline"][k] for m in per_molecule]) for k in RANK_KEYS}
        total["vs_baseline"] = {k: paired_difference([m["completed"][k] for m in per_molecule],
                                                     [m["baseline"][k] for m in per_molecule])
                                for k in RANK_KEYS}
    return total


def evaluate_decoder(path, weights: str = "default", *, n_samples: int = 100, steps: int | None = None,
                     limit: int | None = 50, seed: int = 0, max_atoms: int | None = None,
                     baseline: bool = True, progress=None) -> dict:
    """Evaluate the decoder of ``weights`` from true fingerprints on the molecules of ``path``.

    Returns a JSON-ready dict: ``settings``, ``total`` (means with intervals), ``per_molecule``.
    Deterministic for the same inputs, weights and seed (each molecule has its own generator).
    """
    import torch
    from rdkit import Chem

    from .annotator import DiffMSAnnotator, derive_seed
    from .chem.molecules import morgan_fingerprint

    annotator = DiffMSAnnotator.from_pretrained(weights, n_samples=n_samples, steps=steps, seed=seed,
                                                max_heavy_atoms=max_atoms)
    model, config = annotator.model, annotator.config
    limit_atoms = annotator.max_heavy_atoms          # the trained limit unless max_atoms raises or lowers it
    smiles, skipped = read_molecules(path, limit=limit, max_atoms=limit_atoms, atom_types=config.atom_types)
    if not smiles:
        raise ValueError(f"no usable molecule in {path} (skipped: {skipped})")
    per_molecule = []
    start = time.perf_counter()
    for i, smi in enumerate(smiles):
        mol = Chem.MolFromSmiles(smi)
        atoms = [a.GetSymbol() for a in mol.GetAtoms()]
        y = torch.from_numpy(morgan_fingerprint(mol, config.cond_dim, 2).astype(np.float32))
        gen = torch.Generator().manual_seed(derive_seed(seed, "decoder", smi))
        hydrogens = sum(a.GetTotalNumHs() for a in mol.GetAtoms())
        samples, probs = model.sample(atoms, y, n_samples=n_samples, steps=annotator.steps, generator=gen,
                                      return_probs=True, hydrogens=hydrogens)
        per_molecule.append(molecule_metrics(smi, samples, atoms, annotator, probs))
        if baseline:
            per_molecule[-1]["baseline"] = baseline_metrics(smi, n_samples, derive_seed(seed, "baseline", smi))
        if progress:
            progress(i + 1, len(smiles))
    seconds = time.perf_counter() - start
    return {"settings": {"molecules": str(path), "weights": weights, "sha256": annotator.info.get("sha256"),
                         "n_samples": n_samples, "steps": annotator.steps, "seed": seed,
                         "max_atoms": limit_atoms, "n_molecules": len(smiles), "skipped": skipped,
                         "baseline": "random formula-exact molecules ranked by the true fingerprint" if baseline
                         else None,
                         "seconds": round(seconds, 1)},
            "total": summarize(per_molecule), "per_molecule": per_molecule}


def format_table(result: dict) -> str:
    """The totals as a small text table (means and 95 % intervals, in percent)."""
    def cell(r):
        if r["mean"] is None:
            return "n/a"
        return f"{100 * r['mean']:5.1f} [{100 * r['low']:.1f}, {100 * r['high']:.1f}]"

    t = result["total"]
    s = result["settings"]
    lines = [f"{s['n_molecules']} molecules, {s['n_samples']} samples x {s['steps']} steps, "
             f"weights {s['weights']} ({str(s['sha256'])[:12]}), {s['seconds']} s",
             "raw samples (%):      valid " + cell(t["valid"]) + "   one fragment " + cell(t["single_fragment"])
             + "   formula-exact " + cell(t["formula_exact"]),
             "true structure among formula-exact samples (%): " + cell(t["found"])]
    for mode, label in (("sampled", "as sampled"), ("completed", "with completion")):
        r = t[mode]
        lines.append(f"{label:16s} top-1 {cell(r['top1'])}  top-10 {cell(r['top10'])}  "
                     f"Tanimoto top-1 {cell(r['tanimoto_top1'])}  top-10 {cell(r['tanimoto_top10'])}")
    if "baseline" in t:
        r = t["baseline"]
        lines.append(f"{'baseline':16s} top-1 {cell(r['top1'])}  top-10 {cell(r['top10'])}  "
                     f"Tanimoto top-1 {cell(r['tanimoto_top1'])}  top-10 {cell(r['tanimoto_top10'])}")
        d = t["vs_baseline"]
        lines.append("completion - baseline (paired): " + "  ".join(
            f"{k} {cell(d[k])}{' *' if d[k]['excludes_zero'] else ''}" for k in RANK_KEYS))
        lines.append("baseline: " + s["baseline"] + "; * = interval excludes 0")
    return "\n".join(lines)


def write_result(result: dict, path) -> None:
    from .files import atomic_write

    text = json.dumps(result, indent=1)
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text))
