"""Optimality-preserving reductions: fuse chain links into segments before the search.

The exact search (:mod:`serenity.schedulers.search`) works on *items*: runs of ops that some
optimal order executes back to back. This module builds them by fusing chains, the way Liu's
hill–valley reduction collapses a chain of a tree (J. W. H. Liu, "An application of generalized
tree pebbling to sparse matrix factorization", SIAM J. Algebraic Discrete Methods 8(3), 1987)
and the way Zhong et al. prove their fusions safe ("Memory-aware scheduling for complex wired
networks with iterative graph optimization", ICCAD 2023).

**Chain link.** An edge ``u -> w`` where ``u``'s only successor is ``w``, ``w``'s only predecessor
is ``u``, every activation ``w`` reads is an output of ``u``, and no output of ``u`` is a graph
output. The tensors between the two are then private to the chain: nobody else reads them.

**Item memory model.** An item ``c_j .. c_k`` run from a state with ``L`` live bytes costs
``max(L + e1, L - fr + e2)`` where ``e1`` is the output bytes of ``c_j``, ``fr`` the input bytes
``c_j`` frees, and ``e2 = max_{l>j} h_l`` with the *hill* ``h_l = a_{l-1} + out(c_l)`` and the
*residue* ``a_l`` = bytes of ``c_l``'s outputs that stay live (read later or graph outputs).
Afterwards ``L - fr + a_k`` bytes are live.

**Rule R1 (pull the next segment up).** Two adjacent segments ``s, t`` of one chain with
``a_t <= a_s`` and ``H_t <= H_s`` (``H`` = the segment's highest hill measured from the base
without the chain) may be fused. Proof: take any order running ops ``u_1..u_m`` between ``s`` and
``t``; move ``t`` up to right after ``s``. No ``u_i`` reads the chain's private tensors, so each
``u_i`` now runs with ``a_t - a_s <= 0`` more bytes live and its step costs no more. ``t`` now runs
on the base right after ``s``, which is at most the base ``s`` ran on (``s`` can only free
inputs), so each step of ``t`` costs at most ``base + H_t <= base + H_s``, a step ``s`` already
paid. Every step after ``t`` is unchanged. So the peak does not rise.

**Rule R2 (push the segment down).** If ``s`` is not the chain's first segment, ``a_s >= a_p``
(``p`` the segment before ``s``) and ``H_s <= H_t``, fuse ``s`` with ``t``. Proof: move ``s`` down
to right before ``t``. The ``u_i`` in between now see ``a_p - a_s <= 0`` more bytes; ``s``'s input
is ``p``'s private output, so delaying it keeps nothing else alive; and ``s`` now runs on the
base ``t`` ran on, costing at most ``base + H_s <= base + H_t``. (The first segment is excluded:
delaying it could keep a shared input alive longer.)

**Rule R3 (sink an op into its only reader).** Let op ``m`` be an item of its own whose outputs
are all read by one op ``s`` only (not graph outputs; ``s`` heads its item and is ``m``'s only
successor), with ``F <= K`` and ``F + O - K <= out(s)`` where ``O`` = ``m``'s output bytes, ``K``
= those that stay live and ``F`` = the bytes of the inputs ``m`` could free. Then ``m`` may run
right before ``s`` (several such ``m`` run in index order before ``s``). Proof: move ``m`` down to
just before ``s``. An op in between sees ``m``'s outputs gone (``-K``) and at most ``F`` bytes
``m`` would have freed still live: ``F - K <= 0`` more. ``s``'s step is unchanged. ``m`` now runs
on ``s``'s live set minus ``K`` plus what it frees, so its step costs at most
``L_s - K + F + O <= L_s + out(s)``, a step ``s`` pays anyway; with several ``m_j`` moved, each
earlier one adds ``F_j - K_j <= 0``. This is the edge-scaling ``Mul`` of RandWire feeding its
aggregating ``Sum``.

**Under the ``inplace`` memory model** (:mod:`serenity.memory`) an op may write its output over
a candidate input that dies at it. An op inside a chain reads only its predecessor's private
outputs, which all die at it, so its saving is unconditional: its hill drops by the output's
size. A chain's first op reads tensors others read too, so its saving depends on the state; the
rules then judge its hill at the saving (``lo``), the smallest it can be, so a fusion never
relies on a step the first segment might not pay; R1 and R2 move only segments whose savings
are unconditional, so their proofs stand. R3 needs two more things. (a) Moving ``m`` later can
take a saving from an op ``u`` in between: ``u`` was the last reader of an input ``c`` of ``m``
and wrote over it. But then ``m`` did not free ``c`` where it ran before, so of the ``F`` bytes
``m`` could free at most ``F - |c|`` are live at ``u`` that were not, and ``u``'s lost saving is
its output's size, which is ``|c|`` (candidates have the output's size): ``u`` sees at most
``-K + F - |c| + |c| = F - K <= 0`` more, as before. (b) ``m``'s own step, just before ``s``,
costs ``L_s - K + fr_m + O - sav_m`` where ``fr_m`` is what it frees there and ``sav_m`` its
saving; at most ``W = max(F - z, F')`` over ``fr_m - sav_m`` (``z`` = its possible saving, ``F'``
= its freeable non-candidate inputs; ``W = F`` for an op that cannot write in place). ``s`` pays
at least ``L_s + out(s) - Z_s`` (``Z_s`` its possible saving), so R3 asks
``W + O - K <= out(s) - Z_s``; under ``tflm`` this is the condition above. (RandWire's edge
``Mul`` writes over its node's output when it reads it last: ``W = 0`` and R3 still applies.)
The conditional saving is encoded exactly (*Step encoding*).

Both rules hold for any state of the rest of the graph, so fusing to a fixpoint keeps at least
one optimal order, and the search over items is exact.

**Step encoding.** The search sees an item as a few *steps* ``(out, delta, frees)``: running a step
costs ``L + out`` and then changes the live bytes by ``delta`` minus the bytes of the tensors in
``frees`` whose readers have all run. A chain segment is one step (one op) or two: the first op
with its inputs, then ``(e2 - a_j, a_k - a_j, ())`` for the rest, which reproduces
``max(L + e1, L - fr + e2)``.

An item whose first op ``h`` may overwrite a candidate input (``inplace``, conditional: ``lo > 0``)
gets one more step in front, ``(0, 0, IE)``, and ``-IE`` among the frees of ``h``'s own step.
``h`` saves its output size ``z`` when *any* candidate dies at it, i.e. when the readers of some
candidate ``c`` (item mask ``m_c``) have all run; frees fire on "all readers in a mask have run",
so "any" is written by inclusion-exclusion: ``IE = {(+-z, m_T)}`` over non-empty sets ``T`` of
candidates, sign ``(-1)^(|T|+1)``, ``m_T`` the union of their masks (equal unions merged, only
the minimal masks kept: a candidate whose readers include another's dies no earlier). The first
step lowers the live bytes by exactly ``z`` when some candidate dies, ``h``'s step peaks at
``L - z + e1``, and ``-IE`` gives the ``z`` back before the real frees. Sizes in ``IE`` may be
negative; the kernels only add and subtract them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from serenity.ir import Dense

#: One step of an item: ``(out, delta, frees)`` with ``frees`` = ``((bytes, reader-item mask), ...)``.
Step = tuple[int, int, tuple[tuple[int, int], ...]]


@dataclass(frozen=True, slots=True)
class Items:
    """The graph as items (fused runs of ops) for the exact search.

    Attributes:
        ops: For each item, its ops in execution order (original indices).
        steps: For each item, its steps (see *Step encoding* in the module docstring).
        preds: Predecessor items of each item, ascending.
        succs: Successor items of each item, ascending.
        initial: Live bytes before the first op (graph inputs).
    """

    ops: tuple[tuple[int, ...], ...]
    steps: tuple[tuple[Step, ...], ...]
    preds: tuple[tuple[int, ...], ...]
    succs: tuple[tuple[int, ...], ...]
    initial: int

    def __len__(self) -> int:
        return len(self.ops)

    def freeable(self, v: int) -> int:
        """Bytes item ``v`` could free at most (all its ``frees``)."""
        return sum(size for _, _, frees in self.steps[v] for size, _ in frees)

    def growth(self, v: int) -> int:
        """Bytes item ``v`` leaves live if it frees nothing (the sum of its deltas)."""
        return sum(delta for _, delta, _ in self.steps[v])

    def magnitude(self) -> int:
        """A bound on every live-byte count and peak of the item model: the initial bytes plus
        every step's ``|out|``, ``|delta|`` and freed sizes. A kernel whose integers hold this
        cannot overflow."""
        total = self.initial
        for row in self.steps:
            for out, delta, frees in row:
                total += abs(out) + abs(delta) + sum(abs(size) for size, _ in frees)
        return total

    def size_gcd(self) -> int:
        """The gcd of every byte count of the model (0 when all are 0): every peak is a multiple."""
        g = self.initial
        for row in self.steps:
            for out, delta, frees in row:
                g = math.gcd(g, out, delta, *(size for size, _ in frees))
        return g

    def scaled(self, k: int) -> Items:
        """The same items with every byte count divided by ``k``, which must divide them all
        (:meth:`size_gcd`). Every peak of the scaled model times ``k`` is the peak of this one:
        the search only adds, subtracts and compares byte counts."""
        if k == 1:
            return self
        steps = tuple(
            tuple(
                (out // k, delta // k, tuple((size // k, m) for size, m in frees))
                for out, delta, frees in row
            )
            for row in self.steps
        )
        return Items(self.ops, steps, self.preds, self.succs, self.initial // k)


#: Most distinct masks the inclusion-exclusion step of one op may hold (see *Step encoding*).
MAX_IE_TERMS = 4096


@dataclass(slots=True)
class _Segment:
    ops: list[int]
    e1: int
    e2: int
    kept: int
    first: bool  # the chain's first segment (R2 may not delay it)
    lo: int = 0  # inplace: what the first op may save, depending on the state (its hill's floor)

    def hill(self, a_prev: int) -> int:
        return max(a_prev + self.e1 - self.lo, self.e2)


def _out_bytes(d: Dense, v: int) -> tuple[int, int]:
    """(all output bytes, output bytes that stay live after ``v``) of op ``v``."""
    out = kept = 0
    for t in d.op_out[v]:
        out += d.sizes[t]
        if d.consumers[t] or d.pinned[t]:
            kept += d.sizes[t]
    return out, kept


def chain_links(d: Dense) -> list[int]:
    """``nxt[u] = w`` when ``u -> w`` is a chain link (see the module docstring), else -1."""
    nxt = [-1] * d.n_ops
    for u in range(d.n_ops):
        if len(d.succs[u]) != 1:
            continue
        w = d.succs[u][0]
        if d.preds[w] != (u,):
            continue
        outs = set(d.op_out[u])
        if any(d.pinned[t] for t in outs) or not set(d.op_in[w]) <= outs:
            continue
        nxt[u] = w
    return nxt


def _fuse(s: _Segment, t: _Segment) -> _Segment:
    return _Segment(s.ops + t.ops, s.e1, max(s.e2, s.kept + t.e1, t.e2), t.kept, s.first, s.lo)


def _saving(d: Dense, v: int) -> int:
    """Bytes op ``v``'s output may save under ``inplace`` (0 under ``tflm``)."""
    return d.sizes[d.reuse[v][0]] if d.reuse and d.reuse[v] else 0


