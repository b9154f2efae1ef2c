"""Formula-exact molecules from bond-class probabilities: constrained decoding (no torch).

DiffMS fixes the heavy atoms but neither valences nor hydrogens, so a sampled bond matrix is often not a
valid molecule, or one with the wrong hydrogen count. :func:`decode_formula_exact` chooses the bonds that are
most probable under the denoiser's clean-graph probabilities ``p(e_ij = k)`` (classes 0 none, 1 single,
2 double, 3 triple, 4 aromatic) subject to hard constraints:

* the formula's heavy atoms, neutral, each with an allowed valence (:data:`matchms_diffms.chem.formula.VALENCES`);
* one fragment;
* the exact hydrogen count of the formula: with valences ``v`` the bond orders between heavy atoms must add
  up to ``B = (sum(v) - H) / 2``; each atom keeps ``v_i - (its bond orders)`` hydrogens (none on an S or P
  atom above its lowest valence);
* no cumulated double bonds (an atom other than S or P with two multiple bonds) unless the probabilities ask
  for them: both bonds must have ``p(double) + p(triple) > 0.5`` under the model's probabilities (a sampled
  bond alone does not ask).

Scores are log-probabilities of bond *orders*: aromatic probability mass counts half for single and half for
double (a Kekulé structure of an aromatic ring is what is built; RDKit perceives the aromaticity again).
The search is greedy with repair, deterministic and bounded:

1. valences: every choice of the S / P valences (at most :data:`MAX_VALENCE_CHOICES`) that connects all atoms;
2. skeleton: a maximum spanning tree by ``log p(bond) - log p(no bond)`` under the valence caps (Kruskal;
   a join that would leave a component without free valence is postponed);
3. bond orders: the best single raise (no bond -> single, single -> double, double -> triple) by gain in
   log-probability, until the bond-order total is reached. A carbon atom among aromatic bonds gets a small
   bonus for its first double bond (in a Kekulé structure every aromatic carbon has one; a pyrrole-type N or
   an O / S does not), so hydrogens land where the aromatic ring has them. When the best raise is a poor move
   (negative gain), or misses the aromatic-carbon bonus, an alternating path (raise, lower, raise, ...) that
   moves double bonds along a ring is taken instead when it gains more: the augmenting path of Kekulé
   assignment;
4. the best-scoring valence choice whose molecule sanitizes in RDKit, has one fragment and exactly the
   formula is returned.

``random_formula_molecule`` is the same decoding of random probabilities: the random formula-exact baseline.
"""
from __future__ import annotations

import itertools
import random

import numpy as np
from rdkit import Chem, rdBase

from .formula import VALENCES, Formula

HYPERVALENT = ("S", "P", "Se", "As")      # may carry two multiple bonds (sulfonyl, phosphate)
MAX_VALENCE_CHOICES = 8
PROB_FLOOR = 1e-6
KEKULE_BONUS = 0.5                         # nats, per aromatic carbon receiving its first double bond
MAX_PATH_EXPANSIONS = 4000                 # per alternating-path search
SAMPLE_WEIGHT = 0.5                        # weight of the sampled graph when mixed with the probabilities
_BOND_TYPES = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
_CUMULENE = Chem.MolFromSmarts("[*]=[!#15;!#16;!#33;!#34]=[*]")


def element_valences(symbol: str) -> tuple[int, ...]:
    """Neutral valences allowed for ``symbol``, lowest first."""
    if symbol in VALENCES:
        return VALENCES[symbol]
    allowed = tuple(v for v in Chem.GetPeriodicTable().GetValenceList(symbol) if v > 0)
    if not allowed:
        raise ValueError(f"element {symbol} has no neutral valence usable for a molecule")
    return allowed


