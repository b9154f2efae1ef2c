"""Concurrency: ``--workers N`` uses N processes and gives the result of 1; two ``annotate`` processes writing
different outputs in the same folder do not interfere."""
from __future__ import annotations

import multiprocessing
import os
import subprocess
import time

import pytest
from click.testing import CliRunner

from matchms_diffms import batch, cli
from matchms_diffms import DiffMSAnnotator
from reliability_helpers import assert_no_traceback, cli_command, cli_env, good_library_mgf, make_tiny_weights, \
    parsed_output

N = 12
OPTIONS = ["--samples", "12", "--steps", "10", "--seed", "42", "--top-k", "3", "--no-progress"]


class PidAnnotator(DiffMSAnnotator):
    """The real annotator, plus the id of the process that annotated each spectrum (``test_pid``). It dawdles a
    little per spectrum so that every worker gets work even when one starts much later than the others."""

    def annotate(self, spectrum):
        out = super().annotate(spectrum)
        out.set("test_pid", os.getpid())
        if multiprocessing.parent_process() is not None:        # in a worker process
            time.sleep(0.2)
        return out


class CrashAnnotator(DiffMSAnnotator):
    """Kills its worker process (like a segfault or the out-of-memory killer) on the spectrum at position 10."""

    def annotate(self, spectrum):
        if spectrum.get("title").endswith(" 10") and multiprocessing.parent_process() is not None:
            os._exit(139)
        return super().annotate(spectrum)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    return make_tiny_weights(tmp_path_factory.mktemp("weights") / "tiny")


@pytest.fixture
def library(tmp_path):
    path = tmp_path / "library.mgf"
    path.write_text(good_library_mgf(N))
    return path


def annotate(library, out, weights, *extra):
    result = CliRunner().invoke(cli.main, ["annotate", str(library), "-o", str(out), "--weights", str(weights),
                                           *OPTIONS, *extra])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result


def test_workers_use_n_processes_and_give_the_result_of_one(library, tiny_weights, tmp_path, monkeypatch):
    import json

    monkeypatch.setattr(batch, "annotator_class", lambda: PidAnnotator)
    annotate(library, tmp_path / "one.json", tiny_weights, "--workers", "1")
    annotate(library, tmp_path / "two.json", tiny_weights, "--workers", "2")
    pids_one = {r["test_pid"] for r in json.loads((tmp_path / "one.json").read_text())}
    pids_two = {r["test_pid"] for r in json.loads((tmp_path / "two.json").read_text())}
    assert pids_one == {os.getpid()}
    assert len(pids_two) == 2 and os.getpid() not in pids_two
    one, two = parsed_output(tmp_path / "one.json"), parsed_output(tmp_path / "two.json")
    assert one == two
    assert sum(r["diffms_status"] == "ok" for r in one) >= N // 3


def test_processes_in_one_folder_do_not_interfere(library, tiny_weights, tmp_path):
    """Two runs with different outputs in one folder both succeed; a third run started at the same time on the
    same OUTPUT as the first either finishes on its own or stops with a one-line error (exit 2 when it sees the
    other run's checkpoint at its start, exit 1 when that appears while it works) -- it never shares the first
    run's checkpoint."""
    folder = tmp_path / "shared"
    folder.mkdir()
    outs = [folder / "a.json", folder / "b.json", folder / "a.json"]
    procs = [subprocess.Popen(cli_command("annotate", library, "-o", out, "--weights", tiny_weights, *OPTIONS),
                              env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for out in outs]
    results = [p.communicate(timeout=300) for p in procs]
    for proc, (stdout, stderr) in zip(procs, results):
        assert_no_traceback(stderr)
        if proc.returncode != 0:          # refused, early (checkpoint seen at start) or at its first record
            assert (proc.returncode, stderr.strip().endswith("give each run its own OUTPUT")) == (1, True) or \
                (proc.returncode, "a checkpoint of an unfinished run exists" in stderr) == (2, True), stderr
            assert len(stderr.strip().splitlines()) == 1, stderr
    assert procs[1].returncode == 0                              # b.json: nobody else writes it
    assert 0 in (procs[0].returncode, procs[2].returncode)       # one of the two a.json runs finished
    assert sorted(p.name for p in folder.iterdir()) == ["a.json", "b.json"]     # no checkpoints or temporaries
    a, b = parsed_output(outs[0]), parsed_output(outs[1])
    assert len(a) == N and a == b
    annotate(library, tmp_path / "alone.json", tiny_weights)
    assert parsed_output(tmp_path / "alone.json") == a


def test_a_worker_that_dies_costs_one_spectrum_not_the_run(library, tiny_weights, tmp_path, monkeypatch):
    """A worker process killed while annotating (segfault, out-of-memory kill) neither stops nor hangs the run:
    that spectrum gets an ``error`` status, every other spectrum its normal result."""
    monkeypatch.setattr(batch, "annotator_class", lambda: CrashAnnotator)
    result = annotate(library, tmp_path / "crash.json", tiny_weights, "--workers", "2")
    assert_no_traceback(result.output)
    assert "worker process died" in result.stderr
    crashed = parsed_output(tmp_path / "crash.json")
    monkeypatch.setattr(batch, "annotator_class", lambda: DiffMSAnnotator)
    annotate(library, tmp_path / "normal.json", tiny_weights)
    normal = parsed_output(tmp_path / "normal.json")
    assert crashed[10]["diffms_status"] == batch.WORKER_DIED
    assert crashed[:10] + crashed[11:] == normal[:10] + normal[11:]