def _segments(d: Dense, chain: list[int], fuse: bool) -> list[_Segment]:
    """Split one maximal chain into segments, fusing by R1 and R2 to a fixpoint (a stack pass)."""
    stack: list[_Segment] = []
    for i, v in enumerate(chain):
        out, kept = _out_bytes(d, v)
        z = _saving(d, v)
        if i == 0:  # reads shared tensors: the saving depends on the state
            stack.append(_Segment([v], out, 0, kept, True, z))
        else:  # reads only its predecessor's private outputs, which die here: saves for sure
            stack.append(_Segment([v], out - z, 0, kept, False))
        while fuse and len(stack) >= 2:
            s, t = stack[-2], stack[-1]
            a_p = stack[-3].kept if len(stack) >= 3 else 0
            h_s, h_t = s.hill(a_p), t.hill(s.kept)
            r1 = t.kept <= s.kept and h_t <= h_s
            r2 = not s.first and s.kept >= a_p and h_s <= h_t
            if not (r1 or r2):
                break
            stack[-2:] = [_fuse(s, t)]
    return stack


def _sinks(d: Dense, segs: list[_Segment]) -> dict[int, list[int]]:
    """Rule R3: for each op ``s`` heading a segment, the single-op segments that sink into it
    (with the ``inplace`` conditions of the module docstring)."""
    heads = {seg.ops[0] for seg in segs}
    into: dict[int, list[int]] = {}
    for seg in segs:
        if len(seg.ops) != 1:
            continue
        m = seg.ops[0]
        if len(d.succs[m]) != 1 or any(d.pinned[t] for t in d.op_out[m]):
            continue
        s = d.succs[m][0]
        if s not in heads or any(c != s for t in d.op_out[m] for c in d.consumers[t]):
            continue
        out, kept = _out_bytes(d, m)
        fr = sum(d.sizes[t] for t in d.op_in[m] if not d.pinned[t])
        z = _saving(d, m)
        worst = fr  # the most m's step can add over what it leaves (W in the docstring)
        if z:
            cand = set(d.reuse[m])
            worst = max(fr - z, sum(d.sizes[t] for t in d.op_in[m] if not d.pinned[t] and t not in cand))
        if fr <= kept and worst + out - kept <= _out_bytes(d, s)[0] - _saving(d, s):
            into.setdefault(s, []).append(m)
    # An op that sinks cannot take others with it: those stay items of their own.
    while True:
        sunk = {m for ms in into.values() for m in ms}
        moving = [s for s in into if s in sunk]
        if not moving:
            return into
        for s in moving:
            del into[s]