def valence_choices(atoms: list[str], n_h: int, limit: int = MAX_VALENCE_CHOICES) -> list[list[int]]:
    """Valence assignments whose bond-order total ``(sum(v) - H) / 2`` is an integer >= n - 1.

    Atoms of one element get the same valence combinations in order (the atoms are interchangeable before the
    bonds are known, so only the number of atoms raised matters); lowest totals first, at most ``limit``.
    """
    n = len(atoms)
    base = [element_valences(a)[0] for a in atoms]
    multi = sorted({a for a in atoms if len(element_valences(a)) > 1})
    per_element = []
    for el in multi:
        idx = [i for i, a in enumerate(atoms) if a == el]
        options = element_valences(el)
        # non-decreasing valence tuples over the atoms of this element (a multiset of choices)
        per_element.append([(idx, combo) for combo in itertools.combinations_with_replacement(options, len(idx))])
    out = []
    for choice in itertools.product(*per_element) if per_element else [()]:
        valences = list(base)
        for idx, combo in choice:
            for i, v in zip(idx, combo):
                valences[i] = v
        need = sum(valences) - n_h
        if need < 0 or need % 2 or need // 2 < n - 1:
            continue
        out.append(valences)
    out.sort(key=sum)
    return out[:limit]


def has_cumulene(mol: Chem.Mol) -> bool:
    """True if an atom other than S, P, As, Se carries two double bonds (``*=X=*``)."""
    return mol.HasSubstructMatch(_CUMULENE)


