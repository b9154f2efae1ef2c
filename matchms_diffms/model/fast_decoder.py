"""The decoder's fast inference path: ``edge_logits``, bit-identical to ``GraphTransformer`` (decoder.py).

The sampler only needs the edge logits of a one-hot noisy graph. ``edge_logits`` computes
exactly (bit for bit, see tests/test_fast_sampling.py) what ``forward(...)[1]`` computes, with less work:

* the edge input is given as class indices, and the input edge MLP, whose input has only K + 1 distinct
  rows (K one-hots and the all-zero row of the prior's diagonal and of padding), is evaluated once per
  class and gathered; its symmetrisation is then an exact no-op (the noisy graph is symmetric);
* with no padding (all graphs of one spectrum have the same atoms) every mask multiplication is skipped
  (x * 1 == x exactly) and the masked softmax is a plain softmax;
* the (B, n, n, dx) work of a layer runs over a few graphs at a time with in-place operations on reused
  buffers, so the large intermediates stay in cache and are never allocated per step;
* the last layer's node/global updates and the output MLPs for X and y do not influence the edge logits
  and are skipped.

Every elementwise operation is the reference's operation in the reference's order on the same float32
values (in-place or on a slice), so rounding is unchanged. Matrix products are evaluated on row blocks
(>= 8 rows) of the reference's inputs; MKL gives identical rows for those (checked by the tests).

``decoder.py`` is the readable reference; this module is the engine the sampler runs
(``diffusion.reverse_sample``'s fast path). tests/test_fast_sampling.py is its contract: every piece is
compared with the reference with ``torch.equal``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .decoder import GraphTransformer, XEyTransformerLayer, edge_mask, masked_softmax

EDGE_CHUNK_FLOATS = 1 << 18   # target size of one (graphs, n, n, dx) block per thread: 1 MiB of float32


def edge_classes(E: torch.Tensor) -> torch.Tensor:
    """One-hot (or all-zero) edges (B, n, n, K) -> class indices (B, n, n) long; all-zero rows -> K."""
    K = E.shape[-1]
    return torch.where(E.sum(dim=-1) == 0, K, E.argmax(dim=-1))


def _gemm_rows(lin: nn.Linear, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``lin(x)`` for contiguous x (..., d_in), optionally into a preallocated contiguous ``out``."""
    if out is None:
        return lin(x)
    torch.addmm(lin.bias, x.reshape(-1, x.shape[-1]), lin.weight.t(), out=out.view(-1, out.shape[-1]))
    return out


def _layer_norm(ln: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps)


def _pool_stats_all_real(Z: torch.Tensor, dims: tuple, count: float) -> torch.Tensor:
    """[mean, min, max, var] of ``Xtoy``/``Etoy`` for a batch without padding (mask all ones), same rounding.

    With an all-ones mask the reference's ``Z * mask`` and ``Z - BIG * 0`` are exact no-ops and
    ``min(Z + 0)`` equals ``min(Z) + 0`` (both turn a -0 minimum into +0).
    """
    shape = (Z.shape[0], Z.shape[-1])
    cnt = torch.full(shape, count, dtype=Z.dtype, device=Z.device)
    mean = Z.sum(dim=dims) / cnt
    mini = Z.amin(dim=dims) + 0.0
    maxi = Z.amax(dim=dims)
    centred = Z - mean.reshape(shape[0], *([1] * len(dims)), shape[1])
    var = (centred ** 2).sum(dim=dims) / cnt
    return torch.cat([mean, mini, maxi, var], dim=-1)


