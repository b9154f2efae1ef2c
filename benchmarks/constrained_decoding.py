"""Benchmark (d): constrained decoding against the earlier random completion, on the same samples.

One command::

    python benchmarks/constrained_decoding.py          # writes benchmarks/results/constrained_decoding_val50.json

For ``--n`` val structures (one spectrum per structure, drawn with ``--seed`` from the val fold; the true
formula is given) the default weights sample once per spectrum (default samples and steps, ``--threads``
torch threads). The same samples then give three candidate sets:

* ``sampled``: only samples that are formula-exact as drawn (``--no-complete``: DiffMS plus the formula filter);
* ``random_completion``: the other samples completed by the earlier ``chem/repair.py`` (random bonds around the
  sampled ones), loaded from git commit ``--old-commit`` (it is no longer part of the package);
* ``constrained``: the other samples decoded by ``chem.decoding.decode_formula_exact`` from the denoiser's
  last-step probabilities (the package's default now).

Each set is ranked with each ranking (``frequency``, ``fingerprint``, ``combined``) by the package's
``rank_candidates`` and scored with ``evaluate.spectrum_metrics`` (MCES for the ``--mces-ranking`` only: it is
slow). Reported: metric means with bootstrap 95 % intervals, paired differences constrained minus random
completion and constrained minus sampled (intervals), cumulated double bonds in the top-10 candidates per
source, and an audit of every decoded sample: cumulenes whose probabilities asked for none (must be 0).
The result file keeps a per-spectrum summary; ``--candidates-out`` keeps the raw candidates and predicted
fingerprints (about 2 MB for 50 spectra), from which ``--rescore`` recomputes the metrics.
"""
from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, RESULTS, environment, write_json  # noqa: E402

VAL = REPO.parent / "shared" / "data" / "massbank" / "val.mgf"
RANKINGS = ("frequency", "fingerprint", "combined")
VARIANTS = ("sampled", "random_completion", "constrained")


def old_repair(commit: str):
    """The earlier ``chem/repair.py`` as a module, from git (imports made absolute)."""
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:matchms_diffms/chem/repair.py"],
                            check=True, capture_output=True, text=True).stdout
    source = source.replace("from .formula", "from matchms_diffms.chem.formula")
    source = source.replace("from .molecules", "from matchms_diffms.chem.molecules")
    module = types.ModuleType("old_repair")
    exec(compile(source, f"{commit}:chem/repair.py", "exec"), module.__dict__)
    return module


