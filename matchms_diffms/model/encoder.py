"""Spectrum encoder of DiffMS: MIST formula transformer + fingerprint-growing head.

Tokens (one per annotated peak + a CLS token with the precursor formula, see ``tokens.py``) go through

    343-d token vector -> 2-layer MLP -> 2 relative-attention layers -> CLS pooling -> h0 (B, h)
    h0 -> sigmoid FP-growing head over ``config.fp_sizes``              -> fp (B, fp_sizes[-1]) probabilities
          (256 -> ... -> 4096 in the official checkpoints; the default weights stop at 2048)

Reference: the DiffMS code (MIST's formula transformer, Goldman et al. 2023). Module and attribute names are
chosen so that the state-dict keys equal the released checkpoints' keys without the leading ``encoder.``:

    spectra_encoder.0.*   FormulaTransformer (pos-cos table, token MLP, pairwise MLP, attention layers)
    spectra_encoder.1.0.* fragment (MAGMa) head Linear(h -> magma_modulo), unused by DiffMS
    spectra_encoder.2.*   FPGrowingHead

Shapes in comments: B batch, N tokens (padded), h hidden, H heads, d = h / H head dim.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import DiffMSConfig
from .tokens import ELEMENTS, MAX_COUNT, NUM_TYPES

N_ELEMENTS = len(ELEMENTS)      # 18
N_FREQ = 9                      # pos-cos frequencies 0.5^1 .. 0.5^9
FORM_DIM = N_ELEMENTS * N_FREQ  # 162
INSTRUMENT_DIM = 6              # instrument block of the token vector: always zeros (embedding off)
DROPOUT = 0.1


def token_input_dim(n_adducts: int) -> int:
    """Width of the per-token input vector: [form 162, diff 162, type 4, adduct, intensity 1, instrument 6]."""
    return 2 * FORM_DIM + NUM_TYPES + n_adducts + 1 + INSTRUMENT_DIM   # 343 for the 8 official slots


# ----------------------------------------------------------------------------------------------------
# Formula embedding "pos-cos": count c -> [1 - cos(2 pi c f_k)]_k, f_k = 0.5^k, element-major (3.2)

class PosCosEmbedding(nn.Module):
    def __init__(self):
        super().__init__()
        # Computed in float32 like the reference: this reproduces the stored official table bit for bit
        # (a float64 computation differs by up to 2.4e-5 at large counts).
        freqs = 0.5 ** torch.linspace(1, 9, N_FREQ, dtype=torch.float32)                 # (9,)
        counts = torch.arange(MAX_COUNT, dtype=torch.float32)                             # (255,) c = 0..254
        table = 1.0 - torch.cos(2 * math.pi * counts[:, None] * freqs[None, :])          # (255, 9)
        # Fixed table (stored in the checkpoints as a frozen parameter; loading replaces it with the
        # official float32 values) and one learned row for c = 255.
        self._extra_embeddings = nn.Parameter(torch.randn(1, N_FREQ))                     # (1, 9)
        self.int_to_feat_matrix = nn.Parameter(table, requires_grad=False)      # (255, 9)

    def forward(self, counts: torch.Tensor) -> torch.Tensor:
        # counts: (..., 18) integer-valued (float or int tensor)
        idx = torch.round(counts).long() if counts.is_floating_point() else counts.long()
        if idx.numel() and (idx.min() < 0 or idx.max() > MAX_COUNT):
            raise ValueError(f"pos-cos embedding: element counts must lie in 0..{MAX_COUNT}, got "
                             f"{int(idx.min())}..{int(idx.max())} (a negative count means a fragment that "
                             "is not a sub-formula of the precursor)")
        table = torch.cat([self.int_to_feat_matrix, self._extra_embeddings], dim=0)     # (256, 9)
        emb = table[idx]                                                                 # (..., 18, 9)
        return emb.flatten(-2)                                                           # (..., 162)


class MLPBlocks(nn.Module):
    """Linear -> Dropout -> ReLU, then (n_layers - 1) x [Linear(h, h) -> Dropout -> ReLU]."""

    def __init__(self, d_in: int, h: int, n_layers: int = 2):
        super().__init__()
        self.input_layer = nn.Linear(d_in, h)
        self.layers = nn.ModuleList([nn.Linear(h, h) for _ in range(n_layers - 1)])
        self.dropout = nn.Dropout(DROPOUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.dropout(self.input_layer(x)))
        for layer in self.layers:
            x = F.relu(self.dropout(layer(x)))
        return x


# ----------------------------------------------------------------------------------------------------
# Attention with relative (pairwise) terms, Transformer-XL style (4.2)

class RelativeSelfAttention(nn.Module):
    def __init__(self, h: int, n_heads: int, reference_padding: bool):
        super().__init__()
        assert h % n_heads == 0, f"hidden size {h} not divisible by {n_heads} heads"
        self.h, self.n_heads, self.d = h, n_heads, h // n_heads
        self.reference_padding = reference_padding
        self.bias_u = nn.Parameter(torch.zeros(n_heads, self.d))      # content bias u
        self.bias_v = nn.Parameter(torch.zeros(n_heads, self.d))      # pairwise bias v
        self.in_proj_weight = nn.Parameter(torch.empty(3 * h, h))     # rows: q | k | v
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * h))
        self.out_proj = nn.Linear(h, h)
        self.attn_dropout = nn.Dropout(DROPOUT)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, pair: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        B, N, _ = x.shape
        H, d = self.n_heads, self.d
        # x: (B, N, h), pair: (B, N, N, h), pad_mask: (B, N) True = padding token
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).split(self.h, dim=-1)
        q = q.view(B, N, H, d) / math.sqrt(d)                                      # (B, N, H, d), scaled first
        k = k.view(B, N, H, d)                                                      # (B, N, H, d)
        v = v.view(B, N, H, d)                                                      # (B, N, H, d)
        r = pair.view(B, N, N, H, d)                                                # (B, N, N, H, d)

        # s_ij = (q_i + u) . k_j + (q_i + v) . r_ij, per head
        content = torch.einsum("bihd,bjhd->bhij", q + self.bias_u, k)              # (B, H, N, N)
        relative = torch.einsum("bihd,bijhd->bhij", q + self.bias_v, r)            # (B, H, N, N)
        scores = content + relative                                                 # (B, H, N, N)

        # Two padding policies, both needed:
        # * reference_padding=True: the reference ADDS the boolean key-padding mask to the logits, so a
        #   padded key gets +1.0 instead of -inf and real tokens attend to padding tokens. The released
        #   checkpoints were trained and evaluated that way; reproducing it is the only way to match
        #   their outputs on padded batches (the result then depends on how much padding a batch has).
        # * reference_padding=False: padded keys are masked with -inf (correct masking), so a spectrum's
        #   output is the same alone or in any batch; used for our own models.
        key_pad = pad_mask[:, None, None, :]                                        # (B, 1, 1, N)
        if self.reference_padding:
            scores = scores + key_pad.to(scores.dtype)
        else:
            scores = scores.masked_fill(key_pad, float("-inf"))

        attn = self.attn_dropout(torch.softmax(scores, dim=-1))                     # (B, H, N, N)
        out = torch.einsum("bhij,bjhd->bihd", attn, v).reshape(B, N, self.h)        # (B, N, h)
        return self.out_proj(out)                                                   # (B, N, h)


class PeakAttentionLayer(nn.Module):
    """Post-norm transformer layer: x = LN1(x + attn(x)); x = LN2(x + FFN(x)); FFN = 4h, ReLU."""

    def __init__(self, h: int, n_heads: int, reference_padding: bool):
        super().__init__()
        self.self_attn = RelativeSelfAttention(h, n_heads, reference_padding)
        self.linear1 = nn.Linear(h, 4 * h)
        self.linear2 = nn.Linear(4 * h, h)
        self.norm1 = nn.LayerNorm(h, eps=1e-5)
        self.norm2 = nn.LayerNorm(h, eps=1e-5)
        self.dropout = nn.Dropout(DROPOUT)      # inside the FFN
        self.dropout1 = nn.Dropout(DROPOUT)     # on the attention branch
        self.dropout2 = nn.Dropout(DROPOUT)     # on the FFN branch

    def forward(self, x: torch.Tensor, pair: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        # x: (B, N, h)
        x = self.norm1(x + self.dropout1(self.self_attn(x, pair, pad_mask)))
        x = self.norm2(x + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(x))))))
        return x                                                                    # (B, N, h)


# ----------------------------------------------------------------------------------------------------
# Formula transformer: tokens -> token states and CLS embedding h0 (3.3, 3.4, 4, 4.3)

class FormulaTransformer(nn.Module):
    def __init__(self, config: DiffMSConfig):
        super().__init__()
        h = config.encoder_hidden
        self.n_adducts = len(config.adducts)
        # Unused instrument embedding (instrument embedding is off); kept for the checkpoint layout.
        self.instrument_embedder = nn.Parameter(torch.eye(INSTRUMENT_DIM))          # (6, 6)
        self.form_embedder_mod = PosCosEmbedding()
        self.intermediate_layer = MLPBlocks(token_input_dim(self.n_adducts), h)     # 343 -> h -> h
        self.pairwise_featurizer = MLPBlocks(FORM_DIM, h)                           # 162 -> h -> h
        self.peak_attn_layers = nn.ModuleList(
            [PeakAttentionLayer(h, config.encoder_heads, config.reference_padding)
             for _ in range(config.encoder_layers)])

    def forward(self, tokens: dict) -> dict:
        form = tokens["form_vec"].float()                                           # (B, N, 18)
        types = tokens["types"].long()                                              # (B, N)
        ions = tokens["ion_vec"].long()                                             # (B, N)
        intens = tokens["intens"].float()                                           # (B, N)
        num_peaks = tokens["num_peaks"].long()                                      # (B,)
        B, N, _ = form.shape
        batch = torch.arange(B, device=form.device)
        cls_idx = num_peaks - 1                                                     # (B,) CLS is the last real token
        if (cls_idx < 0).any() or (cls_idx >= N).any():
            raise ValueError(f"num_peaks must lie in 1..{N}, got {num_peaks.tolist()}")
        if (types[batch, cls_idx] != NUM_TYPES - 1).any():
            raise ValueError("the last real token of every spectrum must be the CLS token (type 3)")
        pad_mask = torch.arange(N, device=form.device)[None, :] >= num_peaks[:, None]   # (B, N)

        # Per-token input vector (343 for 8 adduct slots), exact order of 3.3
        cls_form = form[batch, cls_idx]                                             # (B, 18)
        embed = self.form_embedder_mod
        input_vec = torch.cat([
            embed(form),                                                            # (B, N, 162) formula
            embed(cls_form[:, None, :] - form),                                     # (B, N, 162) neutral loss
            F.one_hot(types, NUM_TYPES).float(),                                    # (B, N, 4)
            F.one_hot(ions, self.n_adducts).float(),                                # (B, N, n_adducts)
            intens[..., None],                                                      # (B, N, 1)
            form.new_zeros(B, N, INSTRUMENT_DIM),                                   # (B, N, 6) instrument off
        ], dim=-1)
        peak_emb = self.intermediate_layer(input_vec)                               # (B, N, h)

        # Pairwise features from |form_i - form_j|, all pairs (padding included), shared by all layers
        pair_diff = (form[:, :, None, :] - form[:, None, :, :]).abs()               # (B, N, N, 18)
        pairwise = self.pairwise_featurizer(embed(pair_diff))                       # (B, N, N, h)

        x = peak_emb
        layer_outputs = []
        for layer in self.peak_attn_layers:
            x = layer(x, pairwise, pad_mask)                                        # (B, N, h)
            layer_outputs.append(x)

        # Zero padded states, then CLS pooling
        states = x.masked_fill(pad_mask[..., None], 0.0)                            # (B, N, h)
        h0 = states[batch, cls_idx]                                                 # (B, h)
        return {"h0": h0, "token_states": states, "input_vec": input_vec, "peak_emb": peak_emb,
                "pairwise": pairwise, "layer_outputs": layer_outputs, "pad_mask": pad_mask}


# ----------------------------------------------------------------------------------------------------
# Fingerprint-growing head: p_256 = sig(W h0); p_next = sig(W p_prev) * sig(G h0) up to 4096 (5)

class FPGrowingHead(nn.Module):
    def __init__(self, h: int, fp_sizes: list[int]):
        super().__init__()
        self.initial_predict = nn.Sequential(nn.Linear(h, fp_sizes[0]), nn.Sigmoid())
        self.predict_bricks = nn.ModuleList(
            [nn.Sequential(nn.Linear(a, b), nn.Sigmoid()) for a, b in zip(fp_sizes[:-1], fp_sizes[1:])])
        self.gate_bricks = nn.ModuleList(
            [nn.Sequential(nn.Linear(h, b), nn.Sigmoid()) for b in fp_sizes[1:]])

    def forward(self, h0: torch.Tensor) -> list[torch.Tensor]:
        p = self.initial_predict(h0)                                                # (B, 256)
        preds = [p]
        for predict, gate in zip(self.predict_bricks, self.gate_bricks):
            p = predict(p) * gate(h0)                                               # (B, next size)
            preds.append(p)
        return preds                                                                # sizes 256 .. 4096


# ----------------------------------------------------------------------------------------------------

class SpectraEncoder(nn.Module):
    """Collated tokens -> predicted fingerprint probabilities.

    ``forward(tokens)`` takes the dict of ``tokens.collate`` (moved to the module's device here) and
    returns a dict with ``fp`` (B, fp_sizes[-1]) sigmoid probabilities (4096 official, 2048 default weights),
    ``int_preds`` (the smaller sizes, e.g. [(B, 256), (B, 512), (B, 1024), (B, 2048)]), ``h0`` (B, h), and for inspection ``input_vec`` (B, N, 343), ``peak_emb``
    (B, N, h), ``pairwise`` (B, N, N, h), ``layer_outputs`` [(B, N, h)] (padded rows not zeroed) and
    ``frag_fp`` (B, N, magma_modulo) (fragment head on the zeroed token states; unused by DiffMS).
    """

    def __init__(self, config: DiffMSConfig):
        super().__init__()
        h = config.encoder_hidden
        self.spectra_encoder = nn.ModuleList([
            FormulaTransformer(config),
            nn.Sequential(nn.Linear(h, config.magma_modulo)),
            FPGrowingHead(h, list(config.fp_sizes)),
        ])

    def forward(self, tokens: dict) -> dict:
        device = self.spectra_encoder[1][0].weight.device
        tokens = {k: torch.as_tensor(v).to(device) for k, v in tokens.items()
                  if k in ("form_vec", "types", "ion_vec", "intens", "num_peaks")}
        transformer, frag_head, fp_head = self.spectra_encoder
        out = transformer(tokens)
        frag_fp = frag_head(out["token_states"])                                    # (B, N, magma)
        preds = fp_head(out["h0"])                                                  # sizes 256 .. 4096
        return {"fp": preds[-1], "int_preds": preds[:-1], "h0": out["h0"],
                "input_vec": out["input_vec"], "peak_emb": out["peak_emb"], "pairwise": out["pairwise"],
                "layer_outputs": out["layer_outputs"], "frag_fp": frag_fp}
