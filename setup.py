"""Build configuration that ``setup.cfg`` cannot express.

* The repository's ``adapters/`` folder installs as the package ``matchms_diffms_adapters`` (a top-level
  ``adapters`` package would clash with an unrelated distribution of that name).
* Every weights folder ``weights/<name>/`` ships inside the package as ``matchms_diffms/_weights/<name>/``
  (model, config, calibration, model card; not the training logs), so that named weights resolve from a
  wheel exactly as from a checkout (:func:`matchms_diffms.weights.shipped_weights_dir`).
"""
from setuptools import find_packages, setup

ADAPTERS = "matchms_diffms_adapters"
WEIGHTS = "matchms_diffms._weights"
WEIGHT_FILES = ["model.safetensors", "config.json", "calibration.json", "MODEL_CARD.md"]

setup(
    packages=(find_packages(include=["matchms_diffms", "matchms_diffms.*"])
              + [ADAPTERS + name[len("adapters"):] for name in find_packages(include=["adapters", "adapters.*"])]
              + [WEIGHTS]),
    package_dir={ADAPTERS: "adapters", WEIGHTS: "weights"},
    package_data={WEIGHTS: [f"*/{name}" for name in WEIGHT_FILES]},
)
