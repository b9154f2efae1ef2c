"""Interrupted runs never lose finished work: ``kill -9`` during ``annotate --resume`` and the same command again
gives the output of an uninterrupted run; outputs are written atomically; the input is never modified; disk-full
and permission errors give a one-line message and keep the checkpoint of what finished."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from matchms_diffms import batch, cli, files, writers
from matchms_diffms import checkpoint as ckpt
from matchms_diffms import DiffMSAnnotator
from reliability_helpers import (assert_no_traceback, cli_command, cli_env, good_library_mgf, make_tiny_weights,
                                 parsed_output, run_cli)

N_SPECTRA = 12
OPTIONS = ["--samples", "16", "--steps", "20", "--seed", "11", "--top-k", "3", "--no-progress"]
FAST = ["--samples", "4", "--steps", "3", "--seed", "5", "--top-k", "2", "--no-progress"]


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    return make_tiny_weights(tmp_path_factory.mktemp("weights") / "tiny")


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def checkpoint_records(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(1 for line in path.read_bytes().split(b"\n")[1:] if line.endswith(b"}"))


def kill_when_progressed(args, checkpoint: Path, at_least: int, timeout: float = 240) -> int:
    """Start ``matchms-diffms ARGS``; SIGKILL it once the checkpoint holds ``at_least`` records.
    Returns the number of records when killed (-1: the process ended by itself first)."""
    proc = subprocess.Popen(cli_command(*args), env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return -1
            n = checkpoint_records(checkpoint)
            if n >= at_least:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return n
            time.sleep(0.01)
        raise AssertionError("the run made no progress in time")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_kill_9_during_resume_then_same_command_equals_uninterrupted_run(tiny_weights, tmp_path):
    library = tmp_path / "library.mgf"
    library.write_text(good_library_mgf(N_SPECTRA))
    before, mtime = digest(library), library.stat().st_mtime_ns
    work = tmp_path / "run"
    work.mkdir()
    out = work / "annotated.json"
    checkpoint = ckpt.checkpoint_path_for(out)
    command = ["annotate", library, "-o", out, "--weights", tiny_weights, *OPTIONS, "--resume"]

    # 1. kill -9 a fresh --resume run part-way
    killed_at = kill_when_progressed(command, checkpoint, at_least=2)
    assert 2 <= killed_at < N_SPECTRA, f"the run was not interrupted part-way ({killed_at})"
    assert not out.exists()                                      # the output only appears complete
    # 2. a kill in the middle of writing a record leaves a torn last line: it must be dropped, not trusted, and
    #    its spectrum (one of the library's, not finished yet) computed again
    complete_lines = checkpoint.read_bytes().split(b"\n")[1:-1]            # after the header, before a torn tail
    finished = {json.loads(line)["index"] for line in complete_lines}
    torn = min(set(range(N_SPECTRA)) - finished)
    with open(checkpoint, "ab") as fh:
        fh.write(b'{"index": %d, "metadata": {"diffms_status": "ok", "diffms_smiles": "C' % torn)
    # 3. the same command again finishes the run
    done = run_cli(*command, timeout=300)
    assert done.returncode == 0, done.stderr
    assert_no_traceback(done.stderr)
    assert not checkpoint.exists()
    assert sorted(p.name for p in work.iterdir()) == ["annotated.json"]     # no temporary files left

    # 4. an uninterrupted run with the same seed (in this process: also shows that the thread count of the
    #    process does not matter)
    reference = tmp_path / "reference.json"
    ref = invoke("annotate", library, "-o", reference, "--weights", tiny_weights, *OPTIONS)
    assert ref.exit_code == 0, ref.output
    got, want = parsed_output(out), parsed_output(reference)
    assert len(got) == N_SPECTRA
    assert got == want
    assert sum(r["diffms_status"] == "ok" for r in want) >= N_SPECTRA // 3     # real candidates compared
    assert digest(library) == before and library.stat().st_mtime_ns == mtime  # the input is never modified


def invoke(*args):
    result = CliRunner().invoke(cli.main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def one_line(result) -> str:
    assert_no_traceback(result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


@pytest.fixture
def library(tmp_path):
    path = tmp_path / "library.mgf"
    path.write_text(good_library_mgf(6))
    return path


@pytest.fixture
def reference(library, tiny_weights, tmp_path):
    out = tmp_path / "reference.tsv"
    result = invoke("annotate", library, "-o", out, "--weights", tiny_weights, *FAST)
    assert result.exit_code == 0, result.output
    return out


class CountingAnnotator(DiffMSAnnotator):
    calls = 0

    def annotate(self, spectrum):
        CountingAnnotator.calls += 1
        return super().annotate(spectrum)


def test_disk_full_on_the_output_keeps_the_checkpoint(library, reference, tiny_weights, tmp_path, monkeypatch):
    out = tmp_path / "out" / "annotated.tsv"
    out.parent.mkdir()
    out.write_text("previous results\n")                          # an older output must survive a failed write
    monkeypatch.setattr(batch, "annotator_class", lambda: CountingAnnotator)
    real_write_tsv = writers.write_tsv

    def full(tmp):
        with open(tmp, "w") as fh:
            fh.write("partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(writers, "write_tsv", lambda spectra, path: files.atomic_write(path, full))
    monkeypatch.setitem(writers.WRITERS, ".tsv", writers.write_tsv)
    CountingAnnotator.calls = 0
    result = invoke("annotate", library, "-o", out, "--weights", tiny_weights, *FAST)
    assert result.exit_code == 1
    line = one_line(result)
    assert "No space left on device" in line and str(ckpt.checkpoint_path_for(out)) in line and "--resume" in line
    assert out.read_text() == "previous results\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["annotated.tsv", "annotated.tsv.partial.jsonl"]
    assert CountingAnnotator.calls == 6
    # space freed: the same command with --resume writes the output without computing anything again
    monkeypatch.setattr(writers, "write_tsv", real_write_tsv)
    monkeypatch.setitem(writers.WRITERS, ".tsv", real_write_tsv)
    result = invoke("annotate", library, "-o", out, "--weights", tiny_weights, *FAST, "--resume")
    assert result.exit_code == 0, result.output
    assert CountingAnnotator.calls == 6
    assert out.read_bytes() == reference.read_bytes()
    assert not ckpt.checkpoint_path_for(out).exists()


def test_disk_full_on_the_checkpoint_keeps_what_finished(library, reference, tiny_weights, tmp_path, monkeypatch):
    out = tmp_path / "annotated.tsv"
    real = ckpt._write_line
    written = []

    def write_line(fh, obj):
        if len(written) == 4:                                      # header + 3 records fit, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written.append(obj)
        real(fh, obj)

    monkeypatch.setattr(ckpt, "_write_line", write_line)
    result = invoke("annotate", library, "-o", out, "--weights", tiny_weights, *FAST)
    assert result.exit_code == 1
    line = one_line(result)
    assert "No space left on device" in line and "checkpoint" in line
    assert checkpoint_records(ckpt.checkpoint_path_for(out)) == 3 and not out.exists()
    monkeypatch.setattr(ckpt, "_write_line", real)
    monkeypatch.setattr(batch, "annotator_class", lambda: CountingAnnotator)
    CountingAnnotator.calls = 0
    result = invoke("annotate", library, "-o", out, "--weights", tiny_weights, *FAST, "--resume")
    assert result.exit_code == 0, result.output
    assert CountingAnnotator.calls == 3                           # only the spectra not yet saved
    assert out.read_bytes() == reference.read_bytes()


def test_permission_denied_on_the_output(library, tiny_weights, tmp_path, monkeypatch):
    """Root ignores file modes, so the refusal is simulated where the writer creates its temporary file."""
    out = tmp_path / "annotated.mgf"
    real_mkstemp = files.tempfile.mkstemp

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(files.tempfile, "mkstemp", denied)
    result = invoke("annotate", library, "-o", out, "--weights", tiny_weights, *FAST)
    assert result.exit_code == 1
    line = one_line(result)
    assert "Permission denied" in line and str(out) in line and "--resume" in line
    assert ckpt.checkpoint_path_for(out).exists() and not out.exists()
    monkeypatch.setattr(files.tempfile, "mkstemp", real_mkstemp)
    result = invoke("annotate", library, "-o", out, "--weights", tiny_weights, *FAST, "--resume")
    assert result.exit_code == 0, result.output
    assert out.exists() and not ckpt.checkpoint_path_for(out).exists()


def test_checkpoint_cannot_be_created(library, tiny_weights, tmp_path, monkeypatch):
    out = tmp_path / "annotated.json"
    real_open = open

    def guarded_open(file, mode="r", *args, **kwargs):
        if str(file).endswith(ckpt.CHECKPOINT_SUFFIX) and "r" not in mode:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", guarded_open)
    result = invoke("annotate", library, "-o", out, "--weights", tiny_weights, *FAST)
    assert result.exit_code == 1
    assert "Permission denied" in one_line(result)
    assert not out.exists()


def test_output_folder_is_a_file(library, tiny_weights, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    result = invoke("annotate", library, "-o", blocker / "out.mgf", "--weights", tiny_weights, *FAST)
    assert result.exit_code == 2
    assert "does not exist" in one_line(result)


@pytest.mark.parametrize("ext", [".mgf", ".msp", ".json", ".tsv"])
def test_writers_are_atomic(tmp_path, monkeypatch, ext):
    """A writer that fails half-way (or a crash before the rename) leaves the old file and no temporary."""
    from matchms import Spectrum
    import numpy as np

    spectra = [Spectrum(mz=np.array([10.0]), intensities=np.array([1.0]),
                        metadata={"title": "a", "diffms_status": "ok", "diffms_candidates": "[]"})]
    path = tmp_path / f"out{ext}"
    path.write_text("old content\n")
    seen = []
    real_replace = os.replace

    def crash(src, dst):
        seen.append((Path(src).parent, Path(dst)))
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(files.os, "replace", crash)
    with pytest.raises(files.OutputError, match="Input/output error"):
        writers.WRITERS[ext](spectra, path)
    assert seen == [(tmp_path, path)]                              # written beside the target, then renamed
    assert path.read_text() == "old content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    monkeypatch.setattr(files.os, "replace", real_replace)
    writers.WRITERS[ext](spectra, path)
    assert path.read_text() != "old content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_output_cannot_be_the_input(library, tiny_weights):
    before = digest(library)
    result = invoke("annotate", library, "-o", library, "--weights", tiny_weights, *FAST)
    assert result.exit_code == 2
    assert "is the INPUT file" in one_line(result)
    assert digest(library) == before
