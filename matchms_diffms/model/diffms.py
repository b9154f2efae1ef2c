"""DiffMS = spectrum encoder + merge layer + graph-diffusion decoder.

State-dict keys are exactly those of the released checkpoints without ``noise_schedule.betas``
(``encoder.spectra_encoder.*``, ``merge_function.*``, ``decoder.*``), so official files load one-to-one.

Two calls make a prediction::

    fp, y = model.encode(tokens)                       # (B, fp bits) fingerprint probabilities, (B, cond) y
    adj = model.sample(atom_types, y[0], n_samples=..) # (n_samples, n, n) bond classes 0..4

Sampling speed (benchmarks/README.md): all samples of a spectrum form one batch of identical graphs (no
padding), and the reverse chain runs the bit-exact fast path of ``diffusion.reverse_sample``. ``steps`` < T
skips steps with the exact multi-step posterior; ``early_stop`` (off by default) stops when the top-k
candidates of the denoiser's clean-graph estimate stop changing. ``sample_many`` runs several spectra whose
formulas have the same number of heavy atoms in one batch, with results identical to separate ``sample`` calls.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .config import DiffMSConfig
from .decoder import GraphTransformer
from .diffusion import NoiseSchedule, reverse_sample, reverse_sample_groups
from .encoder import SpectraEncoder

logger = logging.getLogger("matchms.diffms")


@dataclass
class EarlyStop:
    """Stop the reverse chain once the top-k candidates stop changing (an approximation; off by default).

    Every ``check_every`` steps, from ``min_fraction`` of the steps on, the denoiser's clean-graph estimate
    (argmax of p(e_0)) of every sample is turned into a molecule; valid single-fragment molecules are counted
    by canonical SMILES and the ``top_k`` most frequent ones (ties: first seen) form the current top-k list.
    When that list has not changed for ``patience`` consecutive checks, sampling stops and the clean-graph
    estimates are returned. The result then differs from the exact chain; ``early_stop=None`` (default)
    gives the exact chain. ``DiffMS.sample`` records the step at which it stopped in ``last_stop``.

    Parameters
    ----------
    top_k : candidates compared (10 = the default number reported).
    patience : consecutive unchanged checks needed to stop.
    check_every : steps between checks.
    min_fraction : no check before this fraction of the steps has run.
    """

    top_k: int = 10
    patience: int = 3
    check_every: int = 1
    min_fraction: float = 0.0

    def __post_init__(self):
        if self.top_k < 1 or self.patience < 1 or self.check_every < 1 or not 0 <= self.min_fraction <= 1:
            raise ValueError(f"invalid early stopping rule {self}: top_k, patience and check_every must be >= 1, "
                             "min_fraction in [0, 1]")

    def monitor(self, atom_types: list[str], n_steps: int):
        """A ``reverse_sample`` monitor for one spectrum; its ``stopped_at`` is the step index or None."""
        return _TopKMonitor(self, list(atom_types), n_steps)


class _TopKMonitor:
    def __init__(self, rule: EarlyStop, atom_types: list[str], n_steps: int):
        self.rule, self.atom_types, self.n_steps = rule, atom_types, n_steps
        self.previous, self.unchanged, self.stopped_at = None, 0, None
        self.cache: dict[bytes, str | None] = {}

    def _key(self, adj: np.ndarray) -> str | None:
        raw = adj.tobytes()
        if raw not in self.cache:
            from ..chem.molecules import check_molecule, graph_to_mol
            res = check_molecule(graph_to_mol(self.atom_types, adj))
            self.cache[raw] = res.smiles if res.is_valid and res.num_fragments == 1 else None
        return self.cache[raw]

    def __call__(self, step: int, t: int, pred: torch.Tensor, E_cls: torch.Tensor) -> bool:
        rule = self.rule
        if step < rule.min_fraction * self.n_steps or (step + 1) % rule.check_every:
            return False
        n = pred.shape[1]
        adj = pred.argmax(dim=-1).cpu().numpy()                                       # (S, n, n)
        adj[:, np.arange(n), np.arange(n)] = 0
        counts = Counter(k for k in (self._key(a) for a in adj) if k is not None)
        top = [k for k, _ in counts.most_common(rule.top_k)]                          # ties: first seen
        self.unchanged = self.unchanged + 1 if top and top == self.previous else 0
        self.previous = top
        if self.unchanged >= rule.patience:
            self.stopped_at = step
            return True
        return False


class DiffMS(nn.Module):
    def __init__(self, config: DiffMSConfig):
        super().__init__()
        self.config = config
        self.encoder = SpectraEncoder(config)
        self.merge_function = nn.Linear(config.fp_sizes[-1], config.cond_dim)
        self.decoder = GraphTransformer(config)
        self.schedule = NoiseSchedule(config.diffusion_steps)  # not a module: no state-dict keys
        self.last_stop: int | None = None                       # step index of the last early stop

    # ---------------------------------------------------------------- spectrum -> y
    def encode(self, tokens: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a collated token batch (``model.tokens.collate``).

        Returns the predicted fingerprint probabilities (B, fp bits: ``config.fp_sizes[-1]``, 2048 for the
        default weights, 4096 for the official checkpoints) and the decoder's conditioning vector
        y = merge(fp) (B, cond_dim); with ``config.condition_threshold`` set, y is binarised at that value
        (the decoder was pretrained on binary fingerprints).
        """
        out = self.encoder(tokens)
        fp = out["fp"]                                   # (B, fp bits)
        y = self.merge_function(fp)                      # (B, cond_dim)
        if self.config.condition_threshold is not None:
            y = (y >= self.config.condition_threshold).to(y.dtype)
        return fp, y

    # ---------------------------------------------------------------- y -> graphs
    def _atoms_one_hot(self, atom_types: list[str], n_samples: int) -> torch.Tensor:
        n = len(atom_types)
        index = {a: i for i, a in enumerate(self.config.atom_types)}
        unknown = sorted(set(atom_types) - set(index))
        if unknown:
            raise ValueError(f"atom types {unknown} are not in the model's vocabulary {self.config.atom_types}")
        device = self.merge_function.weight.device
        X = torch.zeros(n_samples, n, self.config.n_atom_types, device=device)
        X[:, torch.arange(n), torch.tensor([index[a] for a in atom_types])] = 1.0   # (S, n, A)
        return X

    @torch.inference_mode()
    def sample(self, atom_types: list[str], y: torch.Tensor, n_samples: int = 100,
               steps: int | None = None, generator: torch.Generator | None = None,
               early_stop: EarlyStop | None = None, fast: bool | None = None,
               return_probs: bool = False):
        """Sample ``n_samples`` bond matrices for the fixed heavy atoms ``atom_types``.

        All samples of the spectrum run as one batch of identical graphs (no padding).
        ``steps`` (default: ``config.diffusion_steps``) evenly spaced reverse steps use the exact
        multi-step marginal transition, so ``steps == T`` is the reference sampler. ``early_stop``
        (default None = exact chain) may end the chain early, see ``EarlyStop``; the step index at which it
        stopped (or None) is kept in ``self.last_stop``. ``fast=False`` forces the (slower, bit-identical)
        reference path.
        Returns an int array (n_samples, n, n) of bond classes (0 none .. 4 aromatic), symmetric,
        zero diagonal; with ``return_probs`` also the float32 array (n_samples, n, n, 5) of the class
        probabilities the last draw used. The last step goes to s = 0, where the posterior is the denoiser's
        clean-graph estimate p(e_0) (after an early stop: that estimate), the input of
        ``chem.decoding.decode_formula_exact``.
        """
        n = len(atom_types)
        steps = steps or self.config.diffusion_steps
        X = self._atoms_one_hot(atom_types, n_samples)                                 # (S, n, A)
        node_mask = torch.ones(n_samples, n, dtype=torch.bool, device=X.device)        # (S, n)
        y = y.reshape(1, -1).to(X.device).expand(n_samples, -1)                        # (S, cond)
        monitor = early_stop.monitor(atom_types, steps) if early_stop is not None else None
        E, probs = reverse_sample(self, X, node_mask, y, steps=steps, generator=generator, fast=fast,
                                  monitor=monitor, return_probs=True)                  # (S, n, n), (S, n, n, K)
        self.last_stop = monitor.stopped_at if monitor is not None else None
        if self.last_stop is not None:
            logger.debug("early stop after %d of %d steps", self.last_stop + 1, steps)
        if return_probs:
            return E.cpu().numpy(), probs.float().cpu().numpy()
        return E.cpu().numpy()

    @torch.inference_mode()
    def sample_many(self, requests: list[tuple[list[str], torch.Tensor, int, torch.Generator | None]],
                    steps: int | None = None, max_batch: int = 400) -> list[np.ndarray]:
        """Sample several spectra at once; result i equals ``sample(*requests[i], steps=steps)`` exactly.

        Requests whose formulas have the same number of heavy atoms run in one batch (up to ``max_batch``
        graphs; each request keeps its own generator, so the random numbers are those of a separate call).

        Parameters
        ----------
        requests : list of (atom_types, y (cond,), n_samples, generator).
        steps : reverse steps (default ``config.diffusion_steps``).
        max_batch : largest number of graphs per batch.

        Returns
        -------
        list of int arrays (n_samples_i, n_i, n_i), in request order.
        """
        steps = steps or self.config.diffusion_steps
        out: list[np.ndarray | None] = [None] * len(requests)
        by_size: dict[int, list[int]] = {}
        for i, (atoms, _, _, _) in enumerate(requests):
            by_size.setdefault(len(atoms), []).append(i)
        for n, members in by_size.items():
            group: list[int] = []
            size = 0
            for i in members + [None]:
                if i is not None and (not group or size + requests[i][2] <= max_batch):
                    group.append(i)
                    size += requests[i][2]
                    continue
                self._sample_group(requests, group, n, steps, out)
                group, size = ([i], requests[i][2]) if i is not None else ([], 0)
        return out

    def _sample_group(self, requests, group: list[int], n: int, steps: int, out: list) -> None:
        Xs, ys, sizes, gens = [], [], [], []
        for i in group:
            atoms, y, n_samples, gen = requests[i]
            Xs.append(self._atoms_one_hot(atoms, n_samples))
            ys.append(y.reshape(1, -1).to(Xs[-1].device).expand(n_samples, -1))
            sizes.append(n_samples)
            gens.append(gen)
        X, y = torch.cat(Xs), torch.cat(ys)
        node_mask = torch.ones(X.shape[0], n, dtype=torch.bool, device=X.device)
        E = reverse_sample_groups(self, X, node_mask, y, sizes, gens, steps=steps)     # (sum S, n, n)
        for i, part in zip(group, torch.split(E, sizes)):
            out[i] = part.cpu().numpy()
