"""Emission: the IR, laid out, becomes the plan's ordered equation list."""
from __future__ import annotations

from typing import Optional

from ..graph import Graph, Node, Operand
from ..ops import REGISTRY
from ..plan import Eqn, View
from .analysis import loops, requires_grad, schedule


def run(g: Graph, ctx) -> dict:
    """Contract: ctx.plan holds every equation, in an order where each reads only what earlier
    ones wrote (or the inputs): every node outside a loop is hoisted to one equation over all
    steps (attention ops, whose rows pair key steps with batch rows, one per step); a loop is
    unrolled into per-step equations, forward or backward in time, after its initial states;
    the weight gradient of a matmul inside a loop is one extra backward-only GEMM over all
    steps; concat becomes one `place` per part; member nodes are written by their fused node.
    The IR is unchanged."""
    e = _Emitter(g, ctx)
    e.run()
    return e.stats


class _Emitter:
    def __init__(self, g: Graph, ctx):
        self.g, self.ctx, self.T = g, ctx, ctx.lengths
        self.lay = ctx.layout
        self.plan = self.lay.plan
        self.index = {n: i for i, n in enumerate(g.nodes)}
        self.stats = {}

    def run(self):
        g, plan = self.g, self.plan
        self.loops, self.loop_of = loops(g)
        self.rg = requires_grad(g)
        # inputs read at t-k (the teacher-forced target y[t-1]) need their initial slots: <bos>
        for n in g.nodes.values():
            if n.op == "input" and n.init is not None:
                self._inits(n)
        for s in schedule(g, self.loops, self.loop_of):
            if s[0] == "loop":
                self._loop(self.loops[s[1]])
            else:
                n = g.nodes[s[1]]
                self._inits(n)
                if n.axis is not None and REGISTRY.get(n.op) is not None and REGISTRY[n.op].stepwise:
                    for t in range(self.T[n.axis]):
                        self._eqn(n, t)
                else:
                    self._eqn(n, None)
        naive = sum(self.T[n.axis] if n.axis is not None else 1 for n in g.nodes.values()
                    if not n.is_leaf and n.op != "member")
        self.stats["unrolled nodes"] = naive + sum(n.is_leaf for n in g.nodes.values())
        self.stats["plan ops before hoisting"] = naive
        self.stats["plan ops"] = len(plan.eqns)
        self.stats["hoisted nodes"] = sum(1 for n in g.nodes.values() if not n.is_leaf and n.op != "member"
                                          and n.axis is not None and n.name not in self.loop_of)
        self._mark_sparse()
        plan.losses = [self._view(x) for x in g.losses if x in self.lay.buf]
        plan.outputs = {k: (op.node, op.mode) for k, op in g.outputs.items()}
        plan.fsize, plan.isize = self.lay.foff, self.lay.ioff
        self.stats["params"] = plan.param_count()
        plan.stats = self.ctx.stats
        self.ctx.plan = plan

    def _mark_sparse(self):
        """A learnable param whose every reader takes it at a `rows` operand (a lookup table)
        has a row-sparse gradient: the runtime may zero and update only the rows a batch picks."""
        reads = {}
        for e in self.plan.eqns:
            rows = REGISTRY[e.op].rows if e.op in REGISTRY else ()
            for k, v in enumerate(e.ins):
                reads.setdefault(v.buf, []).append(k in rows)
        for b in self.plan.params():
            b.sparse = b.learn and bool(reads.get(b.name)) and all(reads[b.name])
        self.stats["sparse params"] = sum(b.sparse for b in self.plan.params())

    # ------------------------------------------------------------ views
    def _view(self, name: str, s0: Optional[int] = None, ns: int = 1, label: str = "") -> View:
        """A view of node `name`: for axis values, slots s0 .. s0+ns-1 counted from t=0."""
        b = self.lay.buf[name]
        if len(b.shape) == 2:
            return View(b.dtype, b.offset, b.shape[0], b.shape[1], name)
        _, rows, cols = b.shape
        first = b.pre + s0
        assert 0 <= first and first + ns <= b.shape[0], (name, s0, ns, b.shape)
        return View(b.dtype, b.offset + first * rows * cols, ns * rows, cols, name, label)

    def _operand(self, a: Operand, t: Optional[int], T: int) -> View:
        """The view read by an equation at step t (None: hoisted over all T steps)."""
        src = self.g.nodes[a.node]
        if src.axis is None or a.mode not in ("step", "first", "all", "lastslot"):
            return self._view(a.node)
        Ts = self.T[src.axis]
        if a.mode == "all":
            return self._view(a.node, 0, Ts, "t=*")
        if a.mode == "first":
            return self._view(a.node, 0, 1, "t=0")
        if a.mode == "lastslot":
            return self._view(a.node, Ts - 1, 1, f"t={Ts - 1}")
        if t is None:
            return self._view(a.node, -a.delay, T, "t=*" if not a.delay else f"t=*{-a.delay:+d}")
        return self._view(a.node, t - a.delay, 1, f"t={t - a.delay}")

    def _out(self, n: Node, t: Optional[int]) -> View:
        if n.axis is None or (n.op in REGISTRY and REGISTRY[n.op].loss):
            return self._view(n.name)
        if t is None:
            return self._view(n.name, 0, self.T[n.axis], "t=*")
        return self._view(n.name, t, 1, f"t={t}")

    # ------------------------------------------------------------ equations
    def _inits(self, n: Node):
        """Fill the slots before t=0 (after t=T-1 for backward loops) with the initial value."""
        if n.axis is None:
            return
        pre, post = self.lay.pre[n.name], self.lay.post[n.name]
        if not (pre or post) or n.init is None:
            return                      # zeros: the value region is zeroed before each forward
        b = self.lay.buf[n.name]
        _, rows, cols = b.shape
        init = self.g.nodes[n.init.node]
        for start, count in ((0, pre), (b.shape[0] - post, post)):
            if not count:
                continue
            if init.op == "const" and init.ty.dtype == "i":
                self.plan.fills.append((b.offset + start * rows * cols, count * rows * cols, int(init.attrs["value"])))
                continue
            out = View(b.dtype, b.offset + start * rows * cols, count * rows, cols, n.name, "init")
            src = self._operand(n.init, None, 1)
            self.plan.eqns.append(Eqn("copy", out, [src], {}, (self.rg[n.init.node],)))

    def _loop(self, loop):
        g = self.g
        T = self.T[loop.axis]
        for x in loop.nodes:
            self._inits(g.nodes[x])
        deferred, bias = set(), set()
        for x in loop.nodes:
            n = g.nodes[x]
            sig = REGISTRY.get(n.op)
            if sig is None or not sig.gemm:
                continue
            w, v = n.args[sig.gemm[0]], n.args[sig.gemm[1]]
            if self.rg[w.node] and v.mode == "step" and g.nodes[v.node].axis == n.axis:
                # one GEMM over all steps for dW, run after the loop's backward
                out = self._view(x, 0, T, "t=*")
                ins = [self._operand(w, None, T), self._operand(v, None, T)]
                self.plan.eqns.append(Eqn("matmul", out, ins, {}, (True, False), nofwd=True))
                deferred.add(x)
            a = n.args[sig.onto] if sig.onto >= 0 else None
            if a is not None and self.rg[a.node] and g.nodes[a.node].axis is None and self._operand(a, None, T).rows == 1:
                # a bias added every step (the GRU's b_R): its gradient, the sum of dy over all
                # steps and rows, in one pass after the loop's backward, like dW; the steps then
                # read it only, so their rows stay independent (Plan.row_segments)
                out = self._view(x, 0, T, "t=*")
                self.plan.eqns.append(Eqn("add", out, [out, self._operand(a, None, T)], {}, (False, True), nofwd=True,
                                          node=x))
                bias.add(x)
        steps = range(T) if loop.direction > 0 else range(T - 1, -1, -1)
        for t in steps:
            for x in loop.nodes:
                if g.nodes[x].op != "member":
                    self._eqn(g.nodes[x], t, skip_w=x in deferred, skip_a=x in bias)

    def _eqn(self, n: Node, t: Optional[int], skip_w: bool = False, skip_a: bool = False):
        T = self.T[n.axis] if n.axis is not None else 1
        ins = [self._operand(a, t, T) for a in n.args]
        need = [self.rg[a.node] and v.dtype == "f" for a, v in zip(n.args, ins)]
        if n.op == "fused":
            members = n.attrs["members"]
            outs = [self._out(self.g.nodes[m], t) for m in members]
            masks = n.attrs["masks"]
            need = [nd and k not in masks for k, nd in enumerate(need)]
            self.plan.eqns.append(Eqn("fused", outs[0], ins, {}, tuple(need), node=members[-1], outs=outs,
                                      group=n.attrs["group"]))
            return
        out = self._out(n, t)
        sig = REGISTRY[n.op]
        if sig.variadic:
            col = 0
            for v, nd in zip(ins, need):
                self.plan.eqns.append(Eqn(sig.variadic, out, [v], {"col": col, "width": v.cols}, (nd,), node=n.name))
                col += v.cols
            return
        op, attrs = n.op, dict(n.attrs)
        if sig.eval_as and not self.ctx.training:
            op, attrs = sig.eval_as, {}
            sig = REGISTRY[op]
        if skip_w:
            need[0] = False
        if skip_a:
            need[sig.onto] = False
        if sig.onto >= 0 and self.lay.alias.get(n.name) == n.args[sig.onto].node:
            need[sig.onto] = False      # computed in a's buffer: a's gradient is y's, the same memory
        need = [nd and k in sig.differentiable for k, nd in enumerate(need)]
        if "norm" in sig.attrs:
            attrs["norm"] = float(self.ctx.batch)
        if "batch" in sig.attrs:
            attrs["batch"] = self.ctx.batch
        attrs = {k: attrs[k] for k in sig.attrs}
        scratch = None
        if sig.scratch:
            cols = out.cols if sig.scratch_cols == "out" else int(attrs[sig.scratch_cols])
            scratch = self.lay.scratch(f"{n.name}.scratch[{'*' if t is None else t}]", sig.scratch, ins[0].rows, cols)
        self.plan.eqns.append(Eqn(op, out, ins, attrs, tuple(need), scratch=scratch, node=n.name))
