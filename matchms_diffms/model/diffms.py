"""DiffMS = spectrum encoder + merge layer + graph-diffusion decoder.

State-dict keys are exactly those of the released checkpoints without ``noise_schedule.betas``
(``encoder.spectra_encoder.*``, ``merge_function.*``, ``decoder.*``), so official files load one-to-one.

Two calls make a prediction::

    fp, y = model.encode(tokens)                       # (B, fp bits) fingerprint probabilities, (B, cond) y
    adj = model.sample(atom_types, y[0], n_samples=..) # (n_samples, n, n) bond classes 0..4

Sampling speed (benchmarks/README.md): all samples of a spectrum form one batch of identical graphs (no
padding), and the reverse chain runs the bit-exact fast path of ``diffusion.reverse_sample``. ``steps`` < T
skips steps with the exact multi-step posterior.
"""
from __future__ import annotations

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
               fast: bool | None = None, return_probs: bool = False, hydrogens: int | None = None):
        """Sample ``n_samples`` bond matrices for the fixed heavy atoms ``atom_types``.

        All samples of the spectrum run as one batch of identical graphs (no padding).
        ``steps`` (default: ``config.diffusion_steps``) evenly spaced reverse steps use the exact
        multi-step marginal transition, so ``steps == T`` is the reference sampler. ``fast=False`` forces the
        (slower, bit-identical) reference path.
        Returns an int array (n_samples, n, n) of bond classes (0 none .. 4 aromatic), symmetric,
        zero diagonal; with ``return_probs`` also the float32 array (n_samples, n, n, 5) of the class
        probabilities the last draw used. The last step goes to s = 0, where the posterior is the denoiser's
        clean-graph estimate p(e_0), the input of
        ``chem.decoding.decode_formula_exact``. ``hydrogens``: the formula's hydrogen count, needed by
        decoders with ``config.hydrogen_features`` (ignored by the others).
        """
        n = len(atom_types)
        steps = steps or self.config.diffusion_steps
        X = self._atoms_one_hot(atom_types, n_samples)                                 # (S, n, A)
        node_mask = torch.ones(n_samples, n, dtype=torch.bool, device=X.device)        # (S, n)
        y = y.reshape(1, -1).to(X.device).expand(n_samples, -1)                        # (S, cond)
        h = None if hydrogens is None else torch.full((n_samples,), float(hydrogens), device=X.device)  # (S,)
        E, probs = reverse_sample(self, X, node_mask, y, steps=steps, generator=generator, fast=fast,
                                  return_probs=True, hydrogens=h)                      # (S, n, n), (S, n, n, K)
        if return_probs:
            return E.cpu().numpy(), probs.float().cpu().numpy()
        return E.cpu().numpy()