# --------------------------------------------------------------------------------------------- scores
def order_log_probs(probs: np.ndarray | None, adj: np.ndarray | None = None,
                    sample_weight: float = SAMPLE_WEIGHT) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log-probabilities of bond orders 0..3 per atom pair from class probabilities (and a sample).

    Parameters
    ----------
    probs
        (n, n, 5) probabilities of the classes none, single, double, triple, aromatic (rows need not be exactly
        normalized; the matrix is symmetrized). ``None``: the sample alone.
    adj
        Optional (n, n) sampled bond classes; mixed in as a one-hot with weight ``sample_weight``.

    Returns
    -------
    scores : (n, n, 4) log p(order), floored at ``log(PROB_FLOOR)``
    aromatic : (n, n) bool, pairs whose aromatic probability exceeds 0.5
    asks_multiple : (n, n) bool, pairs with p(double) + p(triple) > 0.5 (non-aromatic multiple bonds) under
        ``probs`` alone when given (a sampled bond does not count as asked for), else under the sample
    """
    if probs is None and adj is None:
        raise ValueError("give bond probabilities, a sampled graph, or both")
    parts = []
    if probs is not None:
        p = np.asarray(probs, dtype=np.float64)
        if p.ndim != 3 or p.shape[0] != p.shape[1] or p.shape[2] != 5:
            raise ValueError(f"probabilities must have shape (n, n, 5), got {p.shape}")
        p = np.clip(p, 0.0, None)
        p = (p + p.transpose(1, 0, 2)) / 2
        p = p / np.maximum(p.sum(axis=-1, keepdims=True), 1e-12)
        parts.append(p)
    if adj is not None:
        a = np.asarray(adj)
        n = a.shape[0]
        a = np.where((a >= 0) & (a <= 4), a, 0)
        a = np.triu(a, 1)
        a = a + a.T
        onehot = np.eye(5)[a.astype(np.int64)]
        if probs is None:
            parts.append(onehot)
        else:
            if parts[0].shape[0] != n:
                raise ValueError(f"{n}-atom sample for {parts[0].shape[0]}-atom probabilities")
            parts.append((1 - sample_weight) * parts[0] + sample_weight * onehot)
    asks = (parts[0][..., 2] + parts[0][..., 3]) > 0.5                 # before the sample is mixed in
    p = parts[-1]
    q = np.stack([p[..., 0], p[..., 1] + p[..., 4] / 2, p[..., 2] + p[..., 4] / 2, p[..., 3]], axis=-1)
    scores = np.log(np.maximum(q, PROB_FLOOR))
    return scores, p[..., 4] > 0.5, asks


# --------------------------------------------------------------------------------------------- search
class _State:
    """Bond orders under construction for one valence choice."""

    def __init__(self, atoms, valences, scores, aromatic, asks):
        n = len(atoms)
        self.n, self.atoms = n, atoms
        self.valences = np.asarray(valences, dtype=np.int64)
        self.scores, self.asks = scores, asks
        self.order = np.zeros((n, n), dtype=np.int64)
        self.free = self.valences.copy()
        self.hyper = np.array([a in HYPERVALENT for a in atoms])
        self.kekule_atom = np.array([a == "C" for a in atoms]) & (aromatic.sum(axis=1) >= 2)
        self.upper = np.triu(np.ones((n, n), dtype=bool), 1)

    def multiple_count(self) -> np.ndarray:
        return (self.order >= 2).sum(axis=1)

    def all_multiple_ask(self) -> np.ndarray:
        """Per atom: every multiple bond it has is asked for by the probabilities."""
        multi = self.order >= 2
        return ~np.any(multi & ~self.asks, axis=1)

    def set(self, i, j, order):
        delta = order - self.order[i, j]
        self.order[i, j] = self.order[j, i] = order
        self.free[i] -= delta
        self.free[j] -= delta

    def raise_gains(self) -> np.ndarray:
        """(n, n) gain of raising each pair by one order (-inf where not allowed), upper triangle."""
        o = self.order
        idx = np.minimum(o, 2)
        here = np.take_along_axis(self.scores, idx[..., None], axis=-1)[..., 0]
        up = np.take_along_axis(self.scores, (idx + 1)[..., None], axis=-1)[..., 0]
        gain = up - here
        ok = self.upper & (o < 3) & (self.free[:, None] > 0) & (self.free[None, :] > 0)
        new_multiple = o == 1
        mc = self.multiple_count()
        allask = self.all_multiple_ask()
        side_ok = self.hyper | (mc == 0)                                  # (n,)
        ok_i = side_ok[:, None] | (self.asks & allask[:, None])
        ok_j = side_ok[None, :] | (self.asks & allask[None, :])
        ok &= ~new_multiple | (ok_i & ok_j)
        bonus = np.where(self.kekule_atom & (mc == 0), KEKULE_BONUS, 0.0)
        gain = gain + new_multiple * (bonus[:, None] + bonus[None, :])
        return np.where(ok, gain, -np.inf)

    def total_score(self) -> float:
        iu = np.triu_indices(self.n, 1)
        return float(self.scores[iu[0], iu[1], self.order[iu]].sum())


def _skeleton(state: _State, weight: np.ndarray) -> bool:
    """Spanning tree by decreasing ``weight`` under the valence caps (Kruskal); False if stuck."""
    n = state.n
    if n == 1:
        return True
    parent = list(range(n))
    comp_free = {i: int(state.free[i]) for i in range(n)}
    size = {i: 1 for i in range(n)}

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    iu, ju = np.triu_indices(n, 1)
    order = np.lexsort((ju, iu, -weight[iu, ju]))                    # stable: ties by index
    joined = 0
    postponed = []
    for k in order:
        i, j = int(iu[k]), int(ju[k])
        ri, rj = root(i), root(j)
        if ri == rj or state.free[i] <= 0 or state.free[j] <= 0:
            continue
        after = comp_free[ri] + comp_free[rj] - 2
        if after <= 0 and size[ri] + size[rj] < n:
            postponed.append((i, j))
            continue
        state.set(i, j, 1)
        parent[ri] = rj
        comp_free[rj], size[rj] = after, size[ri] + size[rj]
        joined += 1
        if joined == n - 1:
            return True
    for i, j in postponed:                                            # last joins (nearly saturated parts)
        ri, rj = root(i), root(j)
        if ri != rj and state.free[i] > 0 and state.free[j] > 0:
            state.set(i, j, 1)
            parent[ri] = rj
            size[rj] = size[ri] + size[rj]
            joined += 1
    return joined == n - 1


def _alternating_path(state: _State, min_gain: float):
    """Best raise/lower/.../raise path between two atoms with free valence (single <-> double flips only).

    Interior atoms keep their valence and their number of double bonds; the two ends gain one bond order.
    Returns ``(gain, [(i, j, new_order), ...])`` or ``None`` when no path beats ``min_gain``.
    """
    s, o, n = state.scores, state.order, state.n
    flip_up = s[..., 2] - s[..., 1]
    flip_down = -flip_up
    mc = state.multiple_count()
    allask = state.all_multiple_ask()
    bonus = np.where(state.kekule_atom & (mc == 0), KEKULE_BONUS, 0.0)
    starts = [int(i) for i in np.nonzero(state.free > 0)[0]]
    singles = [np.nonzero((o[i] == 1) & (flip_up[i] > np.log(PROB_FLOOR) / 2))[0] for i in range(n)]
    doubles = [np.nonzero(o[i] == 2)[0] for i in range(n)]
    best = [min_gain, None]
    budget = [MAX_PATH_EXPANSIONS]

    def end_ok(w, v):
        """Atom ``w`` may take a new double bond to ``v``."""
        if state.hyper[w] or mc[w] == 0:
            return True
        return bool(state.asks[w, v] and allask[w])

    def dfs(atom, gain, path, visited):
        if budget[0] <= 0:
            return
        budget[0] -= 1
        for v in singles[atom]:                                       # raise atom-v
            v = int(v)
            if v in visited:
                continue
            g = gain + flip_up[atom, v]
            step = path + [(atom, v, 2)]
            if state.free[v] > 0 and end_ok(v, atom):
                total = g + bonus[v]
                if total > best[0]:
                    best[0], best[1] = total, step
            for x in doubles[v]:                                      # lower v-x, continue from x
                x = int(x)
                if x in visited or x == atom:
                    continue
                dfs(x, g + flip_down[v, x], step + [(v, x, 1)], visited | {v, x})

    for u in starts:
        for v in singles[u]:
            v = int(v)
            if not end_ok(u, v):
                continue
            g = bonus[u] + flip_up[u, v]
            step = [(u, v, 2)]
            if state.free[v] > 0 and end_ok(v, u):
                total = g + bonus[v]
                if total > best[0]:
                    best[0], best[1] = total, step
            for x in doubles[v]:
                x = int(x)
                if x != u:
                    dfs(x, g + flip_down[v, x], step + [(v, x, 1)], {u, v, x})
    return None if best[1] is None or len(best[1]) < 3 else (best[0], best[1])


def _fill_orders(state: _State, n_bonds: int) -> bool:
    """Raise bond orders until they add up to ``n_bonds``; False if no allowed move is left."""
    remaining = n_bonds - int(state.order[np.triu_indices(state.n, 1)].sum())
    if remaining < 0:
        return False
    for _ in range(4 * remaining + 8):                                # each round adds one order; bounded
        if remaining == 0:
            return True
        gains = state.raise_gains()
        k = int(np.argmax(gains))
        best = gains.flat[k]
        if best < 0 or (state.kekule_atom.any() and best < 2 * KEKULE_BONUS):
            path = _alternating_path(state, best if np.isfinite(best) else -np.inf)
            if path is not None:
                for i, j, new in path[1]:
                    state.set(i, j, new)
                remaining -= 1
                continue
        if not np.isfinite(best):
            return False
        i, j = divmod(k, state.n)
        state.set(i, j, state.order[i, j] + 1)
        remaining -= 1
    return remaining == 0


def build_mol(atoms: list[str], valences, order: np.ndarray) -> Chem.Mol | None:
    """Sanitized molecule with each atom's leftover valence as hydrogens; ``None`` if RDKit refuses it."""
    mol = Chem.RWMol()
    n = len(atoms)
    used = order.sum(axis=1) if n else []
    for symbol, v, u in zip(atoms, valences, used):
        atom = Chem.Atom(symbol)
        atom.SetNoImplicit(True)
        atom.SetNumExplicitHs(int(v - u))
        mol.AddAtom(atom)
    for i, j in zip(*np.nonzero(np.triu(order, 1))):
        mol.AddBond(int(i), int(j), _BOND_TYPES[int(order[i, j])])
    with rdBase.BlockLogs():
        try:
            Chem.SanitizeMol(mol)
            mol = Chem.MolFromSmiles(Chem.MolToSmiles(mol))   # a plain implicit-hydrogen molecule
        except (Chem.rdchem.MolSanitizeException, ValueError, RuntimeError):
            return None
    return mol


