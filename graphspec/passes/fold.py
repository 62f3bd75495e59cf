"""Folding an affine map into the lookup table it reads."""
from __future__ import annotations

from ..graph import Graph, Node, Operand
from ..ops import REGISTRY, MatTy
from .analysis import batched, kept, loops, order

CHEAPER = 2     # fold only when the table has at most 1/CHEAPER as many rows as the lookups of a pass


def run(g: Graph, ctx) -> dict:
    """affine(W, embed(E, x), b) -> embed_affine(T, x, b) with T = affine_table(W, E, b) = E W^T + b
    (an id outside E reads b, as W 0 + b), where
    b is one row (a bias) and E has at most half as many rows as the pass looks up (B x T rows
    when hoisted over an axis of length T). W E[x] + b is row x of T: the GEMM runs over E's V
    rows once a pass instead of over every lookup, and backward scatters dy into dT and runs two
    GEMMs of V rows. A character model (V ~ 64-100) with B x T in the thousands multiplies a
    few percent of the rows it did. The embed node stays where something else reads it.
    Contract: every folded node computes the value its affine computed (W E[x] + b, up to
    float rounding); T is static (no axis) and reads only W, E and b."""
    if not ctx.fuse:
        return {"folded lookups": 0}
    _, loop_of = loops(g)
    rows = batched(g)
    users = g.consumers()
    outs = kept(g)
    count = 0
    for n in list(g.nodes.values()):
        if n.op != "affine":
            continue
        w, x, b = n.args
        e, bias = g.nodes[x.node], g.nodes[b.node]
        # a lookup's value spans no axis, so neither does the affine's nor (affine's rule) its addend's
        if (e.op != "embed" or x.mode != "step" or x.delay != 0 or e.axis != n.axis
                or loop_of.get(e.name) != loop_of.get(n.name)
                or b.mode != "step" or rows[bias.name] or isinstance(bias.ty, MatTy)):
            continue
        table = g.nodes[e.args[0].node]
        V = table.ty.seq_rows
        looked_up = ctx.batch * (ctx.lengths.get(n.axis, 1) if n.axis else 1)
        if not isinstance(V, int) or CHEAPER * V > looked_up:
            continue
        name = f"{table.name}#{w.node}#{bias.name}"      # one table per (E, W, b): shared by its lookups
        if name not in g.nodes:
            t = g.add(Node(name, "affine_table", [Operand(w.node), Operand(table.name), Operand(bias.name)],
                           loc=n.loc))
            t.ty = REGISTRY["affine_table"].shape([g.nodes[w.node].ty, table.ty, bias.ty], {})
        n.op, n.args = "embed_affine", [Operand(name), e.args[1], Operand(bias.name)]
        if users[e.name] == [n.name] and e.name not in outs and e.init is None:
            del g.nodes[e.name]
        count += 1
    order(g)
    return {"folded lookups": count}
