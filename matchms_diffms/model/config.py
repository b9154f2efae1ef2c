"""DiffMSConfig: every number needed to build a DiffMS model.

One dataclass holds the architecture (encoder, merge, decoder), the diffusion settings and the
dataset constants that the released checkpoints do not carry (edge marginals, ``max_n_nodes``).
Presets:

* ``msg``      -- the released MassSpecGym checkpoint (``diffms_msg.ckpt``), encoder h = 512
* ``canopus``  -- the released NPLIB1/CANOPUS checkpoint (``diffms_canopus.ckpt``), encoder h = 256
* ``tiny``     -- the conformance fixture ``tiny_official.ckpt`` (reduced width, same structure)

Our own models (``weights/<name>/config.json``) use the same dataclass with a larger atom vocabulary,
more adduct slots and ``reference_padding=False``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..chem.formula import LOWEST_VALENCE
from ..chem.tables import ATOM_DECODER, OFFICIAL_ADDUCTS

# The chemistry constants (node classes of the official models, their adducts, valences) live in chem/.
# Encoder adduct one-hot slots of the official models: the official adducts and an 8th slot never used.
OFFICIAL_ADDUCT_SLOTS = [*OFFICIAL_ADDUCTS, ""]
# Edge-class marginals (none, single, double, triple, aromatic) of a MassSpecGym statistics directory of the
# DiffMS code (counted as ``train.graphs`` counts them). They are not stored in the released checkpoints, so
# they are configuration and are recorded with every result.
MSG_EDGE_MARGINALS = [0.9299, 0.0432, 0.0050, 0.00004, 0.0218]

# Weight of every element a node may have, as the reference's "weight" feature uses it (the "charge"
# feature's valency is ``chem.formula.LOWEST_VALENCE``).
ATOM_WEIGHT = {"C": 12, "O": 16, "P": 31, "N": 14, "S": 32, "Cl": 35, "F": 19, "H": 1, "Br": 80, "I": 127}


@dataclass
class DiffMSConfig:
    # --- encoder (MIST formula transformer + fingerprint-growing head) ---
    encoder_hidden: int = 512                 # h
    encoder_layers: int = 2
    encoder_heads: int = 8
    magma_modulo: int = 2048                  # width of the (unused at inference) fragment head
    fp_sizes: list[int] = field(default_factory=lambda: [256, 512, 1024, 2048, 4096])
    adducts: list[str] = field(default_factory=lambda: list(OFFICIAL_ADDUCT_SLOTS))  # one-hot slots
    # Batch-padding behaviour of the reference, all switched together: the encoder adds the boolean
    # key-padding mask (+1) to attention logits instead of masking; the decoder's layers do not re-mask,
    # so padded slots leak into the mean pooling of y from layer 2 on; padded nodes leak eigenvalues
    # 2*n_pad/n and count as carbon in the "weight" feature. True reproduces the official checkpoints
    # (trained that way); our own models use real masking, so a result never depends on its batch.
    reference_padding: bool = True
    # --- merge: Linear(fp_sizes[-1] -> cond_dim) ---
    cond_dim: int = 2048
    # --- decoder (DiGress graph transformer) ---
    decoder_layers: int = 5
    hidden_mlp_X: int = 256
    hidden_mlp_E: int = 128
    hidden_mlp_y: int = 2048
    dx: int = 256
    de: int = 64
    dy: int = 1024
    decoder_heads: int = 8
    dim_ffX: int = 256
    dim_ffE: int = 128
    dim_ffy: int = 1024
    # Dropout of every dropout in the decoder layers while training (DiffMS: 0.1). Our pretraining sees
    # each molecule less than once per run, so dropout only costs time there (about a fifth of a CPU step).
    decoder_dropout: float = 0.1
    atom_types: list[str] = field(default_factory=lambda: list(ATOM_DECODER))   # node classes, one-hot order
    n_edge_types: int = 5                     # none, single, double, triple, aromatic
    # --- diffusion ---
    diffusion_steps: int = 500
    edge_marginals: list[float] = field(default_factory=lambda: list(MSG_EDGE_MARGINALS))
    max_n_nodes: int = 150                    # normaliser of the n / max_n_nodes input feature
    # Largest formula (heavy atoms) the annotator accepts; None = max_n_nodes. Our weights allow more
    # than they were trained on (sampling time grows with n squared; quality drops).
    max_heavy_atoms: int | None = None
    # Reverse steps the annotator takes when the user sets none (skip-step sampling with the exact
    # multi-step transition); None = every step (the official DiffMS sampler).
    default_sampling_steps: int | None = None
    # Our models only (False in every official layout): the decoder also sees, per atom of the noisy
    # graph, whether the conditioning fingerprint holds the Morgan bit of the atom's environment at radius
    # 0..environment_radius, and two global shares (graph environments found in y, y covered by the graph);
    # graph_features.environment_features. Tells the network which atoms are not yet right.
    environment_features: bool = False
    environment_radius: int = 2
    # Our models only: the decoder also sees the hydrogen count of the formula as a bond budget: per atom
    # the valence the noisy graph leaves free, and globally how many bond orders the formula still lacks
    # (graph_features.hydrogen_features). Implicit hydrogens otherwise hide how many bonds the molecule has.
    hydrogen_features: bool = False
    # Our models only: binarise the decoder's conditioning y = merge(p) at this value (None: y as computed,
    # as in DiffMS). The decoder is pretrained on binary fingerprints, the encoder's probabilities are low.
    condition_threshold: float | None = None
    # --- free-form provenance (name, training data, ...) ---
    name: str = "unnamed"

    # Derived sizes -----------------------------------------------------------------
    @property
    def n_atom_types(self) -> int:
        return len(self.atom_types)

    def input_groups(self) -> dict[str, list[tuple[str, int]]]:
        """Named column groups of the decoder's X and y inputs, in ``graph_features.network_input`` order.

        X: atom one-hot; k3, k4, k5 cycles, non-LCC, 2 eigenvector features, charge, valency; [environment
        match per radius]; [free valence]. y: condition; n, 4 cycle counts, n_cc, 5 eigenvalues, weight;
        [2 environment shares]; [bond-order budget, H]; t.
        """
        X = [("atoms", self.n_atom_types), ("structure", 8)]
        y = [("condition", self.cond_dim), ("structure", 12)]
        if self.environment_features:
            X.append(("environment", self.environment_radius + 1))
            y.append(("environment", 2))
        if self.hydrogen_features:
            X.append(("hydrogen", 1))
            y.append(("hydrogen", 2))
        y.append(("t", 1))
        return {"X": X, "y": y}

    @property
    def n_extra_X(self) -> int:
        return sum(width for name, width in self.input_groups()["X"] if name != "atoms")

    @property
    def n_extra_y(self) -> int:
        return sum(width for name, width in self.input_groups()["y"] if name != "condition")

    @property
    def input_dims(self) -> dict:
        return {"X": self.n_atom_types + self.n_extra_X, "E": self.n_edge_types,
                "y": self.cond_dim + self.n_extra_y}

    @property
    def output_dims(self) -> dict:
        return {"X": self.n_atom_types, "E": self.n_edge_types, "y": self.cond_dim}

    @property
    def heavy_atom_limit(self) -> int:
        return self.max_heavy_atoms or self.max_n_nodes

    @property
    def atom_valencies(self) -> list[int]:
        return [LOWEST_VALENCE[a] for a in self.atom_types]

    @property
    def atom_weights(self) -> list[int]:
        return [ATOM_WEIGHT[a] for a in self.atom_types]

    @property
    def max_atom_weight(self) -> int:
        # the reference divides by the largest weight of its vocabulary (35 = Cl)
        return max(self.atom_weights)

    # Serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DiffMSConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown DiffMSConfig fields: {sorted(unknown)}")
        return cls(**d)

    def replace(self, **changes) -> "DiffMSConfig":
        return dataclasses.replace(self, **changes)


def preset(name: str) -> DiffMSConfig:
    """Configuration of a released DiffMS checkpoint layout: ``msg``, ``canopus`` or ``tiny``."""
    if name == "msg":
        return DiffMSConfig(name="diffms-msg")
    if name == "canopus":
        return DiffMSConfig(name="diffms-canopus", encoder_hidden=256, magma_modulo=512)
    if name == "tiny":
        return DiffMSConfig(
            name="diffms-tiny-conformance", encoder_hidden=64, magma_modulo=64, decoder_layers=2,
            hidden_mlp_X=64, hidden_mlp_E=32, hidden_mlp_y=256, dx=64, de=16, dy=128,
            dim_ffX=64, dim_ffE=32, dim_ffy=128, max_n_nodes=50)
    raise ValueError(f"unknown preset {name!r}; choose msg, canopus or tiny")
