"""DiffMS graph decoder: the DiGress graph transformer (Vignac et al., ICLR 2023), as the DiffMS code has it.

Three streams travel through the network: node states X (B, n, dx), edge states E (B, n, n, de) and a
global state y (B, dy) that carries the spectrum's fingerprint embedding and the extra features of
``graph_features``. Every layer is a node-edge attention block with FiLM conditioning from y, followed
by post-norm feed-forward blocks per stream. The outputs are logits per atom class, bond class and y
channel (only the bond logits are used).

State-dict keys equal the released checkpoints' ``decoder.*`` keys without the ``decoder.`` prefix.

This is the readable reference (training and conformance run it). Sampling runs the engine in
``fast_decoder.py``: the same edge logits, bit for bit, with less work.

Padding quirk (not in the written spec, measured on the conformance fixture): the layers do not re-mask
their outputs, so after the first layer padded node/edge slots hold non-zero LayerNorm outputs, and the
reference's mean pooling to y sums *all* slots while dividing by the number of real ones. Outputs of a
padded batch therefore depend on the padding from the second layer on. ``reference_padding=True``
(``DiffMSConfig.reference_padding``, the official checkpoints) reproduces this; False masks before
summing, making every graph's output independent of the batch.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .config import DiffMSConfig

POOL_BIG = 1e5  # added/subtracted on masked entries before min/max pooling (reference constant)


# ----------------------------------------------------------------------------- masks
def edge_mask(node_mask: torch.Tensor) -> torch.Tensor:
    """(B, n) -> (B, n, n, 1) float mask m_i * m_j."""
    m = node_mask.float()
    return (m.unsqueeze(2) * m.unsqueeze(1)).unsqueeze(-1)


def mask_graph(X: torch.Tensor, E: torch.Tensor, node_mask: torch.Tensor):
    """Zero padded nodes of X (B, n, d) and padded pairs of E (B, n, n, d)."""
    return X * node_mask.unsqueeze(-1).float(), E * edge_mask(node_mask)


# ----------------------------------------------------------------------------- pooling to y
class Xtoy(nn.Module):
    """[mean, min, max, var] over real nodes, per channel, then Linear(4 dx -> dy).

    ``reference_padding``: the mean's sum includes padded slots (reference quirk, see module doc).
    """

    def __init__(self, dx: int, dy: int, reference_padding: bool = True):
        super().__init__()
        self.lin = nn.Linear(4 * dx, dy)
        self.reference_padding = reference_padding

    def forward(self, X: torch.Tensor, node_mask: torch.Tensor) -> torch.Tensor:
        mask = node_mask.unsqueeze(-1).float().expand_as(X)              # (B, n, dx)
        count = mask.sum(dim=1).clamp(min=1)                             # (B, dx); empty graphs: no NaN
        total = X.sum(dim=1) if self.reference_padding else (X * mask).sum(dim=1)
        mean = total / count                                             # (B, dx)
        mini = (X + POOL_BIG * (1 - mask)).min(dim=1).values
        maxi = (X - POOL_BIG * (1 - mask)).max(dim=1).values
        var = (((X - mean.unsqueeze(1)) ** 2) * mask).sum(dim=1) / count
        return self.lin(torch.cat([mean, mini, maxi, var], dim=-1))      # (B, dy)


class Etoy(nn.Module):
    """[mean, min, max, var] over all real (i, j) pairs incl. the diagonal, then Linear(4 de -> dy).

    ``reference_padding``: the mean's sum includes padded pairs (reference quirk, see module doc).
    """

    def __init__(self, de: int, dy: int, reference_padding: bool = True):
        super().__init__()
        self.lin = nn.Linear(4 * de, dy)
        self.reference_padding = reference_padding

    def forward(self, E: torch.Tensor, node_mask: torch.Tensor) -> torch.Tensor:
        mask = edge_mask(node_mask).expand_as(E)                         # (B, n, n, de)
        count = mask.sum(dim=(1, 2)).clamp(min=1)                        # (B, de); empty graphs: no NaN
        total = E.sum(dim=(1, 2)) if self.reference_padding else (E * mask).sum(dim=(1, 2))
        mean = total / count                                             # (B, de)
        mini = (E + POOL_BIG * (1 - mask)).amin(dim=(1, 2))
        maxi = (E - POOL_BIG * (1 - mask)).amax(dim=(1, 2))
        var = (((E - mean[:, None, None, :]) ** 2) * mask).sum(dim=(1, 2)) / count
        return self.lin(torch.cat([mean, mini, maxi, var], dim=-1))      # (B, dy)


# ----------------------------------------------------------------------------- attention block
def masked_softmax(scores: torch.Tensor, key_mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax over ``dim`` with masked keys at -inf.

    If nothing in the batch is real the scores are returned unchanged (reference behaviour); rows of
    an empty graph inside a batch get all-zero weights instead of NaN.
    """
    if key_mask.sum() == 0:
        return scores
    attn = torch.softmax(scores.masked_fill(~key_mask, float("-inf")), dim=dim)
    return attn.masked_fill(~key_mask.any(dim=dim, keepdim=True), 0.0)