def _layer_fast(layer: XEyTransformerLayer, X: torch.Tensor, E: torch.Tensor, y: torch.Tensor,
                node_mask: torch.Tensor, all_real: bool, any_real: bool, chunk: int,
                E_out: torch.Tensor, head: nn.Module | None = None):
    """One ``XEyTransformerLayer`` in inference mode with the (B, n, n, .) work in blocks of graphs.

    Writes the layer's new edge state into ``E_out`` (B, n, n, de) and returns the new (X, y). With
    ``head`` (the last layer: ``mlp_out_E``) the node and global updates are skipped, ``head`` is applied to
    the new edge state block by block, ``E_out`` is (B, n, n, K) and (None, None) is returned.
    """
    att = layer.self_attn
    B, n, dx = X.shape
    H, df = att.n_head, att.df
    last = head is not None
    x_mask = None if all_real else node_mask.unsqueeze(-1).float()                    # (B, n, 1)
    e_mask = None if all_real else edge_mask(node_mask)                               # (B, n, n, 1)

    def masked(t, m):
        return t if m is None else t * m

    Q = masked(att.q(X), x_mask)                                                      # (B, n, dx)
    K = masked(att.k(X), x_mask)
    ye_add = att.y_e_add(y)[:, None, None, :]                                        # (B, 1, 1, dx)
    ye_mul1 = att.y_e_mul(y)[:, None, None, :] + 1
    # e_mul and e_add read the same input: one product with stacked weights (columns are unchanged)
    W_e = torch.cat([att.e_mul.weight, att.e_add.weight])                            # (2 dx, de)
    b_e = torch.cat([att.e_mul.bias, att.e_add.bias])
    if not last:
        V = masked(att.v(X), x_mask).reshape(B, 1, n, dx)                            # (B, 1, n, dx)
        weighted = torch.empty(B, n, dx, dtype=X.dtype, device=X.device)
        pooled_e = torch.empty(B, 4 * E.shape[-1], dtype=X.dtype, device=X.device)
    scale = math.sqrt(df)

    c_max = min(B, chunk)
    Ybuf = torch.empty(c_max, n, n, dx, dtype=X.dtype, device=X.device)
    Tbuf = torch.empty_like(Ybuf)
    E12buf = torch.empty(c_max, n, n, 2 * dx, dtype=X.dtype, device=X.device)
    for b0 in range(0, B, chunk):
        sl = slice(b0, min(B, b0 + chunk))
        c = sl.stop - sl.start
        Y, T, E12 = Ybuf[:c], Tbuf[:c], E12buf[:c]
        Ec = E[sl]                                                                    # (c, n, n, de)
        em = None if e_mask is None else e_mask[sl]
        if not last and all_real:
            pooled_e[sl] = _pool_stats_all_real(Ec, (1, 2), float(n * n))
        # scores: Y = (Q_i * K_j / sqrt(df)) * (E1 + 1) + E2
        torch.addmm(b_e, Ec.reshape(-1, Ec.shape[-1]), W_e.t(), out=E12.view(-1, 2 * dx))
        E1, E2 = E12[..., :dx], E12[..., dx:]
        if em is not None:
            E1.mul_(em)
            E2.mul_(em)
        torch.mul(Q[sl].unsqueeze(2), K[sl].unsqueeze(1), out=Y)                     # (c, n, n, dx)
        Y.div_(scale)
        Y.mul_(E1.add_(1)).add_(E2)
        # new edges: e_out(ye_add + (ye_mul + 1) * Y)
        torch.mul(Y, ye_mul1[sl], out=T).add_(ye_add[sl])
        newE = att.e_out(T)                                                          # (c, n, n, de)
        if em is not None:
            newE.mul_(em)
        if not last:
            # attention over keys j, per channel, then the weighted sum of values
            Y5 = Y.view(c, n, n, H, df)
            if all_real:
                attn = torch.softmax(Y5, dim=2)
            elif any_real:
                attn = masked_softmax(Y5, node_mask[sl][:, None, :, None, None].expand(c, n, n, 1, 1), dim=2)
            else:                                                     # nothing real: scores unchanged
                attn = Y5.clone()
            attn = attn.view(c, n, n, dx).mul_(V[sl])
            torch.sum(attn, dim=2, out=weighted[sl])
        # edge stream of the layer: post-norm residual and feed-forward
        E_mid = _layer_norm(layer.normE1, newE.add_(Ec))                              # E + newE
        ff = layer.linE2(layer.activation(layer.linE1(E_mid)))
        E_new = _layer_norm(layer.normE2, E_mid.add_(ff))
        E_out[sl] = E_new if head is None else head(E_new)
    if last:
        return None, None

    yx_add = att.y_x_add(y).unsqueeze(1)                                              # (B, 1, dx)
    yx_mul = att.y_x_mul(y).unsqueeze(1)
    newX = masked(att.x_out(yx_add + (yx_mul + 1) * weighted), x_mask)               # (B, n, dx)
    if all_real:
        pooled_x = att.x_y.lin(_pool_stats_all_real(X, (1,), float(n)))
        pooled_e = att.e_y.lin(pooled_e)
    else:
        pooled_x, pooled_e = att.x_y(X, node_mask), att.e_y(E, node_mask)
    new_y = att.y_out(att.y_y(y) + pooled_x + pooled_e)                               # (B, dy)

    X = layer.normX1(X + newX)
    X = layer.normX2(X + layer.linX2(layer.activation(layer.linX1(X))))
    y = layer.norm_y1(y + new_y)
    y = layer.norm_y2(y + layer.lin_y2(layer.activation(layer.lin_y1(y))))
    return X, y