def _single(d: Dense, m: int) -> _Segment:
    out, kept = _out_bytes(d, m)
    return _Segment([m], out, 0, kept, True, _saving(d, m))


def _item_mask(item_of: list[int], ops: tuple[int, ...]) -> int:
    mask = 0
    for c in ops:
        mask |= 1 << item_of[c]
    return mask


def inclusion_exclusion(z: int, masks: list[int]) -> tuple[tuple[int, int], ...]:
    """Frees ``((size, mask), ...)`` that together free exactly ``z`` bytes once every reader in
    *some* mask of ``masks`` has run, and nothing before (see *Step encoding*)."""
    minimal: list[int] = []
    for m in sorted(set(masks), key=lambda m: (m.bit_count(), m)):
        if not any(k & m == k for k in minimal):
            minimal.append(m)
    terms: dict[int, int] = {}
    for m in minimal:
        step = dict(terms)
        step[m] = step.get(m, 0) + z
        for u, coef in terms.items():
            step[u | m] = step.get(u | m, 0) - coef
        terms = {u: c for u, c in step.items() if c}
        if len(terms) > MAX_IE_TERMS:
            raise ValueError(
                f"an in-place op has {len(minimal)}+ candidate inputs with distinct readers: "
                f"more than {MAX_IE_TERMS} terms for the exact search"
            )
    return tuple(sorted(((c, u) for u, c in terms.items()), key=lambda cu: cu[1]))