class NodeEdgeBlock(nn.Module):
    """Element-wise multi-head attention over nodes, with edge and global FiLM."""

    def __init__(self, dx: int, de: int, dy: int, n_head: int, reference_padding: bool = True):
        super().__init__()
        assert dx % n_head == 0, f"dx={dx} must be divisible by n_head={n_head}"
        self.n_head, self.df = n_head, dx // n_head
        self.q = nn.Linear(dx, dx)
        self.k = nn.Linear(dx, dx)
        self.v = nn.Linear(dx, dx)
        # edge -> attention scores FiLM
        self.e_add = nn.Linear(de, dx)
        self.e_mul = nn.Linear(de, dx)
        # y -> edge / node FiLM
        self.y_e_mul = nn.Linear(dy, dx)
        self.y_e_add = nn.Linear(dy, dx)
        self.y_x_mul = nn.Linear(dy, dx)
        self.y_x_add = nn.Linear(dy, dx)
        # global update
        self.y_y = nn.Linear(dy, dy)
        self.x_y = Xtoy(dx, dy, reference_padding)
        self.e_y = Etoy(de, dy, reference_padding)
        # outputs
        self.x_out = nn.Linear(dx, dx)
        self.e_out = nn.Linear(dx, de)
        self.y_out = nn.Sequential(nn.Linear(dy, dy), nn.ReLU(), nn.Linear(dy, dy))

    def forward(self, X, E, y, node_mask):
        B, n, _ = X.shape
        H, df = self.n_head, self.df
        x_mask = node_mask.unsqueeze(-1).float()                         # (B, n, 1)
        e_mask = edge_mask(node_mask)                                    # (B, n, n, 1)

        Q = (self.q(X) * x_mask).reshape(B, n, H, df)                    # (B, n, H, df)
        K = (self.k(X) * x_mask).reshape(B, n, H, df)
        # element-wise scores, query i on axis 1, key j on axis 2
        Y = Q.unsqueeze(2) * K.unsqueeze(1) / math.sqrt(df)              # (B, n, n, H, df)

        E1 = (self.e_mul(E) * e_mask).reshape(B, n, n, H, df)
        E2 = (self.e_add(E) * e_mask).reshape(B, n, n, H, df)
        Y = Y * (E1 + 1) + E2                                            # (B, n, n, H, df)

        # new edges: scores conditioned on y
        newE = Y.flatten(start_dim=3)                                    # (B, n, n, dx)
        ye_add = self.y_e_add(y)[:, None, None, :]                       # (B, 1, 1, dx)
        ye_mul = self.y_e_mul(y)[:, None, None, :]
        newE = ye_add + (ye_mul + 1) * newE
        newE = self.e_out(newE) * e_mask                                 # (B, n, n, de)

        # attention: softmax over keys j, separately for every channel
        key_mask = node_mask[:, None, :, None, None].expand(B, n, n, 1, 1)  # (B, n, n, 1, 1)
        attn = masked_softmax(Y, key_mask, dim=2)                        # (B, n, n, H, df)
        V = (self.v(X) * x_mask).reshape(B, 1, n, H, df)                 # (B, 1, n, H, df)
        weighted = (attn * V).sum(dim=2).flatten(start_dim=2)            # (B, n, dx)

        # new nodes: FiLM from y
        yx_add = self.y_x_add(y).unsqueeze(1)                            # (B, 1, dx)
        yx_mul = self.y_x_mul(y).unsqueeze(1)
        newX = yx_add + (yx_mul + 1) * weighted
        newX = self.x_out(newX) * x_mask                                 # (B, n, dx)

        # new global state from the layer's input X and E
        new_y = self.y_y(y) + self.x_y(X, node_mask) + self.e_y(E, node_mask)
        new_y = self.y_out(new_y)                                        # (B, dy)
        return newX, newE, new_y


