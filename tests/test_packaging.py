"""What an installation needs beyond the code: the declared entry points resolve, ``--help`` and a wrong
``--weights`` stay quick (no torch import, nothing read), and ``weights list`` shows the shipped weights.

The wheel itself (package data, the adapters' package name, the quick start from an empty folder) is built and
installed into a fresh virtual environment by ``.ci/run``.
"""
import configparser
import json
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import pytest
from click.testing import CliRunner

from matchms_diffms import cli
from matchms_diffms.files import sha256_file
from matchms_diffms.weights import shipped_weights_dir

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "example_library.mgf"


def declared_entry_points() -> list[tuple[str, str, str]]:
    """(group, name, "module:attr" or "module") of every entry point in setup.cfg."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    out = []
    for group, text in cfg["options.entry_points"].items():
        for line in text.strip().splitlines():
            name, target = (part.strip() for part in line.split("=", 1))
            out.append((group, name, target))
    return out


@pytest.mark.parametrize("group, name, target", declared_entry_points(), ids=lambda v: str(v))
def test_declared_entry_points_resolve(group, name, target):
    module_name, _, attr = target.partition(":")
    assert not module_name.startswith("adapters."), "adapters install as matchms_diffms_adapters"
    module = import_module(module_name)
    if attr:
        assert callable(getattr(module, attr))
    else:                                                     # a plugin module: implements at least one hook
        assert any(hasattr(getattr(module, n), "matchms_diffms_impl") for n in dir(module)), module_name


def python_modules_after(*argv) -> tuple[subprocess.CompletedProcess, set]:
    """Run ``matchms-diffms ARGV`` in a fresh interpreter; return the process and the modules it imported."""
    code = ("import json, sys\nfrom matchms_diffms.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    return proc, set(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("argv", [["--help"], ["annotate", "--help"]])
def test_help_does_not_import_torch(argv):
    proc, modules = python_modules_after(*argv)
    assert "Usage:" in proc.stdout
    assert "torch" not in modules


def test_unknown_weights_fail_first_and_list_the_known_names(tmp_path):
    proc, modules = python_modules_after("annotate", str(EXAMPLE), "-o", str(tmp_path / "out.mgf"),
                                         "--weights", "no-such-weights")
    assert "Error: unknown weights 'no-such-weights'" in proc.stderr and "default" in proc.stderr, proc.stderr
    assert "torch" not in modules and "matchms" not in modules          # nothing heavy was loaded
    assert not list(tmp_path.iterdir())


def test_weights_are_checked_before_the_input_is_read(tmp_path, monkeypatch):
    def never(path):
        raise AssertionError("the input was read before the weights were checked")

    from matchms_diffms import io

    monkeypatch.setattr(io, "read_spectra", never)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes(b"not the tensors config.json describes")
    (bad / "config.json").write_text(json.dumps({"format": "matchms-diffms-weights/1", "sha256": "0" * 64}))
    result = CliRunner().invoke(cli.main, ["annotate", str(EXAMPLE), "-o", str(tmp_path / "o.mgf"),
                                           "--weights", str(bad)])
    assert result.exit_code == 2 and "does not match config.json" in result.stderr, result.output


def test_weights_list_shows_size_and_hash():
    result = CliRunner().invoke(cli.main, ["weights", "list"])
    assert result.exit_code == 0, result.output
    header, *rows = [line.split("\t") for line in result.stdout.strip().splitlines()]
    assert header == ["name", "size_MB", "sha256", "check", "path"]
    default = next(r for r in rows if r[0] == "default")
    tensors = shipped_weights_dir() / "default" / "model.safetensors"
    assert float(default[1]) == pytest.approx(tensors.stat().st_size / 1e6, abs=0.05)
    assert default[2] == sha256_file(tensors) and default[3] == "ok"
    assert Path(default[4]) == shipped_weights_dir() / "default"


@pytest.mark.parametrize("ci, outcome", [("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_missing_shared_folder_fails_under_ci_and_skips_elsewhere(ci, outcome, tmp_path, monkeypatch):
    from conftest import _need

    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="not found"):
        _need(tmp_path / "shared")
    assert _need(tmp_path) == tmp_path
