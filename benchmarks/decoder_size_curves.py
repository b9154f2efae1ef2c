"""Which decoder size learns fastest per CPU-hour? Short learning curves of several sizes, same budget.

Every size is the default decoder with all widths (dx, de, dy, the feed-forward and input/output MLP
widths) multiplied by a factor, same depth. Each trains **from scratch** with ``matchms-diffms train
decoder`` on the same featurised molecules (``--graphs``: the cache file of a pretraining run, val/test
structures already excluded), the same seed, batch, constant learning rate, bf16, dropout 0, environment
features and one thread, for the same wall-clock ``--budget``, one size after the other. Then, for each
run and each time point of ``--eval-at``, the newest checkpoint written by then is joined to the shipped
encoder and measured with ``matchms-diffms evaluate-decoder`` (true fingerprints of held-out structures,
samples as drawn and completed), next to the run's held-out edge cross-entropy.

Run (about sizes x budget, plus the evaluations)::

    python benchmarks/decoder_size_curves.py --graphs RUN/cache/decoder-data-*.npz \\
        --molecules ../shared/data/massbank/val.mgf --runs runs/sizes

Finished runs in ``--runs`` are not retrained (delete the folder to retrain); results go to
``benchmarks/results/decoder_size_curves.json``. Timings are wall-clock on a machine that may be shared:
``others_cpu_share`` records how busy the other core was meanwhile.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from _common import Contention, environment, write_json  # noqa: E402

WIDTHS = ("dx", "de", "dy", "dim_ffX", "dim_ffE", "dim_ffy", "hidden_mlp_X", "hidden_mlp_E", "hidden_mlp_y")


def size_config(factor: float) -> dict:
    """The shipped decoder's model config with every width scaled by ``factor``."""
    base = json.loads((ROOT / "weights" / "default" / "training" / "model_config.json").read_text())
    scaled = {k: int(round(base[k] * factor)) for k in WIDTHS}
    return {**base, **scaled, "name": f"size-x{factor:g}", "environment_features": True,
            "decoder_dropout": 0.0}


def log_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]


def finished(run: Path) -> bool:
    """A run stopped by its time budget has written its final weights."""
    return (run / "weights").is_dir()


def train(run: Path, factor: float, args) -> dict:
    """Train one size for the budget (unless already done); the CPU share others used meanwhile."""
    run.mkdir(parents=True, exist_ok=True)
    config = run.parent / f"{run.name}.model_config.json"
    config.write_text(json.dumps(size_config(factor), indent=1))
    cmd = ["matchms-diffms", "train", "decoder", "--out", str(run), "--model-config", str(config),
           "--graphs", args.graphs, "--seed", str(args.seed), "--lr", str(args.lr), "--schedule", "constant",
           "--steps", "100000", "--time-budget", args.budget, "--precision", "bf16",
           "--max-atoms", "45", "--batch-size", "32", "--threads", "1", "--bucket", "sorted",
           "--ckpt-every", str(args.ckpt_every), "--keep-checkpoints", "0", "--val-every",
           str(args.val_every), "--no-progress"]
    busy = Contention().start()
    subprocess.run(cmd, check=True)
    return {"command": " ".join(cmd), "others_cpu_share": busy.stop()}


def checkpoint_at(run: Path, seconds: float) -> tuple[Path, dict] | None:
    """The newest checkpoint whose step was logged at or before ``seconds`` of training."""
    from matchms_diffms.train.common import checkpoint_paths, load_checkpoint

    elapsed = {r["step"]: r["elapsed_s"] for r in log_rows(run) if "elapsed_s" in r and "step" in r}
    best = None
    for path in checkpoint_paths(run):
        step = int(load_checkpoint(path)["step"])
        if step in elapsed and elapsed[step] <= seconds:
            best = (path, {"step": step, "elapsed_s": elapsed[step]})
    return best