# ----------------------------------------------------------------------------- layer
class XEyTransformerLayer(nn.Module):
    """Attention block + post-norm feed-forward per stream (no re-masking, like the reference)."""

    def __init__(self, dx, de, dy, n_head, dim_ffX, dim_ffE, dim_ffy, dropout=0.1, eps=1e-5,
                 reference_padding=True):
        super().__init__()
        self.self_attn = NodeEdgeBlock(dx, de, dy, n_head, reference_padding)

        self.linX1 = nn.Linear(dx, dim_ffX)
        self.linX2 = nn.Linear(dim_ffX, dx)
        self.normX1 = nn.LayerNorm(dx, eps=eps)
        self.normX2 = nn.LayerNorm(dx, eps=eps)
        self.dropoutX1, self.dropoutX2, self.dropoutX3 = (nn.Dropout(dropout) for _ in range(3))

        self.linE1 = nn.Linear(de, dim_ffE)
        self.linE2 = nn.Linear(dim_ffE, de)
        self.normE1 = nn.LayerNorm(de, eps=eps)
        self.normE2 = nn.LayerNorm(de, eps=eps)
        self.dropoutE1, self.dropoutE2, self.dropoutE3 = (nn.Dropout(dropout) for _ in range(3))

        self.lin_y1 = nn.Linear(dy, dim_ffy)
        self.lin_y2 = nn.Linear(dim_ffy, dy)
        self.norm_y1 = nn.LayerNorm(dy, eps=eps)
        self.norm_y2 = nn.LayerNorm(dy, eps=eps)
        self.dropout_y1, self.dropout_y2, self.dropout_y3 = (nn.Dropout(dropout) for _ in range(3))

        self.activation = nn.ReLU()

    def forward(self, X, E, y, node_mask):
        newX, newE, new_y = self.self_attn(X, E, y, node_mask)

        X = self.normX1(X + self.dropoutX1(newX))
        E = self.normE1(E + self.dropoutE1(newE))
        y = self.norm_y1(y + self.dropout_y1(new_y))

        ffX = self.linX2(self.dropoutX2(self.activation(self.linX1(X))))
        X = self.normX2(X + self.dropoutX3(ffX))
        ffE = self.linE2(self.dropoutE2(self.activation(self.linE1(E))))
        E = self.normE2(E + self.dropoutE3(ffE))
        ffy = self.lin_y2(self.dropout_y2(self.activation(self.lin_y1(y))))
        y = self.norm_y2(y + self.dropout_y3(ffy))
        return X, E, y


# ----------------------------------------------------------------------------- full network
def _mlp(d_in: int, d_hidden: int, d_out: int, final_relu: bool) -> nn.Sequential:
    layers = [nn.Linear(d_in, d_hidden), nn.ReLU(), nn.Linear(d_hidden, d_out)]
    return nn.Sequential(*layers, nn.ReLU()) if final_relu else nn.Sequential(*layers)