def _finish(atoms, valences, order, formula: Formula) -> Chem.Mol | None:
    mol = build_mol(atoms, valences, order)
    if mol is None or len(Chem.GetMolFrags(mol)) != 1:
        return None
    from .molecules import matches_formula

    return mol if matches_formula(mol, formula) else None


def decode_formula_exact(atoms: list[str], formula: Formula, probs: np.ndarray | None = None,
                         adj: np.ndarray | None = None, sample_weight: float = SAMPLE_WEIGHT) -> Chem.Mol | None:
    """The most probable formula-exact molecule (greedy with repair) under bond-class probabilities.

    Parameters
    ----------
    atoms
        Element symbol of every node (the formula's heavy atoms, in the order of ``probs``).
    formula
        The neutral formula (hydrogens included) the molecule must have.
    probs
        (n, n, 5) clean-graph probabilities of the bond classes (none, single, double, triple, aromatic),
        e.g. the denoiser's at the last reverse step.
    adj
        Optional (n, n) sampled bond classes, mixed in with weight ``sample_weight`` (alone if ``probs`` is
        None).

    Returns
    -------
    rdkit.Chem.Mol or None
        A sanitized single-fragment neutral molecule with exactly ``formula``; ``None`` when no valence choice
        led to one. Deterministic; the work is bounded by a few passes over the n x n pairs per bond order.
    """
    n = len(atoms)
    n_h = formula.counts.get("H", 0)
    if n == 0:
        return None
    scores, aromatic, asks = order_log_probs(probs, adj, sample_weight)
    if scores.shape[0] != n:
        raise ValueError(f"{n} atoms for {scores.shape[0]}-atom probabilities")
    weight = scores[..., 1:].max(axis=-1) - scores[..., 0]          # log p(best bond order) - log p(none)
    best, best_score = None, -np.inf
    for valences in valence_choices(atoms, n_h):
        n_bonds = (sum(valences) - n_h) // 2
        state = _State(atoms, valences, scores, aromatic, asks)
        if not _skeleton(state, weight) or not _fill_orders(state, n_bonds):
            continue
        raised = state.valences > np.array([element_valences(a)[0] for a in atoms])
        if np.any(raised & (state.free > 0)):                        # no hydrogens on hypervalent S / P
            continue
        score = state.total_score()
        if score <= best_score:
            continue
        mol = _finish(atoms, valences, state.order, formula)
        if mol is not None:
            best, best_score = mol, score
    return best


def random_formula_molecule(formula: Formula, rng: random.Random) -> Chem.Mol | None:
    """One random formula-exact molecule: :func:`decode_formula_exact` of random bond probabilities.

    The probabilities of every pair are drawn from a flat Dirichlet, so skeleton, ring bonds and bond orders
    are random, while the constraints (valences, one fragment, hydrogens, no cumulated double bonds) hold.
    ``None`` if the formula has no heavy atom or the attempt failed.
    """
    atoms = formula.heavy_atoms()
    if not atoms:
        return None
    n = len(atoms)
    gen = np.random.default_rng(rng.getrandbits(63))
    probs = gen.dirichlet(np.ones(5), size=(n, n))
    probs[..., 4] = 0.0                                              # no aromatic class: no Kekulé bonus
    return decode_formula_exact(atoms, formula, probs)


__all__ = ["element_valences", "valence_choices", "has_cumulene", "order_log_probs",
           "decode_formula_exact", "random_formula_molecule", "build_mol"]
