"""Helpers shared by the reliability tests (bad input, fuzzing, interrupted runs, weights security,
determinism, concurrency): a tiny random-weight model saved in our weights format, so these tests run
without ``../shared``, and a runner for the ``matchms-diffms`` command in a subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Small enough that a 4-sample, 5-step annotation of a 10-atom molecule takes milliseconds.
TINY_CONFIG = dict(name="reliability-tiny", encoder_hidden=16, encoder_layers=1, encoder_heads=2, magma_modulo=16,
                   fp_sizes=[64, 128],
                   cond_dim=32, decoder_layers=1, hidden_mlp_X=16, hidden_mlp_E=16, hidden_mlp_y=16, dx=16, de=16,
                   dy=16, decoder_heads=2, dim_ffX=16, dim_ffE=16, dim_ffy=16, diffusion_steps=20, max_n_nodes=20,
                   reference_padding=False, edge_marginals=[0.55, 0.40, 0.03, 0.01, 0.01])

SUBPROCESS_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0",
                  "MATCHMS_DIFFMS_LOAD_PLUGINS": ""}


def make_tiny_weights(directory: Path, seed: int = 0, **overrides) -> Path:
    """Write a random-weight tiny DiffMS into ``directory`` (model.safetensors + config.json with sha256)."""
    import torch

    from matchms_diffms.model.config import DiffMSConfig
    from matchms_diffms.model.diffms import DiffMS
    from matchms_diffms.weights import save_weights

    torch.manual_seed(seed)
    config = DiffMSConfig(**{**TINY_CONFIG, **overrides})
    model = DiffMS(config)
    with torch.no_grad():   # favour "no bond" / "single bond" so that random weights give some valid molecules
        last = model.decoder.mlp_out_E[-1]
        last.weight.mul_(0.1)
        last.bias.copy_(torch.tensor([0.0, 0.0, -4.0, -6.0, -6.0]))
    return save_weights(model, directory, {"name": config.name})


def cli_env(**extra) -> dict:
    env = dict(os.environ)
    env.update(SUBPROCESS_ENV)
    env.update(extra)
    return env


def cli_command(*args) -> list[str]:
    return [sys.executable, "-c", "import sys; from matchms_diffms.cli import main; sys.exit(main())",
            *[str(a) for a in args]]


def run_cli(*args, timeout: float = 120, cwd=None, **kwargs) -> subprocess.CompletedProcess:
    """Run ``matchms-diffms ARGS`` in a fresh Python process (one thread)."""
    return subprocess.run(cli_command(*args), capture_output=True, text=True, timeout=timeout, env=cli_env(),
                          cwd=cwd, **kwargs)


def assert_no_traceback(text: str) -> None:
    assert "Traceback (most recent call last)" not in text, text


def mgf_record(title, *, formula=None, pepmass=None, adduct="[M+H]+", peaks=((29.03858, 100.0),), extra=()):
    """One MGF record as text."""
    lines = ["BEGIN IONS", f"TITLE={title}"]
    if pepmass is not None:
        lines.append(f"PEPMASS={pepmass}")
    lines += ["CHARGE=1+", "IONMODE=positive"]
    if adduct is not None:
        lines.append(f"ADDUCT={adduct}")
    if formula is not None:
        lines.append(f"FORMULA={formula}")
    lines += list(extra)
    lines += [f"{mz} {inten}" for mz, inten in peaks]
    lines.append("END IONS")
    return "\n".join(lines) + "\n\n"


# A small library of valid spectra (precursor m/z consistent with formula + [M+H]+).
GOOD_LIBRARY = [
    ("ethanol", "C2H6O", 47.04914, ((29.03858, 100.0), (31.01784, 35.0))),
    ("acetic acid", "C2H4O2", 61.02841, ((43.01784, 100.0),)),
    ("propanol", "C3H8O", 61.06479, ((43.05423, 100.0),)),
    ("trimethylamine", "C3H9N", 60.08078, ((44.04948, 100.0),)),
    ("acetone", "C3H6O", 59.04914, ((43.01784, 100.0), (41.03858, 20.0))),
    ("glycine", "C2H5NO2", 76.03931, ((30.03383, 100.0),)),
    ("butanol", "C4H10O", 75.08044, ((57.06988, 100.0),)),
    ("ethylamine", "C2H7N", 46.06513, ((30.03383, 100.0),)),
    ("methanol dimer-ish", "C2H6O2", 63.04406, ((45.03349, 100.0),)),
    ("propanoic acid", "C3H6O2", 75.04406, ((57.03349, 100.0), (29.03858, 30.0))),
    ("acetamide", "C2H5NO", 60.04439, ((43.01784, 100.0),)),
    ("dimethyl sulfide", "C2H6S", 63.02629, ((47.00, 100.0),)),
]


def good_library_mgf(n: int | None = None) -> str:
    records = GOOD_LIBRARY if n is None else [GOOD_LIBRARY[i % len(GOOD_LIBRARY)] for i in range(n)]
    return "".join(mgf_record(f"{t} {i}", formula=f, pepmass=mz, peaks=p)
                   for i, (t, f, mz, p) in enumerate(records))


def parsed_output(path: Path) -> list[dict]:
    """The diffms_* metadata of every spectrum in a .json output (for comparisons that must not depend on
    wall-clock fields such as ``diffms_seconds``)."""
    records = json.loads(Path(path).read_text())
    return [{k: v for k, v in r.items() if k.startswith("diffms_") and k != "diffms_seconds"} for r in records]