class GraphTransformer(nn.Module):
    """The DiffMS decoder network.

    Parameters
    ----------
    config : DiffMSConfig (decoder widths, ``input_dims`` / ``output_dims``, ``reference_padding``
        for the pooling quirk described in the module docstring).
    dropout : dropout rate of every dropout in the layers (default ``config.decoder_dropout``; 0.1 in DiffMS).
    """

    def __init__(self, config: DiffMSConfig, dropout: float | None = None):
        super().__init__()
        c = config
        dropout = c.decoder_dropout if dropout is None else dropout
        ind, outd = c.input_dims, c.output_dims
        self.out_dims = outd

        self.mlp_in_X = _mlp(ind["X"], c.hidden_mlp_X, c.dx, final_relu=True)
        self.mlp_in_E = _mlp(ind["E"], c.hidden_mlp_E, c.de, final_relu=True)
        self.mlp_in_y = _mlp(ind["y"], c.hidden_mlp_y, c.dy, final_relu=True)

        self.tf_layers = nn.ModuleList(
            XEyTransformerLayer(c.dx, c.de, c.dy, c.decoder_heads, c.dim_ffX, c.dim_ffE, c.dim_ffy,
                                dropout=dropout, reference_padding=c.reference_padding)
            for _ in range(c.decoder_layers))

        self.mlp_out_X = _mlp(c.dx, c.hidden_mlp_X, outd["X"], final_relu=False)
        self.mlp_out_E = _mlp(c.de, c.hidden_mlp_E, outd["E"], final_relu=False)
        self.mlp_out_y = _mlp(c.dy, c.hidden_mlp_y, outd["y"], final_relu=False)

    def forward(self, X: torch.Tensor, E: torch.Tensor, y: torch.Tensor, node_mask: torch.Tensor,
                return_intermediates: bool = False):
        """Logits for nodes, edges and y.

        Parameters
        ----------
        X : (B, n, A + 8) node input; E : (B, n, n, 5) edge input; y : (B, cond + 13) global input.
        node_mask : (B, n) bool.
        return_intermediates : if True, also return a dict with the input-MLP outputs (before
            symmetrisation and masking: ``mlp_in_X/E/y``) and every layer's output
            (``tf_layer{i}_X/E/y``).

        Returns
        -------
        X_out (B, n, A), E_out (B, n, n, 5) symmetric with zero diagonal, y_out (B, cond)
        [, intermediates dict]
        """
        node_mask = node_mask.bool()
        B, n = X.shape[:2]
        inter = {}

        # residual copies of the first channels (the one-hot graph and the conditioning vector)
        X_res = X[..., :self.out_dims["X"]]                              # (B, n, A)
        E_res = E[..., :self.out_dims["E"]]                              # (B, n, n, 5)
        y_res = y[..., :self.out_dims["y"]]                              # (B, cond)

        X = self.mlp_in_X(X)                                             # (B, n, dx)
        E = self.mlp_in_E(E)                                             # (B, n, n, de)
        y = self.mlp_in_y(y)                                             # (B, dy)
        if return_intermediates:
            inter.update(mlp_in_X=X, mlp_in_E=E, mlp_in_y=y)
        E = (E + E.transpose(1, 2)) / 2
        X, E = mask_graph(X, E, node_mask)

        for i, layer in enumerate(self.tf_layers):
            X, E, y = layer(X, E, y, node_mask)
            if return_intermediates:
                inter.update({f"tf_layer{i}_X": X, f"tf_layer{i}_E": E, f"tf_layer{i}_y": y})

        X = self.mlp_out_X(X) + X_res                                    # (B, n, A)
        off_diag = 1.0 - torch.eye(n, dtype=E.dtype, device=E.device)[None, :, :, None]
        E = (self.mlp_out_E(E) + E_res) * off_diag                       # (B, n, n, 5)
        y = self.mlp_out_y(y) + y_res                                    # (B, cond)

        E = (E + E.transpose(1, 2)) / 2
        X, E = mask_graph(X, E, node_mask)
        if return_intermediates:
            return X, E, y, inter
        return X, E, y
