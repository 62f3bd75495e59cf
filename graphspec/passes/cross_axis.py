"""last(x): the value at each sequence's own last real step, read from another axis or a
static node (a decoder's initial state, a sequence classifier's input)."""
from __future__ import annotations

from ..graph import Graph, Node, Operand
from ..ops import Ty


def run(g: Graph, ctx) -> dict:
    """Contract: afterwards no operand, initial value or output reads in mode 'last'. On an axis
    with a padding mask, last(x) reads a new `lastof(all(x), all(mask))` node `x.last`; on one
    without, the last slot itself (mode 'lastslot')."""
    made = {}

    def fix(op: Operand) -> Operand:
        if op.mode != "last":
            return op
        if op.node not in made:
            src = g.nodes[op.node]
            mask = g.masks.get(src.axis)
            if mask is None:
                made[op.node] = Operand(op.node, 0, "lastslot")
            else:
                name = f"{op.node}.last"
                g.nodes[name] = Node(name, "lastof", [Operand(op.node, 0, "all"), Operand(mask, 0, "all")],
                                     loc=src.loc, ty=Ty(src.ty.feat))
                made[op.node] = Operand(name)
        return made[op.node]

    for n in list(g.nodes.values()):
        n.args = [fix(a) for a in n.args]
        if n.init is not None:
            n.init = fix(n.init)
    g.outputs = {k: fix(v) for k, v in g.outputs.items()}
    from .analysis import order
    order(g)
    return {"cross-axis reads": len(made)}