def held_out_loss(run: Path, step: int) -> float | None:
    rows = [r for r in log_rows(run) if "val_loss" in r and r["step"] <= step]
    return rows[-1]["val_loss"] if rows else None


def evaluate(run: Path, ckpt: Path, args) -> dict:
    """Join the checkpoint's decoder to the shipped encoder; evaluate-decoder on held-out molecules."""
    with tempfile.TemporaryDirectory() as tmp:
        part = Path(tmp) / "run"
        (part / "checkpoints").mkdir(parents=True)
        (part / "checkpoints" / ckpt.name).symlink_to(ckpt.resolve())
        for name in ("model_config.json", "run_config.json"):
            (part / name).symlink_to((run / name).resolve())
        weights = Path(tmp) / "weights"
        subprocess.run(["matchms-diffms", "train", "assemble", "--encoder", str(ROOT / "weights" / "default"),
                        "--decoder", str(part), "-o", str(weights), "--default-steps", "20",
                        "--max-heavy-atoms", "80"], check=True, capture_output=True)
        out = Path(tmp) / "metrics.json"
        subprocess.run(["matchms-diffms", "evaluate-decoder", args.molecules, "--weights", str(weights),
                        "--samples", str(args.samples), "--limit", str(args.limit), "--max-atoms", "45",
                        "--seed", "0", "--threads", "1", "--no-baseline", "-o", str(out)],
                       check=True, capture_output=True)
        total = json.loads(out.read_text())["total"]
    flat = {k: total[k] for k in ("valid", "formula_exact", "found")}
    for part in ("sampled", "completed"):
        flat.update({f"{part}_{k}": v for k, v in total[part].items()})
    return {k: {"mean": round(v["mean"], 4), "low": round(v["low"], 4), "high": round(v["high"], 4)}
            for k, v in flat.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--graphs", required=True, help="decoder-data-*.npz of a train decoder run")
    ap.add_argument("--molecules", required=True, help="held-out structures (val MGF or SMILES file)")
    ap.add_argument("--runs", default="runs/sizes", help="folder for the training runs")
    ap.add_argument("--factors", default="0.5,1,2", help="width factors (1 = the shipped size)")
    ap.add_argument("--budget", default="20m", help="training wall-clock per size")
    ap.add_argument("--eval-at", default="10m,20m", help="time points evaluated")
    ap.add_argument("--lr", type=float, default=7e-4)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--ckpt-every", type=int, default=250)
    ap.add_argument("--val-every", type=int, default=500)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("-o", "--output", default=str(ROOT / "benchmarks/results/decoder_size_curves.json"))
    args = ap.parse_args(argv)
    from matchms_diffms.train.common import parse_duration

    result = {"what": __doc__.split("\n")[0], "environment": environment(1), "budget": args.budget,
              "molecules": args.molecules, "limit": args.limit, "samples": args.samples, "sizes": []}
    for factor in (float(f) for f in args.factors.split(",")):
        run = Path(args.runs) / f"x{factor:g}"
        training = None if finished(run) else train(run, factor, args)
        start = next(r for r in log_rows(run) if r.get("event") == "start")
        steps = [r for r in log_rows(run) if "s_per_step" in r]
        entry = {"factor": factor, "parameters": start["n_parameters"], "run": str(run), "training": training,
                 "steps": steps[-1]["step"], "s_per_step_median": sorted(r["s_per_step"] for r in steps)[len(steps) // 2],
                 "points": []}
        for label in args.eval_at.split(","):
            found = checkpoint_at(run, parse_duration(label))
            if found is None:
                continue
            ckpt, where = found
            point = {"at": label, **where, "molecules_seen": where["step"] * 32,
                     "held_out_edge_ce": held_out_loss(run, where["step"]), **evaluate(run, ckpt, args)}
            entry["points"].append(point)
            print(json.dumps({"factor": factor, **point}))
        result["sizes"].append(entry)
        write_json(result, Path(args.output))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
