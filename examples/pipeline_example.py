"""Annotate a spectral library de novo with DiffMS inside a matchms Pipeline.

Run from the repository root::

    python examples/pipeline_example.py                       # examples/example_library.mgf, default weights
    python examples/pipeline_example.py --n-samples 10 --steps 50 --output runs/annotated.mgf

The workflow is matchms' basic metadata harmonisation (``BASIC_FILTERS``, recommended for unknown
spectra), intensity normalisation and a precursor m/z check, followed by the ``annotate_de_novo`` filter.
matchms runs custom filters after all of its own filters, so DiffMS sees cleaned, normalised peaks.
(With ``--filters default`` matchms' ``DEFAULT_FILTERS`` are used instead, made formula-safe with
``matchms_diffms.filters.formula_safe_filters``: they also derive missing formulas from SMILES, so the
nicotine example then takes its formula from its SMILES instead of from mass decomposition.)
The annotated spectra are written as MGF (``diffms_*`` fields) and summarised as an HTML report; where a
spectrum carries a reference InChIKey, the rank of the matching candidate (2D InChIKey) is printed.

On a CPU, 100 samples x 500 steps take minutes to tens of minutes per spectrum with the full-size model:
use fewer samples/steps to try things out.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def build_workflow(weights: str, n_samples: int, steps: int | None, seed: int, top_k: int,
                   filters: str = "basic"):
    """The matchms workflow: cleaning filters + DiffMS (all parameters YAML-safe)."""
    from matchms.filtering.default_pipelines import BASIC_FILTERS
    from matchms.Pipeline import create_workflow

    from matchms_diffms import formula_safe_filters, processing_step

    if filters == "basic":
        cleaning = list(BASIC_FILTERS) + ["normalize_intensities", "require_precursor_mz"]
    else:
        cleaning = formula_safe_filters()
    diffms = processing_step(weights=weights, n_samples=n_samples, steps=steps, seed=seed, top_k=top_k)
    return create_workflow(query_filters=cleaning + [diffms])


def reference_rank(spectrum, candidates) -> str:
    """Rank (1-based) of the candidate whose 2D InChIKey equals the spectrum's ``inchikey``."""
    key = str(spectrum.get("inchikey") or "")[:14]
    if not key:
        return ""
    for rank, c in enumerate(candidates, 1):
        if str(c.get("inchikey", ""))[:14] == key:
            return str(rank)
    return "-"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("library", nargs="?", default=str(HERE / "example_library.mgf"))
    parser.add_argument("--weights", default="default", help="weights name or path (default: %(default)s)")
    parser.add_argument("--n-samples", type=int, default=100)
    parser.add_argument("--steps", type=int, default=None, help="reverse diffusion steps (default: model's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--filters", choices=("basic", "default"), default="basic",
                        help="matchms cleaning before DiffMS (default: %(default)s)")
    parser.add_argument("--output", default="annotated.mgf")
    parser.add_argument("--report", default="report.html", help="HTML report ('' for none)")
    args = parser.parse_args(argv)

    from matchms.Pipeline import Pipeline

    from matchms_diffms import read_annotation, write_report

    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.exists():
        os.remove(output)                    # matchms appends to existing MGF files
    workflow = build_workflow(args.weights, args.n_samples, args.steps, args.seed, args.top_k, args.filters)
    pipeline = Pipeline(workflow, progress_bar=False)
    pipeline.run(args.library, cleaned_query_file=str(output))
    spectra = pipeline.spectra_queries

    print(f"{'spectrum':24s} {'formula':12s} {'source':18s} {'score':>6s} {'ref':>4s}  top candidate / status")
    for s in spectra:
        a = read_annotation(s)
        name = str(s.get("compound_name") or s.get("title") or "?")[:24]
        top = a["smiles"] or a["status"]
        score = f"{a['score']:.3f}" if a["score"] is not None else "-"
        ref = reference_rank(s, a["candidates"])
        print(f"{name:24s} {a['formula'] or '-':12s} {a['formula_source'] or '-':18s} {score:>6s} {ref:>4s}  {top}")
    print(f"wrote {output}")
    if args.report:
        print(f"wrote {write_report(spectra, args.report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
