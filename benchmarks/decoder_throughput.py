"""Benchmark (a): decoder per-step throughput, reference path vs fast path, and vs the official timings.

One command::

    python benchmarks/decoder_throughput.py            # writes benchmarks/results/decoder_throughput.json

What is timed is one full reverse step t = 250 -> s = 249 (extra features + network + posterior + draw), the
protocol of ``../shared/conformance/baseline_timing.json``: random weights, every graph with exactly n heavy
atoms (no padding), E_t drawn from the edge-marginal prior, float32, eval mode, 2 warm-up calls, median of
the timed calls, ``torch.set_num_threads(2)`` by default. For every size (``msg`` = the official MSG model,
``default`` = our default model), n in (20, 32) and batch in (1, 8, 32, 100):

* ``reference`` -- our reference path: the straightforward code (one-hot state, full network forward,
  posterior by matrix products), i.e. the official arithmetic without the unused y transition matrices;
* ``fast`` -- the default sampling path (``diffusion.reverse_sample``): classes, ``edge_logits``, table
  posterior; its output is checked to be identical to the reference step's (same seed);
* ``reference_network`` -- the reference network forward alone (the official network's arithmetic), to
  compare the machine's current speed with the ``network_forward`` column of the baseline file
  (``calibration`` = ours / file: > 1 means this machine is slower now than when the official timings were
  taken, e.g. because other processes run).

Reference, fast and reference-network calls alternate, so all see the same machine load;
``others_cpu_share`` is the share of the CPUs used by other processes meanwhile. Speed-ups vs the official
file are given as measured (``speedup_vs_official``: file wall time / our wall time), corrected by the
calibration (``speedup_vs_official_calibrated``), and from our process CPU time
(``speedup_vs_official_cpu_time``: with one thread this is the wall time the step would take on an
otherwise idle core, against the file's two threads).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (BASELINE_TIMING, RESULTS, Contention, default_config, environment, median,  # noqa: E402
                     timed, write_json)

from matchms_diffms.model.config import preset  # noqa: E402
from matchms_diffms.model.decoder import GraphTransformer  # noqa: E402
from matchms_diffms.model.fast_decoder import edge_classes, edge_logits  # noqa: E402
from matchms_diffms.model.diffusion import (NoiseSchedule, Qbar, edge_marginals, posterior_edge_probs,  # noqa: E402
                                            posterior_from_classes, posterior_table, sample_edge_classes,
                                            sample_edges, sample_prior, step_transition)
from matchms_diffms.model.graph_features import (network_input, network_input_from_classes,  # noqa: E402
                                                 static_features)

ATOM_PATTERN = ["C", "C", "O", "C", "N", "C", "C", "O"]     # fixed heavy-atom pattern, repeated to n


def official_cells() -> dict:
    """(n, batch) -> baseline entry of the official decoder timings (empty if the file is missing)."""
    if not BASELINE_TIMING.is_file():
        return {}
    data = json.loads(BASELINE_TIMING.read_text())
    return {(c["n_nodes"], c["batch"]): c for c in data["decoder_step"]}


class StepBench:
    """Inputs and the timed step functions for one (model, n, batch)."""

    def __init__(self, decoder, cfg, n: int, B: int, seed: int = 0):
        self.decoder, self.cfg, self.B, self.n = decoder, cfg, B, n
        index = {a: i for i, a in enumerate(cfg.atom_types)}
        atoms = [index[ATOM_PATTERN[i % len(ATOM_PATTERN)]] for i in range(n)]
        self.X = F.one_hot(torch.tensor(atoms), cfg.n_atom_types).float().expand(B, n, -1).contiguous()
        self.mask = torch.ones(B, n, dtype=torch.bool)
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randn(B, cfg.cond_dim, generator=g)
        m = edge_marginals(cfg.edge_marginals)
        self.E = sample_prior(self.mask, m, g)                                         # E_t ~ prior
        self.E_cls = edge_classes(self.E)
        schedule = NoiseSchedule(cfg.diffusion_steps)
        t, s = 250, 249
        self.Q = (step_transition(schedule, t, s, m), Qbar(schedule.alpha_bar(s), m), Qbar(schedule.alpha_bar(t), m))
        self.t_norm = torch.full((B, 1), t / schedule.T)
        # (B,) for decoders with hydrogen features: the H count of the saturated acyclic molecule of these atoms
        self.H = (torch.full((B,), float(sum(cfg.atom_valencies[a] for a in atoms) - 2 * (n - 1)))
                  if cfg.hydrogen_features else None)
        self.static = static_features(self.X, self.mask, cfg, hydrogens=self.H)
        self.table = posterior_table(*self.Q)
        self.seed = seed
        self.net_inputs = network_input(self.X, self.E, self.y, self.mask, self.t_norm, cfg,
                                        torch.Generator().manual_seed(seed), hydrogens=self.H)

    def reference(self):
        g = torch.Generator().manual_seed(self.seed + 1)
        X_in, E_in, y_in = network_input(self.X, self.E, self.y, self.mask, self.t_norm, self.cfg, g,
                                         hydrogens=self.H)
        logits = self.decoder(X_in, E_in, y_in, self.mask)[1]
        prob = posterior_edge_probs(self.E, F.softmax(logits.float(), dim=-1), *self.Q)
        return edge_classes(sample_edges(prob, self.mask, g))

    def fast(self, parts: dict | None = None):
        g = torch.Generator().manual_seed(self.seed + 1)
        steps = [lambda: network_input_from_classes(self.static, self.E_cls, self.y, self.mask, self.t_norm,
                                                    self.cfg, g)]
        out = {}

        def net():
            out["logits"] = edge_logits(self.decoder, out["X_in"], self.E_cls, out["y_in"], self.mask)

        def post():
            prob = posterior_from_classes(self.E_cls, F.softmax(out["logits"].float(), dim=-1), self.table)
            out["E"] = sample_edge_classes(prob, self.mask, g)

        def feats():
            out["X_in"], out["y_in"] = steps[0]()

        for name, fn in (("features", feats), ("network", net), ("posterior_and_draw", post)):
            if parts is None:
                fn()
            else:
                parts.setdefault(name, []).append(timed(fn)[0])
        return out["E"]

    def reference_network(self):
        return self.decoder(*self.net_inputs[:3], self.mask)


def bench_cell(bench: StepBench, reps: int, warmup: int, net_reps: int) -> dict:
    with torch.inference_mode():
        same = torch.equal(bench.fast(), bench.reference())
        for _ in range(warmup):
            bench.reference()
            bench.fast()
        walls = {"reference": [], "fast": [], "reference_network": []}
        cpus = {"reference": [], "fast": [], "reference_network": []}
        parts: dict = {}
        cont = Contention().start()
        for rep in range(reps):
            fns = [("reference", bench.reference), ("fast", bench.fast)]
            if rep < net_reps:
                fns.append(("reference_network", bench.reference_network))
            for name, fn in fns:
                w, c = timed(fn)
                walls[name].append(w)
                cpus[name].append(c)
        others = cont.stop()
        for _ in range(reps):
            bench.fast(parts)
    B = bench.B
    ms = {k: 1000 * median(v) for k, v in walls.items()}
    cpu_ms = {k: 1000 * median(v) for k, v in cpus.items()}
    return {
        "identical_outputs": bool(same),
        "reference_ms_per_step": round(ms["reference"], 2), "fast_ms_per_step": round(ms["fast"], 2),
        "reference_cpu_ms_per_step": round(cpu_ms["reference"], 2), "fast_cpu_ms_per_step": round(cpu_ms["fast"], 2),
        "reference_graph_steps_per_s": round(1000 * B / ms["reference"], 2),
        "fast_graph_steps_per_s": round(1000 * B / ms["fast"], 2),
        "fast_ms_per_graph_step": round(ms["fast"] / B, 3),
        "speedup_vs_reference": round(ms["reference"] / ms["fast"], 2),
        "speedup_vs_reference_cpu_time": round(cpu_ms["reference"] / cpu_ms["fast"], 2),
        "fast_breakdown_ms": {k: round(1000 * median(v), 2) for k, v in parts.items()},
        "reference_network_ms": round(ms["reference_network"], 2),
        "reference_network_cpu_ms": round(cpu_ms["reference_network"], 2),
        "runs_ms": {k: [round(1000 * v, 1) for v in vals] for k, vals in walls.items()},
        "others_cpu_share": others,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="msg,default", help="comma list of msg, default")
    ap.add_argument("--nodes", default="20,32")
    ap.add_argument("--batches", default="1,8,32,100")
    ap.add_argument("--threads", default="2", help="comma list of torch thread counts")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--net-reps", type=int, default=3, help="timed reference-network-only calls (calibration)")
    ap.add_argument("--quick", action="store_true", help="3 timed runs, 1 warm-up (noisier)")
    ap.add_argument("--out", type=Path, default=RESULTS / "decoder_throughput.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.reps, args.warmup, args.net_reps = 3, 1, 2

    official = official_cells()
    env = environment()
    cells = []
    sizes = {}
    for size in args.sizes.split(","):
        cfg, source = (preset("msg"), "preset('msg')") if size == "msg" else default_config()
        sizes[size] = {"config_source": source, "config": cfg.to_dict()}
        torch.manual_seed(0)
        decoder = GraphTransformer(cfg).eval()
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            for n in (int(v) for v in args.nodes.split(",")):
                for B in (int(v) for v in args.batches.split(",")):
                    bench = StepBench(decoder, cfg, n, B)
                    cell = {"size": size, "n_nodes": n, "batch": B, "threads": threads,
                            **bench_cell(bench, args.reps, args.warmup, args.net_reps)}
                    off = official.get((n, B)) if size == "msg" else None
                    if off:
                        calib = cell["reference_network_ms"] / off["breakdown_median_ms"]["network_forward"]
                        fast_ms, fast_cpu = cell["fast_ms_per_step"], cell["fast_cpu_ms_per_step"]
                        cell.update(
                            official_ms_per_step=off["ms_per_step"],
                            official_graph_steps_per_s=round(1000 * B / off["ms_per_step"], 2),
                            speedup_vs_official=round(off["ms_per_step"] / fast_ms, 2),
                            calibration=round(calib, 2),
                            speedup_vs_official_calibrated=round(off["ms_per_step"] * calib / fast_ms, 2),
                            speedup_vs_official_cpu_time=round(off["ms_per_step"] / fast_cpu, 2))
                    cells.append(cell)
                    print(f"{size:8s} n={n:3d} B={B:4d} threads={threads}: "
                          f"reference {cell['reference_ms_per_step']:9.1f} ms"
                          f"  fast {cell['fast_ms_per_step']:8.1f} ms  x{cell['speedup_vs_reference']:5.2f}"
                          + (f"  vs official x{cell['speedup_vs_official']:5.2f} (calibrated x"
                             f"{cell['speedup_vs_official_calibrated']:5.2f})" if off else "")
                          + f"  others {cell['others_cpu_share']}  identical {cell['identical_outputs']}",
                          flush=True)
                    write_json({"benchmark": "decoder_throughput", "environment": env,
                                "protocol": __doc__, "sizes": sizes, "cells": cells}, args.out)
    print(f"wrote {args.out}")
    return 0 if all(c["identical_outputs"] for c in cells) else 1


if __name__ == "__main__":
    sys.exit(main())
