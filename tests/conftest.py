"""Shared test helpers: where ``../shared`` lives and how tests skip (or, under ``CI=true``, fail) without it."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CONFORMANCE = SHARED / "conformance"
DATA = SHARED / "data"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def pytest_configure(config):
    """Refuse to test a mix of two trees: ``matchms_diffms`` from one checkout (e.g. through ``PYTHONPATH``) and
    ``matchms_diffms_adapters`` from another (e.g. an editable install of a different checkout)."""
    import matchms_diffms

    core = Path(matchms_diffms.__file__).resolve().parents[1]
    fix = ("install this checkout (pip install -e .) or, to run it through PYTHONPATH, link the adapters under "
           "their package name (ln -s adapters matchms_diffms_adapters)")
    try:
        import matchms_diffms_adapters
    except ImportError as err:
        pytest.exit(f"matchms_diffms_adapters cannot be imported ({err}): {fix}", returncode=4)
    adapters = Path(matchms_diffms_adapters.__file__).resolve().parents[1]
    if core != adapters:
        pytest.exit(f"matchms_diffms is imported from {core} but matchms_diffms_adapters from {adapters}: {fix}",
                    returncode=4)


def _need(path: Path) -> Path:
    """``path`` if it exists; otherwise skip the test with the reason, or fail it under ``CI=true`` (CI must
    provide ``../shared``: a missing folder there would silently turn the conformance tests into skips)."""
    if not path.exists():
        reason = (f"{path} not found: the shared DiffMS fixtures/data sit beside the repository only on the "
                  "developers' machines and in CI")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: tests that need it fail instead of skipping)", pytrace=False)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def conformance_dir() -> Path:
    return _need(CONFORMANCE)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return _need(DATA)


@pytest.fixture(scope="session")
def tiny_state_dict(conformance_dir):
    """The official-format tiny checkpoint's state dict (loaded without pickle)."""
    import gzip
    import io

    import torch

    raw = gzip.decompress((conformance_dir / "tiny_official.ckpt.gz").read_bytes())
    ckpt = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    return ckpt["state_dict"]