def collect(n: int, seed: int, threads: int, old, weights: str) -> list[dict]:
    """Sample every chosen spectrum once; candidates (SMILES, source) of the three variants."""
    import torch
    from rdkit import Chem

    from matchms_diffms.annotator import DiffMSAnnotator
    from matchms_diffms.evaluate import load_labelled_spectra

    torch.set_num_threads(threads)
    spectra = load_labelled_spectra(VAL, one_per_structure=True)
    chosen = sorted(random.Random(seed).sample(range(len(spectra)), min(n, len(spectra))))

    class Capture(DiffMSAnnotator):
        def _encode(self, annotation):
            fp, y = super()._encode(annotation)
            self.fp = fp[0].numpy()
            return fp, y

        def _generate(self, atoms, y, formula, generator):
            adj, probs = self.model.sample(atoms, y, n_samples=self.n_samples, steps=self.steps,
                                           generator=generator, return_probs=True, hydrogens=formula["H"])
            self.captured = (atoms, adj, probs, formula)
            return self._molecules(atoms, adj, probs, formula)

    ann = Capture.from_pretrained(weights, seed=0, max_formulas=1, top_k=10)
    rows = []
    for number, i in enumerate(chosen):
        spectrum = spectra[i]
        ann.captured, ann.fp = None, None
        start = time.perf_counter()
        out = ann.annotate(spectrum)
        row = {"index": i, "id": spectrum.get("spectrum_id") or spectrum.get("title"), "smiles": spectrum.get("smiles"),
               "formula": spectrum.get("formula"), "status": out.get("diffms_status"), "fp": None,
               "candidates": {v: [] for v in VARIANTS}}
        if ann.captured is not None:
            atoms, adj, probs, formula = ann.captured
            row["fp"] = [round(float(v), 5) for v in ann.fp]
            valid, matching, sources = ann._molecules(atoms, adj, probs, formula)
            sampled = [Chem.MolToSmiles(m) for m, s in zip(matching, sources) if s == "sampled"]
            row["candidates"]["sampled"] = [(s, "sampled") for s in sampled]
            row["candidates"]["constrained"] = [(Chem.MolToSmiles(m), s) for m, s in zip(matching, sources)]
            row["decoded_cumulenes"] = _cumulene_audit(atoms, adj, probs, formula)
            completed = []
            for k, sample in enumerate(adj):
                mol = _as_is(atoms, sample, formula)
                if mol is not None:
                    completed.append((Chem.MolToSmiles(mol), "sampled"))
                    continue
                mol = old.complete_to_formula(atoms, sample, formula, seed=k)
                if mol is not None:
                    completed.append((Chem.MolToSmiles(mol), "decoded"))
            row["candidates"]["random_completion"] = completed
        row["seconds"] = round(time.perf_counter() - start, 2)
        rows.append(row)
        print(f"[{number + 1}/{len(chosen)}] {row['id']} {row['formula']} {row['status'][:40]} "
              f"{row['seconds']} s; candidates " + ", ".join(f"{v} {len(row['candidates'][v])}" for v in VARIANTS),
              flush=True)
    return rows


def _cumulene_audit(atoms, adj, probs, formula) -> dict:
    """Decoded molecules with a cumulated double bond, and how many of them come from a sample whose
    probabilities ask for none (no atom with two bonds of p(double) + p(triple) > 0.5): those would break the
    rule. Decodes the samples again (deterministic: the same molecules as the annotator's)."""
    from matchms_diffms.chem.decoding import decode_formula_exact, has_cumulene

    asking = ((probs[..., 2] + probs[..., 3]) > 0.5).sum(axis=2).max(axis=1) >= 2      # per sample
    out = {"decoded": 0, "with_cumulene": 0, "with_cumulene_not_asked": 0}
    for k, sample in enumerate(adj):
        if _as_is(atoms, sample, formula) is not None:
            continue
        mol = decode_formula_exact(atoms, formula, probs[k], adj=sample)
        if mol is None:
            continue
        out["decoded"] += 1
        if has_cumulene(mol):
            out["with_cumulene"] += 1
            out["with_cumulene_not_asked"] += int(not asking[k])
    return out


def _as_is(atoms, sample, formula):
    """The sample's molecule when it is valid, one fragment, neutral and formula-exact (else None)."""
    from rdkit import Chem

    from matchms_diffms.chem.molecules import check_molecule, graph_to_mol, matches_formula

    res = check_molecule(graph_to_mol(atoms, sample))
    if res.is_valid and res.num_fragments == 1 and Chem.GetFormalCharge(res.mol) == 0 \
            and matches_formula(res.mol, formula):
        return res.mol
    return None


