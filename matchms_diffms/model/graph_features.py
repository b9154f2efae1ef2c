"""Extra structural input features of the DiffMS graph decoder (DiGress's extra features, as DiffMS uses them).

At every training and sampling step the decoder sees, besides the noisy graph (X_t, E_t) and the
conditioning vector y, features computed from the current noisy graph:

    X_in = [X_t (A) | k3, k4, k5 node cycles | non-LCC | 2 eigvec entries | "charge" | "valency"]  (A + 8)
    E_in = [E_t (5)]                                                                                   (5)
    y_in = [y (cond) | n/max_n | k3, k4, k5, k6 graph cycles | n_cc | 5 eigenvalues | "weight" | t/T]  (cond + 13)

The reference's batch-padding quirks are reproduced on purpose (they are what the released weights
were trained with): padded Laplacian rows get the diagonal 2 * n_pad, so small or fragmented graphs pick
up padded eigenvalues 2 * n_pad / n; and every padded node slot counts as atom type 0 in "weight".
With no padding (one graph per pass, or graphs of equal size) both reduce to per-graph values.
``reference_padding=False`` (our own models, ``DiffMSConfig.reference_padding``) gives those per-graph
values in padded batches too: padded eigenvalues are replaced by the filler 2 and padded slots add no
weight, so a graph's features do not depend on what else is in the batch.

Adjacency A = sum of bond classes 1.. of E_t (binary for one-hot E_t), masked with the node mask.

Our own models may add two groups (``DiffMSConfig``): ``environment_features`` (which atom environments of the
noisy graph the fingerprint holds) and ``hydrogen_features`` (the formula's hydrogen count as a bond budget;
the network input then needs ``hydrogens``, the formula's H count per graph). Both are appended to X_in, and
to y_in just before t.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from .config import DiffMSConfig

# Bond order per edge class (none, single, double, triple, aromatic). Only the argmax *position* of
# E_t * BOND_ORDERS is used by the reference, i.e. the class index (aromatic counts 4).
BOND_ORDERS = [0.0, 1.0, 2.0, 3.0, 1.5]
N_EIGVALS = 5      # eigenvalues in y_in
N_EIGVECS = 2      # eigenvector columns in X_in
ZERO_EIGVAL = 1e-5  # eigenvalue / n below this counts as a connected component


# ----------------------------------------------------------------------------- helpers
def _diag(M: torch.Tensor) -> torch.Tensor:
    """Batched diagonal: (B, n, n) -> (B, n)."""
    return torch.diagonal(M, dim1=-2, dim2=-1)


def adjacency(E: torch.Tensor, node_mask: torch.Tensor) -> torch.Tensor:
    """Any-bond adjacency matrix.

    Parameters
    ----------
    E : (B, n, n, n_edge_types) one-hot (or all-zero) edge classes.
    node_mask : (B, n) bool.

    Returns
    -------
    (B, n, n) float32: sum of the bond classes 1.., zeroed on padded rows/columns.
    """
    m = node_mask.float()
    A = E[..., 1:].float().sum(dim=-1)                                   # (B, n, n)
    return A * m.unsqueeze(1) * m.unsqueeze(2)


# ----------------------------------------------------------------------------- cycles
def cycle_features(A: torch.Tensor, node_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Node (k3, k4, k5) and graph (k3, k4, k5, k6) cycle counts, /10 and clipped at 1.

    Parameters
    ----------
    A : (B, n, n) float adjacency.
    node_mask : (B, n) bool.

    Returns
    -------
    x_cycles : (B, n, 3)
    y_cycles : (B, 4)
    """
    d = A.sum(dim=-1)                                                    # (B, n) degrees
    A2 = A @ A
    A3 = A2 @ A
    A4 = A3 @ A
    A5 = A4 @ A
    A6 = A5 @ A
    dA2, dA3, dA4, dA5 = _diag(A2), _diag(A3), _diag(A4), _diag(A5)     # (B, n) each

    def mat_vec(M, v):                                                   # (B, n, n) x (B, n) -> (B, n)
        return (M @ v.unsqueeze(-1)).squeeze(-1)

    # closed walks minus the degenerate (back-tracking) ones
    c3 = dA3                                                             # 2 * triangles at node
    c4 = dA4 - d * (d - 1) - mat_vec(A, d)                               # 2 * 4-cycles at node
    tri = c3 / 2                                                         # triangles at node
    c5 = dA5 - 2 * mat_vec(A2 * A, d) - 4 * d * tri - 2 * mat_vec(A, tri) + 10 * tri  # 2 * 5-cycles

    x_cycles = torch.stack([c3 / 2, c4 / 2, c5 / 2], dim=-1)              # (B, n, 3)
    x_cycles = x_cycles * node_mask.unsqueeze(-1).float()

    k6 = (_diag(A6).sum(-1)
          - 3 * (dA3 ** 2).sum(-1)
          + 9 * (A * A2 ** 2).sum(dim=(-2, -1))
          - 6 * (dA2 * dA4).sum(-1)
          + 6 * dA4.sum(-1)
          - 4 * dA3.sum(-1)
          + 4 * (dA2 ** 3).sum(-1)
          + 3 * A3.sum(dim=(-2, -1))
          - 12 * (dA2 ** 2).sum(-1)
          + 4 * dA2.sum(-1))                                             # (B,)
    y_cycles = torch.stack([c3.sum(-1) / 6, c4.sum(-1) / 8, c5.sum(-1) / 10, k6 / 12], dim=-1)  # (B, 4)

    return (x_cycles / 10).clamp(max=1.0), (y_cycles / 10).clamp(max=1.0)


