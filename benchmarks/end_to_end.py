"""Benchmark (b): end-to-end seconds per spectrum and peak memory of ``matchms-diffms annotate``.

One command::

    python benchmarks/end_to_end.py          # writes benchmarks/results/end_to_end.json

Three measurements, each running the real command line in a subprocess (``matchms-diffms annotate``):

1. ``default_settings``: the first ``--n-spectra`` (50) spectra of the val fold, one per structure, with the
   command's default settings (``--seed 0`` for reproducibility). Reported: total wall time / spectrum,
   the per-spectrum times the annotator records (``diffms_seconds``), their relation to the number of heavy
   atoms, and the peak RSS of the process (``ru_maxrss`` from ``wait4``).
2. ``baseline_settings``: the same command with the official settings (``--samples 100 --steps 500``) on the
   first ``--baseline-spectra`` spectra (default 1; 0 skips it), i.e. the baseline in the same run.
3. ``streaming``: a synthetic library of ``--library-size`` (10,000) spectra (the val spectra repeated with
   new titles) annotated with small settings (``--stream-samples``/``--stream-steps``, default 2 and 2), while
   the RSS of the process is sampled every ``--poll`` seconds together with the number of finished spectra
   (lines of the checkpoint file). Memory is flat if RSS does not grow with the number of spectra done
   (``rss_slope_mb_per_1000_spectra`` over the second half of the run).

Needs the console script ``matchms-diffms`` and weights (``--weights``, default "default" =
``weights/default`` of the repository); it exits with a message if either is missing. Thread count: the
command's own default unless ``--threads`` sets OMP_NUM_THREADS/MKL_NUM_THREADS for the subprocess.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (_TICK, DEFAULT_WEIGHTS, REPO, RESULTS, _busy_jiffies, _own_jiffies, environment,  # noqa: E402
                     median, write_json)

VAL = REPO.parent / "shared" / "data" / "massbank" / "val.mgf"
OK_STATUSES = ("ok", "no_annotated_peaks")          # annotated (the second: only the precursor was encoded)


# ------------------------------------------------------------------------------------------- inputs
def read_mgf_blocks(path: Path) -> list[str]:
    """The ``BEGIN IONS ... END IONS`` blocks of an MGF file, as text."""
    blocks, current = [], []
    for line in Path(path).read_text().splitlines():
        if line.strip() == "BEGIN IONS":
            current = [line]
        elif line.strip() == "END IONS":
            current.append(line)
            blocks.append("\n".join(current) + "\n")
            current = []
        elif current:
            current.append(line)
    return blocks


def _field(block: str, key: str) -> str | None:
    for line in block.splitlines():
        if line.upper().startswith(key.upper() + "="):
            return line.split("=", 1)[1].strip()
    return None


def one_per_structure(blocks: list[str], limit: int) -> list[str]:
    """First spectrum of each structure (InChIKey first block), at most ``limit``."""
    out, seen = [], set()
    if limit <= 0:
        return out
    for b in blocks:
        key = (_field(b, "INCHIKEY") or _field(b, "SMILES") or "")[:14]
        if key and key not in seen:
            seen.add(key)
            out.append(b)
        if len(out) >= limit:
            break
    return out


def synthetic_library(blocks: list[str], size: int, path: Path) -> Path:
    """Write ``size`` spectra (``blocks`` repeated, titles made unique) to ``path``, streaming."""
    with open(path, "w") as fh:
        for i in range(size):
            b = blocks[i % len(blocks)]
            title = _field(b, "TITLE") or "spectrum"
            fh.write(b.replace(f"TITLE={title}", f"TITLE={title}-copy{i}", 1) + "\n")
    return path


def heavy_atoms(formula: str | None) -> int | None:
    if not formula:
        return None
    from matchms_diffms.chem.formula import Formula

    try:
        return Formula.parse(formula).n_heavy
    except ValueError:
        return None


# ------------------------------------------------------------------------------------------- running
def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(1 for _ in fh)
    except OSError:
        return 0


def run_annotate(args: list[str], env: dict, poll: float | None = None, progress_file: Path | None = None) -> dict:
    """Run ``matchms-diffms annotate ARGS``; wall time, exit code, peak RSS, optional RSS trace."""
    exe = shutil.which("matchms-diffms")
    cmd = [exe, "annotate", *args]
    trace: list = []
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        busy0, self0 = _busy_jiffies(), _own_jiffies(children=False)
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, text=True)
        stop = threading.Event()

        def sampler():
            while not stop.wait(poll):
                rss = _rss_mb(proc.pid)
                if rss is not None:
                    done = _count_lines(progress_file) if progress_file else None
                    trace.append((round(time.perf_counter() - start, 2), done, round(rss, 1)))

        thread = threading.Thread(target=sampler, daemon=True) if poll else None
        if thread:
            thread.start()
        _, status, usage = os.wait4(proc.pid, 0)          # rusage of exactly this child: its peak RSS
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        others = None
        busy1, self1 = _busy_jiffies(), _own_jiffies(children=False)
        if None not in (busy0, busy1, self0, self1):    # CPU of everything but the child and this script
            other_s = (busy1 - busy0 - (self1 - self0)) / _TICK - (usage.ru_utime + usage.ru_stime)
            others = round(max(0.0, other_s) / (wall * (os.cpu_count() or 1)), 3)
        stop.set()
        if thread:
            thread.join()
        err.seek(0)
        stderr = err.read()
    return {"command": " ".join(["matchms-diffms", "annotate", *args]), "exit_code": proc.returncode,
            "wall_s": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "others_cpu_share": others, "stderr_tail": stderr[-2000:], "trace": trace}


def per_spectrum(output_json: Path) -> list[dict]:
    """Status, seconds, formula and heavy-atom count of every spectrum of an annotate JSON output."""
    data = json.loads(Path(output_json).read_text())
    rows = []
    for s in data:
        md = s.get("metadata", s)
        formula = md.get("diffms_formula") or md.get("formula")
        rows.append({"title": md.get("title") or md.get("spectrum_id"), "status": str(md.get("diffms_status")),
                     "seconds": md.get("diffms_seconds"), "formula": formula, "n_heavy": heavy_atoms(formula),
                     "n_samples": md.get("diffms_n_samples"), "steps": md.get("diffms_steps")})
    return rows


def summarise(rows: list[dict], wall: float, max_heavy: int = 40) -> dict:
    secs = [r["seconds"] for r in rows if isinstance(r["seconds"], (int, float))]
    ok = [r for r in rows if r["status"].split(":")[0] in OK_STATUSES and isinstance(r["seconds"], (int, float))]
    small = [r["seconds"] for r in ok if r["n_heavy"] is not None and r["n_heavy"] <= max_heavy]
    return {"n_spectra": len(rows), "n_ok": len(ok),
            "wall_s_per_spectrum_incl_startup": round(wall / max(1, len(rows)), 2),
            "median_s_per_spectrum": median(secs),
            "mean_s_per_spectrum": round(sum(secs) / len(secs), 3) if secs else None,
            "max_s_per_spectrum": max(secs, default=None),
            f"max_s_per_spectrum_ok_up_to_{max_heavy}_heavy_atoms": max(small, default=None),
            "status_counts": {k: sum(1 for r in rows if r["status"].split(":")[0] == k)
                              for k in sorted({r["status"].split(":")[0] for r in rows})}}


def rss_slope(trace: list, min_done_fraction: float = 0.5) -> float | None:
    """Least-squares slope of RSS (MB) against spectra done, per 1000 spectra, over the second half."""
    pts = [(d, r) for _, d, r in trace if d is not None and d > 0]
    if len(pts) < 4:
        return None
    top = max(d for d, _ in pts)
    pts = [(d, r) for d, r in pts if d >= min_done_fraction * top]
    if len(pts) < 3 or max(d for d, _ in pts) == min(d for d, _ in pts):
        return None
    n = len(pts)
    mx, my = sum(d for d, _ in pts) / n, sum(r for _, r in pts) / n
    sxy = sum((d - mx) * (r - my) for d, r in pts)
    sxx = sum((d - mx) ** 2 for d, _ in pts)
    return round(1000 * sxy / sxx, 3)


# ------------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--val", type=Path, default=VAL)
    ap.add_argument("--weights", default="default")
    ap.add_argument("--n-spectra", type=int, default=50, help="0 skips the default-settings and baseline runs")
    ap.add_argument("--baseline-spectra", type=int, default=1)
    ap.add_argument("--library-size", type=int, default=10_000, help="0 skips the streaming run")
    ap.add_argument("--stream-samples", type=int, default=2)
    ap.add_argument("--stream-steps", type=int, default=2)
    ap.add_argument("--poll", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--extra", default="", help="extra options for annotate in the default-settings run")
    ap.add_argument("--out", type=Path, default=RESULTS / "end_to_end.json")
    args = ap.parse_args(argv)

    if shutil.which("matchms-diffms") is None:
        print("matchms-diffms is not installed (pip install -e .)", file=sys.stderr)
        return 2
    if args.weights == "default" and not (DEFAULT_WEIGHTS / "config.json").is_file():
        print(f"no default weights at {DEFAULT_WEIGHTS}; pass --weights", file=sys.stderr)
        return 2
    if not args.val.is_file():
        print(f"val fold not found: {args.val}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))

    result = {"benchmark": "end_to_end", "environment": environment(args.threads), "protocol": __doc__,
              "weights": args.weights}
    blocks = read_mgf_blocks(args.val)
    chosen = one_per_structure(blocks, args.n_spectra)
    with tempfile.TemporaryDirectory(prefix="diffms-bench-") as tmp:
        tmp = Path(tmp)
        subset = tmp / "val_subset.mgf"
        subset.write_text("".join(chosen))
        runs = {"default_settings": (subset, ["--seed", "0", *args.extra.split()]),
                "baseline_settings": (tmp / "baseline.mgf", ["--seed", "0", "--samples", "100", "--steps", "500"])}
        if args.baseline_spectra > 0 and chosen:
            (tmp / "baseline.mgf").write_text("".join(chosen[:args.baseline_spectra]))
        else:
            runs.pop("baseline_settings")
        if not chosen:                      # --n-spectra 0: only the streaming run
            runs.pop("default_settings")
        for name, (inp, opts) in runs.items():
            out = tmp / f"{name}.json"
            run = run_annotate([str(inp), "-o", str(out), "--weights", args.weights, "--no-progress", *opts], env)
            run.pop("trace")
            if run["exit_code"] == 0:
                rows = per_spectrum(out)
                run.update(summary=summarise(rows, run["wall_s"]), spectra=rows)
            result[name] = run
            print(name, json.dumps(run.get("summary", run), indent=1), flush=True)
            write_json(result, args.out)

        if args.library_size > 0:
            lib = synthetic_library(blocks, args.library_size, tmp / "library.mgf")
            out = tmp / "library.json"
            partial = Path(str(out) + ".partial.jsonl")
            run = run_annotate([str(lib), "-o", str(out), "--weights", args.weights, "--no-progress", "--seed", "0",
                                "--samples", str(args.stream_samples), "--steps", str(args.stream_steps)],
                               env, poll=args.poll, progress_file=partial)
            trace = run["trace"]
            rss = [r for _, _, r in trace]
            run.update(library_size=args.library_size, samples=args.stream_samples, steps=args.stream_steps,
                       rss_mb_first=rss[0] if rss else None, rss_mb_max_sampled=max(rss, default=None),
                       rss_slope_mb_per_1000_spectra=rss_slope(trace),
                       trace=trace[:: max(1, len(trace) // 200)])
            result["streaming"] = run
            print("streaming", {k: v for k, v in run.items() if k not in ("trace", "stderr_tail")}, flush=True)
            write_json(result, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