def score(rows: list[dict], mces_ranking: str, compute_mces: bool) -> dict:
    import numpy as np
    from rdkit import Chem

    from matchms_diffms.chem.decoding import has_cumulene
    from matchms_diffms.evaluate import MCESCache, metric_intervals, paired_differences, spectrum_metrics
    from matchms_diffms.ranking import rank_candidates

    mces = MCESCache() if compute_mces else None
    per: dict = {}
    cumulenes: dict = {}
    for variant in VARIANTS:
        for ranking in RANKINGS:
            key = f"{variant}/{ranking}"
            per[key] = []
            counts = {"top10": 0, "with_cumulene": 0, "with_cumulene_decoded": 0, "decoded": 0}
            for row in rows:
                cands = row["candidates"][variant]
                preds = []
                if cands:
                    ranked = rank_candidates([s for s, _ in cands], np.asarray(row["fp"], dtype=np.float32),
                                             row["formula"], top_k=10, ranking=ranking,
                                             sources=[src for _, src in cands])
                    preds = [c.smiles for c in ranked]
                    for c in ranked:
                        counts["top10"] += 1
                        counts["decoded"] += c.source == "decoded"
                        if has_cumulene(Chem.MolFromSmiles(c.smiles)):
                            counts["with_cumulene"] += 1
                            counts["with_cumulene_decoded"] += c.source == "decoded"
                use = mces if ranking == mces_ranking else None
                per[key].append(spectrum_metrics(row["smiles"], preds, (1, 10), use))
            cumulenes[key] = counts
    truth_cumulenes = sum(has_cumulene(Chem.MolFromSmiles(r["smiles"])) for r in rows)
    audit = {k: sum(r.get("decoded_cumulenes", {}).get(k, 0) for r in rows)
             for k in ("decoded", "with_cumulene", "with_cumulene_not_asked")}
    result = {"metrics": {k: metric_intervals(v) for k, v in per.items()},
              "cumulenes_top10": cumulenes, "true_structures_with_cumulene": truth_cumulenes,
              "decoded_samples_cumulene_audit": audit,
              "paired": {}}
    for ranking in RANKINGS:
        a = per[f"constrained/{ranking}"]
        result["paired"][f"constrained-random_completion/{ranking}"] = paired_differences(
            a, per[f"random_completion/{ranking}"])
        result["paired"][f"constrained-sampled/{ranking}"] = paired_differences(a, per[f"sampled/{ranking}"])
    for ranking in ("frequency", "fingerprint"):
        result["paired"][f"constrained: {ranking}-combined"] = paired_differences(
            per[f"constrained/{ranking}"], per["constrained/combined"])
    if mces is not None:
        result["mces_seconds"] = round(mces.seconds, 1)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50, help="val structures")
    parser.add_argument("--seed", type=int, default=0, help="which structures (random draw) and the sampling seed")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--weights", default="default")
    parser.add_argument("--old-commit", default="6a35104", help="commit with the earlier chem/repair.py")
    parser.add_argument("--mces-ranking", default="combined", choices=RANKINGS)
    parser.add_argument("--no-mces", action="store_true")
    parser.add_argument("--rescore", type=Path, default=None, help="recompute the metrics of a --candidates-out file")
    parser.add_argument("--candidates-out", type=Path, default=None,
                        help="also write the raw candidates and fingerprints here (for --rescore)")
    parser.add_argument("-o", "--output", type=Path, default=RESULTS / "constrained_decoding_val50.json")
    args = parser.parse_args(argv)
    import json

    if args.rescore:
        data = json.loads(args.rescore.read_text())
        rows = data["spectra"]
    else:
        start = time.perf_counter()
        rows = collect(args.n, args.seed, args.threads, old_repair(args.old_commit), args.weights)
        data = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                "environment": environment(), "sampling_seconds": round(time.perf_counter() - start, 1),
                "spectra": rows}
        if args.candidates_out:
            write_json(data, args.candidates_out)                     # the samples are kept before scoring
    data["result"] = score(rows, args.mces_ranking, not args.no_mces)
    write_json(summary(data), args.output)
    print(json.dumps(data["result"], indent=1)[:6000])
    return 0


def summary(data: dict) -> dict:
    """The result file: settings, metrics and one short line per spectrum (no candidates, no fingerprints)."""
    out = {k: v for k, v in data.items() if k != "spectra"}
    out["spectra"] = [{"index": r["index"], "id": r["id"], "formula": r["formula"], "status": r["status"],
                       "seconds": r.get("seconds"), "decoded_cumulenes": r.get("decoded_cumulenes"),
                       "n_candidates": {v: len(c) for v, c in r["candidates"].items()}} for r in data["spectra"]]
    return out


if __name__ == "__main__":
    sys.exit(main())