# ----------------------------------------------------------------------------- spectrum
@contextmanager
def _one_thread():
    """Run the enclosed torch/MKL calls on one thread (restored afterwards).

    The batched eigen-decomposition solves one small matrix after the other; with several threads the
    library parallelises inside each tiny LAPACK call and is several times slower (measured: 7x for 100
    32x32 matrices with 2 threads). The solver's results are the same for any thread count.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def laplacian(A: torch.Tensor, node_mask: torch.Tensor) -> torch.Tensor:
    """Combinatorial Laplacian D - A with the reference's padding rule.

    Padded rows/columns are zero except their diagonal, which is set to 2 * n_pad (n_pad = the
    padded size of the batch), so padded nodes produce eigenvalues 2 * n_pad.

    Returns
    -------
    (B, n, n) float32, symmetric.
    """
    n_pad = A.shape[-1]
    m = node_mask.float()
    L = torch.diag_embed(A.sum(dim=-1)) - A
    L = (L + L.transpose(1, 2)) / 2
    pad_diag = 2.0 * n_pad * torch.diag_embed(1.0 - m)                   # (B, n, n)
    return L * m.unsqueeze(1) * m.unsqueeze(2) + pad_diag


def _gather_padded(values: torch.Tensor, start: torch.Tensor, k: int, fill: float) -> torch.Tensor:
    """values[..., start + 0..k-1] along the last axis, extended with ``fill`` where it runs out.

    ``values`` is (B, n) or (B, n, n) (columns); ``start`` is (B,) long. The extension has the same
    size for the whole batch (max(start) + k - n), exactly like the reference.
    """
    n = values.shape[-1]
    extend = int(start.max().item()) + k - n if start.numel() else 0
    if extend > 0:
        filler = torch.full((*values.shape[:-1], extend), fill, dtype=values.dtype, device=values.device)
        values = torch.cat([values, filler], dim=-1)
    idx = start.unsqueeze(-1) + torch.arange(k, device=values.device)   # (B, k)
    if values.dim() == 3:
        idx = idx.unsqueeze(1).expand(-1, values.shape[1], -1)          # (B, n, k)
    return torch.gather(values, -1, idx)


def spectral_features(A: torch.Tensor, node_mask: torch.Tensor, generator: torch.Generator | None = None,
                      reference_padding: bool = True) -> dict[str, torch.Tensor]:
    """Laplacian eigen-features of the (noisy) graph.

    Parameters
    ----------
    A : (B, n, n) float32 adjacency (masked).
    node_mask : (B, n) bool.
    generator : optional torch.Generator for the standard-normal noise that the non-LCC indicator
        adds on padded positions (randn of shape (B, n), drawn every call like the reference).
    reference_padding : True reproduces the reference: eigenvalues of padded nodes (2 * n_pad / n)
        leak into ``eigvals`` of graphs with fewer than n_components + 5 real eigenvalues. False
        replaces them by the filler 2 (the value of the same graph without padding).

    Returns
    -------
    dict with
        ``n_components`` (B, 1): number of eigenvalues/n below 1e-5,
        ``eigvals`` (B, 5): the eigenvalues/n after the first n_components (filler 2),
        ``nonlcc`` (B, n, 1): 1 for real nodes outside the most frequent component,
        ``eigvecs`` (B, n, 2): eigenvector columns n_components and n_components + 1, masked.
    """
    B, n = node_mask.shape
    m = node_mask.float()
    L = laplacian(A.float(), node_mask)
    with _one_thread():
        evals, evecs = torch.linalg.eigh(L)                              # (B, n), (B, n, n) ascending
    n_real = m.sum(dim=1, keepdim=True).clamp(min=1.0)                    # (B, 1)
    evals = evals / n_real
    evecs = evecs * m.unsqueeze(2) * m.unsqueeze(1)                      # rows and columns masked
    if not reference_padding:
        # real eigenvalues are <= 2 (n_real - 1) < 2 n_pad, so the padded ones sort last
        is_real = torch.arange(n, device=evals.device).unsqueeze(0) < m.sum(dim=1, keepdim=True)
        evals = torch.where(is_real, evals, torch.full_like(evals, 2.0))

    n_cc = (evals < ZERO_EIGVAL).sum(dim=-1)                             # (B,) long
    eigvals5 = _gather_padded(evals, n_cc, N_EIGVALS, fill=2.0)          # (B, 5)

    # non-LCC indicator: nodes whose (rounded) first-eigenvector entry is not the most frequent value
    first = torch.round(evecs[:, :, 0], decimals=3) * m                  # (B, n)
    noise_device = generator.device if generator is not None else node_mask.device
    noise = torch.randn(B, n, generator=generator, device=noise_device).to(first.device)   # (B, n)
    first = first + noise * (1.0 - m)
    most_common = torch.mode(first, dim=1).values                        # (B,)
    nonlcc = ((first != most_common.unsqueeze(1)).float() * m).unsqueeze(-1)  # (B, n, 1)

    eigvecs = _gather_padded(evecs, n_cc, N_EIGVECS, fill=0.0) * m.unsqueeze(-1)  # (B, n, 2)
    return {"n_components": n_cc.unsqueeze(-1).float(), "eigvals": eigvals5,
            "nonlcc": nonlcc, "eigvecs": eigvecs}


# ----------------------------------------------------------------------------- molecular features
def valency_feature(E: torch.Tensor) -> torch.Tensor:
    """Sum over neighbours of the bond-class *index* (aromatic counts 4; reference quirk).

    (B, n, n, 5) -> (B, n) float.
    """
    orders = torch.tensor(BOND_ORDERS, dtype=torch.float32, device=E.device)
    return (E.float() * orders).argmax(dim=-1).sum(dim=-1).float()


def charge_feature(X: torch.Tensor, E: torch.Tensor, config: DiffMSConfig) -> torch.Tensor:
    """Atom-type *index* (argmax of X * valency table) minus ``valency_feature`` (reference quirk).

    (B, n, A), (B, n, n, 5) -> (B, n) float. Padded nodes give 0 - 0 = 0.
    """
    valencies = torch.tensor(config.atom_valencies, dtype=torch.float32, device=X.device)
    type_index = (X.float() * valencies).argmax(dim=-1)                  # (B, n)
    return (type_index - valency_feature(E)).float()


def weight_feature(X: torch.Tensor, config: DiffMSConfig, node_mask: torch.Tensor | None = None
                   ) -> torch.Tensor:
    """Sum of atom weights / max weight, (B, n, A) -> (B, 1).

    Without ``node_mask`` the sum runs over *all* node slots like the reference: padded slots have an
    all-zero X row whose argmax is 0, so each adds the weight of atom type 0 (12/35 for carbon), a
    batch-dependent quirk. With ``node_mask`` (B, n) only real nodes count.
    """
    weights = torch.tensor(config.atom_weights, dtype=torch.float32, device=X.device)
    per_node = weights[X.argmax(dim=-1)]                                 # (B, n)
    if node_mask is not None:
        per_node = per_node * node_mask.float()
    return per_node.sum(dim=-1, keepdim=True) / config.max_atom_weight


# ----------------------------------------------------------------------------- environments
def environment_features(X: torch.Tensor, E_cls: torch.Tensor, y: torch.Tensor, node_mask: torch.Tensor,
                         config: DiffMSConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Which atom environments of the noisy graph the conditioning fingerprint contains (our models only).

    Parameters
    ----------
    X : (B, n, A) atom one-hot; E_cls : (B, n, n) long edge classes (0..4; other values = no bond).
    y : (B, cond) conditioning fingerprint (0/1 or probabilities); node_mask : (B, n) bool.
    config : ``environment_radius`` R and the atom vocabulary.

    Returns
    -------
    env_X : (B, n, R + 1) y at the Morgan bit of each atom's radius-r environment (0 for padding)
    env_y : (B, 2) [share of y over the graph's environments, share of y's mass the graph's environments
        cover]
    """
    from ..chem.environments import batch_environment_bits

    B, n = node_mask.shape
    R = config.environment_radius
    nodes = torch.where(node_mask, X.argmax(dim=-1), -1).cpu().numpy()                 # (B, n)
    adj = E_cls.cpu().numpy()                                                           # (B, n, n)
    bits = torch.from_numpy(batch_environment_bits(nodes, adj, config.atom_types, R, y.shape[-1]))
    bits = bits.to(y.device)                                                           # (B, n, R + 1)
    real = bits >= 0
    yf = y.float()
    env_X = torch.gather(yf, 1, bits.clamp(min=0).reshape(B, -1)).reshape(B, n, R + 1) * real
    precision = env_X.sum(dim=(1, 2)) / real.sum(dim=(1, 2)).clamp(min=1)             # (B,)
    covered = torch.zeros_like(yf).scatter_(1, bits.clamp(min=0).reshape(B, -1),
                                            real.reshape(B, -1).float())               # (B, cond)
    recall = (yf * covered.clamp(max=1)).sum(dim=1) / yf.sum(dim=1).clamp(min=1e-6)
    return env_X, torch.stack([precision, recall], dim=-1)


