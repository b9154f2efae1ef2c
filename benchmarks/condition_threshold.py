"""How close is the decoder's conditioning to the fingerprint it was trained on? (encoder only, no sampling)

The decoder is pretrained on binary Morgan fingerprints; at annotation time it gets y = merge(encoder
probabilities). For labelled spectra (one per structure) this measures the Tanimoto between y and the true
``cond_dim``-bit fingerprint: continuous (sum min / sum max) for y as computed, and binary for y
thresholded at several values (``config.condition_threshold``). Means with bootstrap 95 % intervals.

    python benchmarks/condition_threshold.py ../shared/data/massbank/val.mgf --weights default --limit 200
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

THRESHOLDS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("spectra")
    ap.add_argument("--weights", default="default")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--ionmode", default="positive")
    ap.add_argument("-o", "--output", default=None)
    args = ap.parse_args(argv)

    from matchms_diffms.annotator import DiffMSAnnotator, Skip
    from matchms_diffms.chem.molecules import morgan_fingerprint
    from matchms_diffms.evaluate import load_labelled_spectra
    from matchms_diffms.stats import bootstrap_mean

    annotator = DiffMSAnnotator.from_pretrained(args.weights, config_overrides={"condition_threshold": None})
    spectra = load_labelled_spectra(args.spectra, limit=args.limit, ionmode=args.ionmode)
    rows = {"continuous": [], **{t: [] for t in THRESHOLDS}}
    n_bits, used = [], 0
    for spectrum in spectra:
        try:
            cand = annotator._formula_candidates(spectrum)[0]
            annotator._check_formula(cand)
            _, y = annotator._encode(annotator._annotate_peaks(spectrum, cand))
        except Skip as err:                           # a spectrum the annotator would skip: reported, not used
            print(f"skipped {spectrum.get('title') or spectrum.get('compound_name')}: {err}", file=sys.stderr)
            continue
        used += 1
        y = y[0].numpy().astype(np.float64)
        true = morgan_fingerprint(spectrum.get("smiles"), len(y), 2).astype(bool)
        rows["continuous"].append(np.minimum(y, true).sum() / np.maximum(y, true).sum())
        n_bits.append(int(true.sum()))
        for t in THRESHOLDS:
            b = y >= t
            rows[t].append((b & true).sum() / max((b | true).sum(), 1))
    out = {"weights": args.weights, "spectra": used, "mean_true_bits": float(np.mean(n_bits)),
           "tanimoto": {str(k): bootstrap_mean(v) for k, v in rows.items()}}
    for k, v in out["tanimoto"].items():
        print(f"{k:>10s}  {v['mean']:.3f} [{v['low']:.3f}, {v['high']:.3f}]")
    if args.output:
        Path(args.output).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
