"""The fully expanded spec: every block instance inlined, every default filled in.

Nodes are shown as single primitive equations over their operands (`h: tanh(a)`), with the
names the compiler gives intermediates (`a#2`) and block instances (`enc.fwd.h`).
"""
from __future__ import annotations

from .graph import Graph
from .spec import train_config

INFIX = {"add": "+", "sub": "-", "mul": "*", "matmul": "@"}


def equation(g: Graph, name: str) -> str:
    n = g.nodes[name]
    args = [str(a) for a in n.args]
    if n.op in INFIX and len(args) == 2:
        return f"{args[0]} {INFIX[n.op]} {args[1]}"
    attrs = [f"{k}={v}" for k, v in n.attrs.items()]
    return f"{n.op}({', '.join(args + attrs)})"


def init_text(name, args):
    """A param's initializer as the spec writes it."""
    if name == "file":
        return {"file": args[0], "rest": init_text(*args[1])}
    return f"{name}({', '.join(f'{x:g}' for x in args)})" if args else name


def render(g: Graph) -> dict:
    out = {"name": g.name, "dims": dict(g.dims)}
    if g.data:
        out["data"] = dict(g.data)
    inputs, params, nodes = {}, {}, {}
    for n in g.nodes.values():
        if n.op == "input":
            a = n.attrs
            entry = {"kind": a.get("kind"), "type": str(n.ty), "axis": n.axis, "from": a.get("field")}
            if a.get("target"):
                entry["target"] = True
            inputs[n.name] = entry
        elif n.op == "param":
            params[n.name] = {"shape": list(n.attrs["shape"]), "init": init_text(*n.attrs["init"]),
                              "learn": bool(n.attrs.get("learn", True))}
        elif n.op == "const":
            continue
        else:
            entry = {"eq": equation(g, n.name), "type": str(n.ty), "axis": n.axis}
            if n.init is not None:
                entry["init"] = str(n.init)
            nodes[n.name] = entry
    out.update({"inputs": inputs, "params": params, "nodes": nodes, "loss": list(g.losses),
                "outputs": {k: str(v) for k, v in g.outputs.items()}, "train": train_config(g)})
    return out
