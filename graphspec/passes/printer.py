"""The IR as text, one node a line: what `graphspec compile SPEC --after PASS` prints."""
from __future__ import annotations

from ..graph import Graph, Node
from .analysis import loops, schedule


def _line(n: Node) -> str:
    ty = str(n.ty) if n.ty is not None else "?"
    at = f" @{n.axis}" if n.axis else ""
    args = ", ".join(str(a) for a in n.args)
    attrs = "".join(f" {k}={v}" for k, v in n.attrs.items() if k not in ("group", "members", "masks"))
    init = f"  (init {n.init})" if n.init is not None else ""
    if n.op == "fused":
        return f"{n.name}{at} = fused {args}  {n.attrs['group']}  -> {', '.join(n.attrs['members'])}{init}"
    return f"{n.name}: {ty}{at} = {n.op}{attrs} {args}{init}"


def print_ir(g: Graph, after: str = "") -> str:
    """Leaves first (params, inputs, constants), then the nodes in the order they are emitted,
    each recurrence as a block `loop N over AXIS, forward|backward { ... }`."""
    lines = [f"graph {g.name}" + (f"  (after pass {after})" if after else "")]
    for n in g.nodes.values():
        if n.op == "param":
            shape = "x".join(map(str, n.attrs["shape"])) or "1"
            lines.append(f"  param {n.name}: f[{shape}]{'' if n.attrs.get('learn', True) else ' fixed'}")
        elif n.op == "input":
            lines.append(f"  input {n.name}: {n.ty}{f' @{n.axis}' if n.axis else ''}"
                         + (f"  (init {n.init})" if n.init is not None else ""))
        elif n.op == "const":
            lines.append(f"  const {n.name} = {n.attrs['value']}")
    found, loop_of = loops(g)
    for kind, what in schedule(g, found, loop_of):
        if kind == "loop":
            loop = found[what]
            lines.append(f"  loop {what} over {loop.axis}, {'forward' if loop.direction > 0 else 'backward'} {{")
            lines += [f"    {_line(g.nodes[x])}" for x in loop.nodes]
            lines.append("  }")
        else:
            lines.append(f"  {_line(g.nodes[what])}")
            members = g.nodes[what].attrs.get("members", []) if g.nodes[what].op == "fused" else []
            lines += [f"  {_line(g.nodes[m])}" for m in members]
    lines.append(f"  losses: {', '.join(g.losses)}")
    if g.outputs:
        lines.append(f"  outputs: {', '.join(f'{k} = {v}' for k, v in g.outputs.items())}")
    return "\n".join(lines)
