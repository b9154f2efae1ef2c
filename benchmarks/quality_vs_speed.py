"""Benchmark (c): annotation quality against speed, to choose the default steps and samples from data.

One command::

    python benchmarks/quality_vs_speed.py     # writes benchmarks/results/quality_vs_speed.json

Runs ``matchms-diffms evaluate`` on the val fold (one spectrum per structure, the first ``--limit``
structures, ``--no-mces``, ``--seed 0``) for every combination of ``--steps`` (500, 100, 50, 20, 10) and
``--samples`` (100, 50, 20), cheapest first, each in its own subprocess, and collects the metrics
(top-1/top-10 accuracy and Tanimoto, validity, formula match) and seconds per spectrum. The reference is
500 steps x 100 samples (the official settings; ``--reference``). Only positive-mode spectra by default
(``--ionmode``), as in the test-fold targets. For every setting the per-spectrum top-10 Tanimoto is
compared with the reference's on the same spectra (paired bootstrap, 2000 resamples): the relative loss
and its 95 % interval. ``recommended`` is the fastest setting whose relative top-10 Tanimoto loss is at
most ``--max-loss`` (10 %), both as measured and by the upper end of the interval.

The reference setting is by far the most expensive (500 steps x 100 samples per spectrum): with the default
``--limit 50`` a full run takes hours on 2 CPU cores. Finished settings are kept in the output file and
skipped when it is rerun (``--fresh`` starts over), and settings of earlier invocations stay in the file, so
the run can be split (e.g. the cheap grid first, then ``--steps 500 --samples 100`` alone).
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_WEIGHTS, REPO, RESULTS, environment, write_json  # noqa: E402

VAL = REPO.parent / "shared" / "data" / "massbank" / "val.mgf"
METRICS = ("top1_accuracy", "top10_accuracy", "top1_tanimoto", "top10_tanimoto", "validity", "formula_match",
           "num_valid_mols", "seconds_per_spectrum", "n_spectra")


def run_evaluate(val: Path, weights: str, steps: int, samples: int, limit: int, seed: int, tmp: Path,
                 extra: list[str]) -> dict:
    out, details = tmp / f"eval_{steps}_{samples}.json", tmp / f"details_{steps}_{samples}.json"
    cmd = [shutil.which("matchms-diffms"), "evaluate", str(val), "--weights", weights, "-o", str(out),
           "--steps", str(steps), "--samples", str(samples), "--limit", str(limit), "--seed", str(seed),
           "--no-mces", "--details", str(details), *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"steps": steps, "samples": samples, "exit_code": proc.returncode, "stderr_tail": proc.stderr[-2000:]}
    metrics = json.loads(out.read_text())
    per = json.loads(details.read_text())["spectra"]
    return {"steps": steps, "samples": samples, "exit_code": 0, "wall_s": round(wall, 1),
            **{k: metrics.get(k) for k in METRICS},
            "per_spectrum_top10_tanimoto": {_spectrum_id(r, i): _metric(r, "top10_tanimoto")
                                            for i, r in enumerate(per)}}


def _spectrum_id(row: dict, index: int) -> str:
    for key in ("id", "spectrum_id", "title", "name"):
        if row.get(key):
            return str(row[key])
    return str(index)


def _metric(row: dict, key: str):
    if key in row:
        return row[key]
    return (row.get("metrics") or {}).get(key)


def paired_loss(ref: dict, other: dict, n_boot: int = 2000, seed: int = 0) -> dict:
    """Relative loss 1 - mean(other)/mean(ref) of top-10 Tanimoto on the common spectra, with a 95 % interval."""
    keys = [k for k in ref if k in other and ref[k] is not None and other[k] is not None]
    if not keys:
        return {"relative_loss": None, "ci95": None, "n_paired": 0}
    a = [ref[k] for k in keys]
    b = [other[k] for k in keys]

    def loss(idx):
        sa = sum(a[i] for i in idx)
        return None if sa == 0 else 1 - sum(b[i] for i in idx) / sa

    rng = random.Random(seed)
    n = len(keys)
    boots = sorted(v for v in (loss([rng.randrange(n) for _ in range(n)]) for _ in range(n_boot)) if v is not None)
    ci = [round(boots[int(0.025 * len(boots))], 4), round(boots[int(0.975 * len(boots)) - 1], 4)] if boots else None
    point = loss(range(n))
    return {"relative_loss": None if point is None else round(point, 4), "ci95": ci, "n_paired": n}


def recommend(runs: list[dict], ref: dict | None, max_loss: float) -> dict:
    if ref is None:
        return {"note": "the reference setting (the grid's most expensive) has not been run"}
    ok = [r for r in runs if r.get("exit_code") == 0 and r is not ref and r.get("seconds_per_spectrum")]
    out = {}
    for label, test in (("by_point_estimate", lambda r: r["vs_reference"]["relative_loss"] is not None
                         and r["vs_reference"]["relative_loss"] <= max_loss),
                        ("by_upper_ci", lambda r: r["vs_reference"]["ci95"] is not None
                         and r["vs_reference"]["ci95"][1] <= max_loss)):
        good = sorted((r for r in ok if test(r)), key=lambda r: r["seconds_per_spectrum"])
        out[label] = ({"steps": good[0]["steps"], "samples": good[0]["samples"],
                       "seconds_per_spectrum": good[0]["seconds_per_spectrum"],
                       "top10_tanimoto": good[0]["top10_tanimoto"], "vs_reference": good[0]["vs_reference"]}
                      if good else None)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--val", type=Path, default=VAL)
    ap.add_argument("--weights", default="default")
    ap.add_argument("--steps", default="500,100,50,20,10")
    ap.add_argument("--samples", default="100,50,20")
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-loss", type=float, default=0.10)
    ap.add_argument("--fresh", action="store_true", help="ignore settings already in the output file")
    ap.add_argument("--reference", default="500x100", help="STEPSxSAMPLES of the reference setting")
    ap.add_argument("--ionmode", default="positive", help="polarity evaluated (positive | negative | all)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of each evaluate run")
    ap.add_argument("--workers", type=int, default=1, help="processes of each evaluate run")
    ap.add_argument("--out", type=Path, default=RESULTS / "quality_vs_speed.json")
    args = ap.parse_args(argv)
    extra = ["--workers", str(args.workers)] + (["--threads", str(args.threads)] if args.threads else [])
    if args.ionmode != "all":
        extra += ["--ionmode", args.ionmode]

    if shutil.which("matchms-diffms") is None:
        print("matchms-diffms is not installed (pip install -e .)", file=sys.stderr)
        return 2
    if args.weights == "default" and not (DEFAULT_WEIGHTS / "config.json").is_file():
        print(f"no default weights at {DEFAULT_WEIGHTS}; pass --weights", file=sys.stderr)
        return 2
    steps = [int(v) for v in args.steps.split(",")]
    samples = [int(v) for v in args.samples.split(",")]
    previous = {}
    if args.out.is_file() and not args.fresh:
        old = json.loads(args.out.read_text())
        if (old.get("weights") == args.weights and old.get("limit") == args.limit
                and old.get("ionmode", "all") == args.ionmode):
            previous = {(r["steps"], r["samples"]): r for r in old.get("runs", []) if r.get("exit_code") == 0}
    grid = sorted(((s, n) for s in steps for n in samples), key=lambda sn: sn[0] * sn[1])
    # settings of earlier invocations (same weights, limit and polarity) stay in the file
    runs = [r for key, r in previous.items() if key not in grid]
    result = {"benchmark": "quality_vs_speed", "environment": environment(), "protocol": __doc__,
              "weights": args.weights, "limit": args.limit, "ionmode": args.ionmode, "seed": args.seed,
              "evaluate_options": extra, "max_loss": args.max_loss, "runs": runs}
    with tempfile.TemporaryDirectory(prefix="diffms-quality-") as tmp:
        for s, n in grid:
            run = previous.get((s, n)) or run_evaluate(args.val, args.weights, s, n, args.limit, args.seed,
                                                       Path(tmp), extra)
            runs.append(run)
            print(f"steps {s:4d} samples {n:4d}: top10 Tanimoto {run.get('top10_tanimoto')}  top1 acc "
                  f"{run.get('top1_accuracy')}  s/spectrum {run.get('seconds_per_spectrum')}", flush=True)
            write_json(result, args.out)
    runs.sort(key=lambda r: (r["steps"] * r["samples"], r["steps"]))
    ref_setting = tuple(int(v) for v in args.reference.lower().split("x"))
    result["reference"] = {"steps": ref_setting[0], "samples": ref_setting[1]}
    ref = next((r for r in runs if (r["steps"], r["samples"]) == ref_setting and r.get("exit_code") == 0), None)
    for r in runs:
        if ref is not None and r.get("exit_code") == 0:
            r["vs_reference"] = paired_loss(ref["per_spectrum_top10_tanimoto"], r["per_spectrum_top10_tanimoto"])
    result["recommended"] = recommend(runs, ref, args.max_loss)
    write_json(result, args.out)
    print(json.dumps(result["recommended"], indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