def build_items(d: Dense, *, fuse: bool = True) -> Items:
    """Group the ops of ``d`` into items; with ``fuse=False`` every op is its own item.

    Items are numbered by their first op's original index, so ties keep breaking on op index.
    """
    nxt = chain_links(d) if fuse else [-1] * d.n_ops
    has_prev = [False] * d.n_ops
    for w in nxt:
        if w >= 0:
            has_prev[w] = True
    # 1. Collect maximal chains from their heads and cut them into segments (R1, R2).
    segs: list[_Segment] = []
    for v in range(d.n_ops):
        if has_prev[v]:
            continue
        chain = [v]
        while nxt[chain[-1]] >= 0:
            chain.append(nxt[chain[-1]])
        segs.extend(_segments(d, chain, fuse))
    # 2. Sink single ops into their only reader (R3); a group is [sunk ops..., segment].
    into = _sinks(d, segs) if fuse else {}
    sunk = {m for ms in into.values() for m in ms}
    groups = [
        ([_single(d, m) for m in into.get(seg.ops[0], [])], seg) for seg in segs if seg.ops[0] not in sunk
    ]
    groups.sort(key=lambda gs: min(x.ops[0] for x in (*gs[0], gs[1])))
    item_of = [0] * d.n_ops
    for i, (pre, seg) in enumerate(groups):
        for part in (*pre, seg):
            for v in part.ops:
                item_of[v] = i
    # 3. Item-level dependencies.
    preds: list[set[int]] = [set() for _ in groups]
    for v in range(d.n_ops):
        for p in d.preds[v]:
            if item_of[p] != item_of[v]:
                preds[item_of[v]].add(item_of[p])
    succs: list[list[int]] = [[] for _ in groups]
    for i, ps in enumerate(preds):
        for p in ps:
            succs[p].append(i)
    # 4. Steps; a tensor read by several parts of an item is freed by the last of them.
    steps = []
    for pre, seg in groups:
        parts = [*pre, seg]
        last_reader = {t: k for k, part in enumerate(parts) for t in d.op_in[part.ops[0]]}
        row: list[Step] = []
        for k, part in enumerate(parts):
            frees: list[tuple[int, int]] = []
            h = part.ops[0]
            if part.lo:  # inplace, and the saving depends on the state: see *Step encoding*
                masks = [_item_mask(item_of, d.consumers[t]) for t in d.reuse[h]]
                ie = inclusion_exclusion(part.lo, masks)
                row.append((0, 0, ie))
                frees.extend((-size, mask) for size, mask in ie)
            for t in d.op_in[part.ops[0]]:
                if d.pinned[t] or last_reader[t] != k:
                    continue
                mask = 0
                for c in d.consumers[t]:
                    mask |= 1 << item_of[c]
                frees.append((d.sizes[t], mask))
            first_kept = _out_bytes(d, part.ops[0])[1]
            row.append((part.e1, first_kept, tuple(frees)))
            if len(part.ops) > 1:
                row.append((part.e2 - first_kept, part.kept - first_kept, ()))
        steps.append(tuple(row))
    return Items(
        ops=tuple(tuple(v for part in (*pre, seg) for v in part.ops) for pre, seg in groups),
        steps=tuple(steps),
        preds=tuple(tuple(sorted(p)) for p in preds),
        succs=tuple(tuple(sorted(s)) for s in succs),
        initial=sum(d.sizes[t] for t in d.initial),
    )
