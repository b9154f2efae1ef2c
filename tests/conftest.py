"""Shared test helpers: where ``../shared`` lives and how tests skip without it."""
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CONFORMANCE = SHARED / "conformance"
DATA = SHARED / "data"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not found: the shared DiffMS fixtures/data sit beside the repository only "
                    "on the developers' machines and in CI")
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
