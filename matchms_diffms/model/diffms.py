"""DiffMS = spectrum encoder + merge layer + graph-diffusion decoder.

State-dict keys are exactly those of the released checkpoints without ``noise_schedule.betas``
(``encoder.spectra_encoder.*``, ``merge_function.*``, ``decoder.*``), so official files load one-to-one.

Two calls make a prediction::

    fp, y = model.encode(tokens)                       # (B, 4096) fingerprint probabilities, (B, cond) y
    adj = model.sample(atom_types, y[0], n_samples=..) # (n_samples, n, n) bond classes 0..4
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .config import DiffMSConfig
from .decoder import GraphTransformer
from .diffusion import NoiseSchedule, reverse_sample
from .encoder import SpectraEncoder


class DiffMS(nn.Module):
    def __init__(self, config: DiffMSConfig):
        super().__init__()
        self.config = config
        self.encoder = SpectraEncoder(config)
        self.merge_function = nn.Linear(config.fp_sizes[-1], config.cond_dim)
        self.decoder = GraphTransformer(config)
        self.schedule = NoiseSchedule(config.diffusion_steps)  # not a module: no state-dict keys

    # ---------------------------------------------------------------- spectrum -> y
    def encode(self, tokens: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a collated token batch (``model.tokens.collate``).

        Returns the predicted fingerprint probabilities p4096 (B, 4096) and the decoder's
        conditioning vector y = merge(p4096) (B, cond_dim).
        """
        out = self.encoder(tokens)
        fp = out["fp"]                                   # (B, 4096)
        return fp, self.merge_function(fp)               # (B, cond_dim)

    # ---------------------------------------------------------------- y -> graphs
    @torch.no_grad()
    def sample(self, atom_types: list[str], y: torch.Tensor, n_samples: int = 100,
               steps: int | None = None, generator: torch.Generator | None = None) -> np.ndarray:
        """Sample ``n_samples`` bond matrices for the fixed heavy atoms ``atom_types``.

        All samples of the spectrum run as one batch of identical graphs (no padding).
        ``steps`` (default: ``config.diffusion_steps``) evenly spaced reverse steps use the exact
        multi-step marginal transition, so ``steps == T`` is the reference sampler.
        Returns an int array (n_samples, n, n) of bond classes (0 none .. 4 aromatic), symmetric,
        zero diagonal.
        """
        n = len(atom_types)
        index = {a: i for i, a in enumerate(self.config.atom_types)}
        X = torch.zeros(n_samples, n, self.config.n_atom_types)
        X[:, torch.arange(n), torch.tensor([index[a] for a in atom_types])] = 1.0   # (S, n, A)
        node_mask = torch.ones(n_samples, n, dtype=torch.bool)                        # (S, n)
        y = y.reshape(1, -1).expand(n_samples, -1)                                    # (S, cond)
        E = reverse_sample(self, X, node_mask, y, steps=steps or self.config.diffusion_steps,
                           generator=generator)                                       # (S, n, n) int
        return E.cpu().numpy()