# ----------------------------------------------------------------------------- hydrogens
def hydrogen_features(X: torch.Tensor, E_cls: torch.Tensor, hydrogens: torch.Tensor, node_mask: torch.Tensor,
                      config: DiffMSConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The formula's hydrogen count as a bond budget of the noisy graph (our models only).

    With the lowest valences v (C 4, N 3, O 2, ...) a neutral molecule of the formula has bond orders adding
    up to (sum v - H) / 2 (``chem.decoding`` uses the same budget; hypervalent S / P and aromatic rings
    with a hydrogen-bearing N or O shift it by the amount the network can learn from the atoms).

    Parameters
    ----------
    X : (B, n, A) atom one-hot; E_cls : (B, n, n) long edge classes (0..4; other values = no bond).
    hydrogens : (B,) hydrogen count of each graph's formula.
    node_mask : (B, n) bool; config : the atom vocabulary (``atom_valencies``).

    Returns
    -------
    free_X : (B, n, 1) v_i minus the bond orders at atom i (aromatic 1.5), / 4; 0 for padding
    budget_y : (B, 2) [bond orders the formula still lacks, / 2, clipped at -4 and 4 (near t = 0, where the
        bonds are decided, it is a few units; in pure noise larger); H / max_n_nodes]
    """
    orders = torch.tensor(BOND_ORDERS + [0.0], dtype=torch.float32, device=E_cls.device)      # class K -> 0
    pair = node_mask.unsqueeze(1) & node_mask.unsqueeze(2)
    bo = orders[E_cls.clamp(0, len(BOND_ORDERS)).long()] * pair                              # (B, n, n)
    valence = torch.tensor(config.atom_valencies, dtype=torch.float32, device=X.device)
    v = (X.float() * valence).sum(dim=-1) * node_mask                                         # (B, n)
    free = (v - bo.sum(dim=-1)) * node_mask                                                   # (B, n)
    h = hydrogens.to(device=X.device, dtype=torch.float32).reshape(-1)                        # (B,)
    lacking = (free.sum(dim=-1) - h) / 2                       # (B,) (sum v - H) / 2 - bond orders present
    budget = torch.stack([(lacking / 2).clamp(-4, 4), h / config.max_n_nodes], dim=-1)        # (B, 2)
    return (free / 4).unsqueeze(-1), budget


def _require_hydrogens(hydrogens, config: DiffMSConfig):
    if config.hydrogen_features and hydrogens is None:
        raise ValueError("this decoder uses hydrogen features: pass the formula's hydrogen count (hydrogens)")


# ----------------------------------------------------------------------------- assembly
def extra_features(X: torch.Tensor, E: torch.Tensor, node_mask: torch.Tensor, config: DiffMSConfig,
                   generator: torch.Generator | None = None, reference_padding: bool | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Extra node and global features of the current (noisy) graph, in reference order.

    Parameters
    ----------
    X : (B, n, A) atom one-hot (padded rows all-zero).
    E : (B, n, n, 5) edge one-hot (padded entries all-zero).
    node_mask : (B, n) bool.
    config : DiffMSConfig (atom tables, ``max_n_nodes``).
    generator : optional torch.Generator for the non-LCC noise.
    reference_padding : padding policy (default ``config.reference_padding``): True reproduces the
        reference's batch-dependent eigenvalue and weight values, False gives per-graph values.

    Returns
    -------
    extra_X : (B, n, 8) [k3, k4, k5 node cycles, non-LCC, eigvec 1, eigvec 2, charge, valency]
    extra_y : (B, 12) [n/max_n_nodes, k3, k4, k5, k6, n_components, 5 eigenvalues, weight]
    """
    if reference_padding is None:
        reference_padding = config.reference_padding
    node_mask = node_mask.bool()
    A = adjacency(E, node_mask)                                          # (B, n, n)
    x_cycles, y_cycles = cycle_features(A, node_mask)                    # (B, n, 3), (B, 4)
    spec = spectral_features(A, node_mask, generator, reference_padding)
    charge = charge_feature(X, E, config).unsqueeze(-1)                  # (B, n, 1)
    valency = valency_feature(E).unsqueeze(-1)                           # (B, n, 1)
    n = node_mask.float().sum(dim=1, keepdim=True) / config.max_n_nodes  # (B, 1)
    weight = weight_feature(X, config, None if reference_padding else node_mask)  # (B, 1)

    extra_X = torch.cat([x_cycles, spec["nonlcc"], spec["eigvecs"], charge, valency], dim=-1)
    extra_y = torch.cat([n, y_cycles, spec["n_components"], spec["eigvals"], weight], dim=-1)
    return extra_X, extra_y


def network_input(X: torch.Tensor, E_t: torch.Tensor, y: torch.Tensor, node_mask: torch.Tensor,
                  t_norm, config: DiffMSConfig, generator: torch.Generator | None = None,
                  reference_padding: bool | None = None, hydrogens: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decoder inputs for one step: features concatenated in reference order.

    Parameters
    ----------
    X : (B, n, A) atom one-hot; E_t : (B, n, n, 5) noisy edge one-hot; y : (B, cond) conditioning.
    node_mask : (B, n) bool.
    t_norm : float, (B,) or (B, 1): normalised time t/T of the current (noisier) state.
    config : DiffMSConfig.
    generator : optional torch.Generator for the non-LCC noise.
    reference_padding : padding policy, see ``extra_features``.
    hydrogens : (B,) the formula's hydrogen counts; needed when ``config.hydrogen_features``.

    Returns
    -------
    X_in : (B, n, A + n_extra_X), E_in : (B, n, n, 5) float, y_in : (B, cond + n_extra_y); without our
    extra groups n_extra_X = 8, n_extra_y = 13.
    """
    _require_hydrogens(hydrogens, config)
    B = X.shape[0]
    extra_X, extra_y = extra_features(X, E_t, node_mask, config, generator, reference_padding)
    if config.environment_features or config.hydrogen_features:
        E_cls = torch.where(E_t.sum(dim=-1) > 0, E_t.argmax(dim=-1), 0)
    if config.environment_features:
        env_X, env_y = environment_features(X, E_cls, y, node_mask.bool(), config)
        extra_X, extra_y = torch.cat([extra_X, env_X], dim=-1), torch.cat([extra_y, env_y], dim=-1)
    if config.hydrogen_features:
        free_X, budget_y = hydrogen_features(X, E_cls, hydrogens, node_mask.bool(), config)
        extra_X, extra_y = torch.cat([extra_X, free_X], dim=-1), torch.cat([extra_y, budget_y], dim=-1)
    t = torch.as_tensor(t_norm, dtype=torch.float32, device=X.device).reshape(-1, 1).expand(B, 1)
    X_in = torch.cat([X.float(), extra_X], dim=-1)
    E_in = E_t.float()
    y_in = torch.cat([y.float(), extra_y, t], dim=-1)
    return X_in, E_in, y_in


# ----------------------------------------------------------------------------- sampler fast path
def static_features(X: torch.Tensor, node_mask: torch.Tensor, config: DiffMSConfig,
                    reference_padding: bool | None = None, hydrogens: torch.Tensor | None = None
                    ) -> dict[str, torch.Tensor]:
    """The parts of the network input that do not change during sampling (atoms are fixed).

    Returns
    -------
    dict with ``X`` (B, n, A) float, ``type_index`` (B, n) float (argmax of X * valency table, for
    "charge"), ``n`` (B, 1) and ``weight`` (B, 1), each computed exactly as ``extra_features`` does, and
    ``hydrogens`` (B,) or None (see ``network_input``).
    """
    _require_hydrogens(hydrogens, config)
    if reference_padding is None:
        reference_padding = config.reference_padding
    node_mask = node_mask.bool()
    valencies = torch.tensor(config.atom_valencies, dtype=torch.float32, device=X.device)
    return {"X": X.float(),
            "type_index": (X.float() * valencies).argmax(dim=-1),
            "n": node_mask.float().sum(dim=1, keepdim=True) / config.max_n_nodes,
            "weight": weight_feature(X, config, None if reference_padding else node_mask),
            "hydrogens": hydrogens}


def network_input_from_classes(static: dict[str, torch.Tensor], E_cls: torch.Tensor, y: torch.Tensor,
                               node_mask: torch.Tensor, t_norm, config: DiffMSConfig,
                               generator: torch.Generator | None = None,
                               reference_padding: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``network_input`` for a noisy graph given as edge classes; bit-identical X_in and y_in.

    Parameters
    ----------
    static : ``static_features(X, node_mask, config)``.
    E_cls : (B, n, n) long edge classes 0..K-1, K for an all-zero one-hot row (the prior's diagonal,
        padding); ``fast_decoder.edge_classes`` converts a one-hot tensor.
    y, node_mask, t_norm, config, generator, reference_padding : as for ``network_input`` (the same
        random numbers are drawn).

    Returns
    -------
    X_in : (B, n, A + n_extra_X), y_in : (B, cond + n_extra_y). (E_in is the one-hot of ``E_cls``, not
    built here.)
    """
    if reference_padding is None:
        reference_padding = config.reference_padding
    node_mask = node_mask.bool()
    K = config.n_edge_types
    B = E_cls.shape[0]
    bonded = (E_cls > 0) & (E_cls < K)                                   # any bond class 1..K-1
    if not bool(node_mask.all()):
        bonded = bonded & node_mask.unsqueeze(1) & node_mask.unsqueeze(2)
    A = bonded.float()                                                   # (B, n, n), == adjacency()
    x_cycles, y_cycles = cycle_features(A, node_mask)                    # (B, n, 3), (B, 4)
    spec = spectral_features(A, node_mask, generator, reference_padding)
    # "valency": sum of the class indices of the one-hot rows (all-zero rows count 0)
    valency = torch.where(E_cls < K, E_cls, 0).sum(dim=-1).float()       # (B, n)
    charge = (static["type_index"] - valency).float()

    extra_X = torch.cat([x_cycles, spec["nonlcc"], spec["eigvecs"], charge.unsqueeze(-1),
                         valency.unsqueeze(-1)], dim=-1)                 # (B, n, 8)
    env_y = y.new_zeros(B, 0)
    if config.environment_features:
        env_X, env_y = environment_features(static["X"], E_cls, y, node_mask, config)
        extra_X = torch.cat([extra_X, env_X], dim=-1)                    # (B, n, 8 + R + 1)
    budget_y = y.new_zeros(B, 0)
    if config.hydrogen_features:
        free_X, budget_y = hydrogen_features(static["X"], E_cls, static["hydrogens"], node_mask, config)
        extra_X = torch.cat([extra_X, free_X], dim=-1)
    t = torch.as_tensor(t_norm, dtype=torch.float32, device=E_cls.device).reshape(-1, 1).expand(B, 1)
    X_in = torch.cat([static["X"], extra_X], dim=-1)
    y_in = torch.cat([y.float(), static["n"], y_cycles, spec["n_components"], spec["eigvals"],
                      static["weight"], env_y.float(), budget_y.float(), t], dim=-1)
    return X_in, y_in