@torch.no_grad()
def edge_logits(model: GraphTransformer, X: torch.Tensor, E_cls: torch.Tensor, y: torch.Tensor,
                node_mask: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """Edge logits of a one-hot noisy graph, bit-identical to ``model(X, one_hot(E), y, node_mask)[1]``.

    Inference only (no autograd, eval mode: dropout is not applied).

    Parameters
    ----------
    model : the decoder, in eval mode.
    X : (B, n, A + 8) node input; y : (B, cond + 13) global input; node_mask : (B, n) bool.
    E_cls : (B, n, n) long edge classes 0..K-1 of the symmetric noisy graph, K for an all-zero
        input row (the prior's diagonal, padding); see ``edge_classes``.
    chunk : graphs per block of the (B, n, n, dx) work (default: about 1 MiB per thread and block).

    Returns
    -------
    (B, n, n, K) logits, symmetric, zero diagonal, zero on padded pairs.

    Raises
    ------
    RuntimeError
        The model is in training mode.
    """
    if model.training:
        raise RuntimeError("edge_logits is an inference path; call model.eval() first")
    node_mask = node_mask.bool()
    B, n = X.shape[:2]
    K = model.out_dims["E"]
    all_real = bool(node_mask.all())
    any_real = bool(node_mask.any())
    x_mask = None if all_real else node_mask.unsqueeze(-1).float()
    e_mask = None if all_real else edge_mask(node_mask)

    # input MLPs; the edge MLP once per class (row K = the all-zero input), padded to 8 rows
    table_in = torch.zeros(max(K + 1, 8), K, dtype=X.dtype, device=X.device)
    table_in[:K] = torch.eye(K, dtype=X.dtype, device=X.device)
    table = model.mlp_in_E(table_in)[:K + 1]                                          # (K+1, de)
    E = torch.nn.functional.embedding(E_cls, table)                                   # (B, n, n, de)
    if e_mask is not None:
        E = E * e_mask
    Xh = model.mlp_in_X(X)
    if x_mask is not None:
        Xh = Xh * x_mask
    yh = model.mlp_in_y(y)

    dx = Xh.shape[-1]
    if chunk is None:   # blocks that fit the caches; with more threads, fewer and larger blocks (fewer barriers)
        chunk = max(1, EDGE_CHUNK_FLOATS * torch.get_num_threads() // max(1, n * n * dx))
    E_next = torch.empty_like(E)
    layers = list(model.tf_layers)
    for layer in layers[:-1]:
        Xh, yh = _layer_fast(layer, Xh, E, yh, node_mask, all_real, any_real, chunk, E_next)
        E, E_next = E_next, E
    logits = torch.empty(B, n, n, K, dtype=E.dtype, device=E.device)
    _layer_fast(layers[-1], Xh, E, yh, node_mask, all_real, any_real, chunk, logits, head=model.mlp_out_E)

    # output: (mlp_out_E(E) + one-hot residual) * off-diagonal, symmetrised, masked
    residual = torch.nn.functional.one_hot(E_cls, K + 1)[..., :K].to(logits.dtype)
    off_diag = 1.0 - torch.eye(n, dtype=logits.dtype, device=logits.device)[None, :, :, None]
    logits = (logits + residual) * off_diag
    logits = (logits + logits.transpose(1, 2)) / 2
    if e_mask is not None:
        logits = logits * e_mask
    return logits
