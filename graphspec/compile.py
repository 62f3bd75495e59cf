"""Compiler passes: typed step graph -> flat plan.

Passes, in order (each counted in plan.stats so `graphspec compile` can show what it did):
  1. dead-node elimination: keep what reaches a loss or an output;
  2. cross-axis reads: last(x) becomes a `lastof` node (the value at each sequence's real end);
  3. padding carry: a recurrence that runs backward over a padded axis keeps its initial state
     through the padding (h = select(mask, h_new, h[t+1]));
  4. recurrences: strongly connected components of the step graph (delay edges included) become
     per-step loops; every other node is *hoisted*: one op over all T*B rows (one big GEMM instead
     of T small ones), before or after the loops as its dependencies need;
  5. affine fusion: a matmul read only by an add becomes y = W x + a, one GEMM accumulating
     into y (no temporary, no add: two plan entries fewer per step of a recurrence);
  6. deferred weight gradients: a matmul inside a loop gets its weight gradient from one extra
     equation over all steps (backward only), instead of T small GEMMs;
  7. lowering: buffers at fixed offsets, time-major [slots, rows, cols] with extra slots before
     t=0 (after t=T-1) so that a delayed read is a plain view; equations over views.
"""
from __future__ import annotations

import copy
import math
import os
from typing import Optional

import networkx as nx

from .errors import Loc, SpecError
from .graph import Graph, Node, Operand
from .ops import REGISTRY, MatTy, Ty
from .plan import NOFWD, Buffer, Eqn, Plan, View  # noqa: F401

LOSS_OPS = ("cross_entropy", "mse", "hsoftmax", "negsample")
# ops whose rows pair key steps with batch rows: always emitted one step at a time
STEPWISE = ("tdot", "tadd", "tsoftmax", "tsum")
MAX_BYTES = 8 << 30        # params + activations + gradients; beyond this a spec is a mistake
DEFAULT_TABLES = {"tree": lambda V: (V, 1 + 2 * 40), "unigram": lambda V: (100_000, 1)}


STDLIB_LSTM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "blocks", "lstm.yaml")
STDLIB_GRU_AFTER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "blocks", "gru_after.yaml")


def compile_graph(g: Graph, lengths: Optional[dict] = None, batch: int = 1, training: bool = True,
                  tables: Optional[dict] = None, dtype_bytes: int = 4, fuse: bool = True) -> Plan:
    """Compile a typed step graph (graphspec.load) for concrete lengths and batch size.
    fuse=False keeps every block as written (the reference the fused kernels are tested against)."""
    from .limits import check_plan_size
    check_plan_size(g, lengths or {}, batch, dtype_bytes)        # before any pass: refuse absurd sizes cheaply
    c = _Compiler(g, lengths or {}, batch, training, tables or {}, dtype_bytes)
    c.fuse = fuse
    return c.run()


class _Compiler:
    def __init__(self, g, lengths, batch, training, tables, dtype_bytes):
        self.g0 = g
        self.g = copy.deepcopy(g)
        self.B = int(batch)
        default = (g.train.get("len") or {}) if isinstance(g.train.get("len"), dict) else {}
        self.T = {a: int(lengths.get(a, default.get(a, 10))) for a in g.axes}
        self.training = training
        self.tables = tables
        self.dtype_bytes = dtype_bytes
        self.stats = {"step nodes": sum(not n.is_leaf for n in g.nodes.values())}

    # ------------------------------------------------------------ passes
    def run(self) -> Plan:
        self._lastof()
        self.stats["fused lstm cells"] = self.stats["fused gru cells"] = self.stats["fused affine"] = 0
        if self.fuse:
            self._fuse_lstm()
        self._dce()
        self._order_index()
        self._loops()
        self._reassociate()
        self._loops()
        self._carry()
        self._loops()                   # the carry selects joined their loops
        self._batched_memo = self._batched()
        if self.fuse:
            self._fuse_affine()
        self._slots()
        self._check_memory()
        self._allocate()
        self._emit()
        self.plan.stats = self.stats
        return self.plan

    def _fuse_lstm(self):
        """Instances of the standard lstm block: its 13 elementwise nodes per step (4 gate takes,
        3 sigmoid, 2 tanh, 3 mul, 1 add) become one lstm_cell kernel and two takes. The benchmark
        showed the per-step entries, not the arithmetic, dominating small models."""
        g = self.g
        count = 0
        for prefix, path in g.instances.items():
            try:
                if not os.path.samefile(path, STDLIB_LSTM):
                    continue
            except OSError:
                continue
            z, s, h = (g.nodes.get(prefix + x) for x in ("z", "s", "h"))
            if z is None or s is None or h is None or s.op != "add" or h.op != "mul" or s.axis is None:
                continue
            reads = [a for n in g.nodes.values() if n.name.startswith(prefix + "s#") for a in n.args
                     if a.node == s.name and a.mode == "step" and a.delay]
            if len(reads) != 1:
                continue
            H = s.ty.feat
            cell = Node(prefix + "cell", "lstm_cell", [Operand(z.name), reads[0]], loc=s.loc, axis=s.axis,
                        ty=Ty(2 * H))
            g.nodes[cell.name] = cell
            s.op, s.args, s.attrs = "take", [Operand(cell.name)], {"col": 0, "width": H}
            h.op, h.args, h.attrs = "take", [Operand(cell.name)], {"col": H, "width": H}
            count += 1
        self.stats["fused lstm cells"] = count
        self._fuse_gru()

    def _fuse_gru(self):
        """Instances of the standard gru_after block (torch's variant): its ~12 elementwise
        nodes and 6 takes per step become one gru_cell kernel."""
        g = self.g
        count = 0
        for prefix, path in g.instances.items():
            try:
                if not os.path.samefile(path, STDLIB_GRU_AFTER):
                    continue
            except OSError:
                continue
            a, c, h = (g.nodes.get(prefix + x) for x in ("a", "c", "h"))
            if a is None or c is None or h is None or h.op != "add" or h.axis is None:
                continue
            reads = [x for n in g.nodes.values() if n.name.startswith(prefix + "h#") for x in n.args
                     if x.node == h.name and x.mode == "step" and x.delay]
            if len(reads) != 1:
                continue
            h.op, h.args, h.attrs = "gru_cell", [Operand(a.name), Operand(c.name), reads[0]], {}
            count += 1
        self.stats["fused gru cells"] = count

    def _fuse_affine(self):
        """add(a, matmul(W, x)) -> affine(W, x, a) where the matmul has no other reader and both
        make the same rows in the same loop (or both hoisted): fusing a hoisted U x into a
        per-step add would undo the hoisting. a must have y's columns (its rows may repeat)."""
        g = self.g
        users = g.consumers()
        kept = {op.node for op in g.outputs.values()} | set(g.losses)
        count = 0
        for n in list(g.nodes.values()):
            if n.op != "add" or n.ty is None or n.ty.dtype != "f":
                continue
            for k in (1, 0):
                q, p = n.args[k], n.args[1 - k]
                m, other = g.nodes[q.node], g.nodes[p.node]
                if (m.op == "matmul" and q.mode == "step" and q.delay == 0 and len(users[m.name]) == 1
                        and m.name not in kept and m.init is None
                        and self.loop_of.get(m.name) == self.loop_of.get(n.name)
                        and m.axis == n.axis and m.ty == n.ty
                        and self._batched_memo[m.name] == self._batched_memo[n.name]
                        and other.ty is not None and not isinstance(other.ty, MatTy)
                        and other.ty.feat == n.ty.feat and other.ty.seq == n.ty.seq):
                    n.op, n.args = "affine", [m.args[0], m.args[1], p]
                    del g.nodes[m.name]
                    if m.name in self.loop_of:
                        self.loops[self.loop_of.pop(m.name)]["nodes"].remove(m.name)
                    count += 1
                    break
        self.stats["fused affine"] = count

    def _batched(self) -> dict:
        """Does a node have a row per batch row (else one row, derived from params only)?"""
        return _fixpoint(self.g, lambda n, get: (
            n.attrs.get("kind") != "table" if n.op == "input" else False if n.is_leaf
            else n.axis is not None or any(get(a.node) for a in n.args)))

    def _dce(self):
        g = self.g
        roots = list(g.losses) + [op.node for op in g.outputs.values()]
        keep, todo = set(), list(roots)
        while todo:
            n = todo.pop()
            if n in keep:
                continue
            keep.add(n)
            node = g.nodes[n]
            todo += [a.node for a in node.args]
            if node.init is not None:
                todo.append(node.init.node)
        # masks and tables stay if a kept node reads them (appended by infer)
        dead = [n for n in g.nodes if n not in keep]
        for n in dead:
            del g.nodes[n]
        self.stats["after dead-node elimination"] = sum(not n.is_leaf for n in g.nodes.values())
        self.stats["dead nodes removed"] = sum(not self.g0.nodes[n].is_leaf for n in dead)

    def _lastof(self):
        g = self.g
        made = {}

        def fix(op: Operand) -> Operand:
            if op.mode != "last":
                return op
            if op.node not in made:
                src = g.nodes[op.node]
                mask = g.masks.get(src.axis)
                name = f"{op.node}.last"
                args = [Operand(op.node, 0, "all"), Operand(mask, 0, "all") if mask else None]
                if mask is None:        # no padding on this axis: the last slot is the end
                    made[op.node] = Operand(op.node, 0, "lastslot")
                    return made[op.node]
                g.nodes[name] = Node(name, "lastof", args, loc=src.loc, ty=Ty(src.ty.feat))
                made[op.node] = Operand(name)
            return made[op.node]

        for n in list(g.nodes.values()):
            n.args = [fix(a) for a in n.args]
            if n.init is not None:
                n.init = fix(n.init)
        g.outputs = {k: fix(v) for k, v in g.outputs.items()}

    def _order_index(self):
        self.index = {n: i for i, n in enumerate(self.g.nodes)}

    def _loops(self):
        """SCCs of the step graph with delay edges: each nontrivial one is a loop over its axis."""
        g = self.g
        dg = nx.DiGraph()
        for n in g.nodes.values():
            if n.is_leaf or n.axis is None:
                continue
            dg.add_node(n.name)
            for a in n.args:
                src = g.nodes[a.node]
                if a.mode == "step" and not src.is_leaf and src.axis == n.axis:
                    dg.add_edge(a.node, n.name, delay=a.delay)
        self.loop_of, self.loops = {}, []
        for comp in sorted(nx.strongly_connected_components(dg), key=lambda c: min(self.index[x] for x in c)):
            if len(comp) == 1:
                (x,) = comp
                if not dg.has_edge(x, x):
                    continue
            delays = {d["delay"] for u, v, d in dg.subgraph(comp).edges(data=True) if d["delay"]}
            if any(d > 0 for d in delays) and any(d < 0 for d in delays):
                first = min(comp, key=lambda x: self.index[x])
                raise SpecError.at(g.nodes[first].loc or Loc("<spec>", 1, 1),
                                   f"the recurrence through {', '.join(sorted(_shown(c) for c in comp))} reads "
                                   f"both earlier (t-k) and later (t+k) steps; a loop runs one way")
            direction = -1 if any(d < 0 for d in delays) else 1
            sub = nx.DiGraph()
            sub.add_nodes_from(comp)
            sub.add_edges_from((u, v) for u, v, d in dg.subgraph(comp).edges(data=True) if d["delay"] == 0)
            order = list(nx.lexicographical_topological_sort(sub, key=lambda x: self.index[x]))
            lid = len(self.loops)
            axis = g.nodes[order[0]].axis
            self.loops.append({"nodes": order, "direction": direction, "axis": axis})
            for x in order:
                self.loop_of[x] = lid

    def _reassociate(self):
        """b + W h(t-1) + U x(t) parses as (b + W h(t-1)) + U x(t): regroup sums inside a loop as
        (b + U x(t)) + W h(t-1), so the part that does not depend on the recurrence is hoisted
        (one op over all steps) and only one add remains per step."""
        g = self.g
        users = {}
        for n in g.nodes.values():
            for a in n.args:
                users.setdefault(a.node, []).append(n.name)
            if n.init is not None:
                users.setdefault(n.init.node, []).append(n.name)
        outs = {op.node for op in g.outputs.values()} | set(g.losses)
        count = 0
        for root in [n for n in g.nodes.values() if n.op == "add" and n.name in self.loop_of]:
            if root.name not in g.nodes:
                continue
            lid = self.loop_of[root.name]
            leaves, inner = [], []

            def walk(op: Operand, top: bool):
                n = g.nodes[op.node]
                if (op.mode == "step" and op.delay == 0 and n.op == "add" and not top
                        and len(users.get(n.name, [])) == 1 and n.name not in outs and n.init is None
                        and "#" in n.name):
                    inner.append(n.name)
                    for a in n.args:
                        walk(a, False)
                else:
                    leaves.append(op)
            for a in root.args:
                walk(a, False)
            looped = [a for a in leaves if self.loop_of.get(a.node) == lid]
            free = [a for a in leaves if self.loop_of.get(a.node) != lid]
            if len(free) < 2 or not looped:
                continue
            ty = {a.node: g.nodes[a.node].ty for a in leaves}
            if any(t is None or t.seq for t in ty.values()):
                continue
            for name in inner:
                del g.nodes[name]
            acc = free[0]
            for i, a in enumerate(free[1:], 1):
                name = f"{root.name}#h{i}"
                g.nodes[name] = Node(name, "add", [acc, a], loc=root.loc, axis=root.axis, ty=root.ty)
                self.index[name] = self.index[root.name] - 0.1
                acc = Operand(name)
            rest = looped
            while len(rest) > 1:
                name = f"{root.name}#r{len(rest)}"
                g.nodes[name] = Node(name, "add", [acc, rest[0]], loc=root.loc, axis=root.axis, ty=root.ty)
                self.index[name] = self.index[root.name] - 0.05
                acc, rest = Operand(name), rest[1:]
            root.args = [acc, rest[0]]
            count += 1
        self.stats["regrouped sums"] = count

    def _carry(self):
        """A backward loop over a padded axis starts at t=T-1, which is padding for the shorter
        sequences: keep the initial state until each sequence's real last step."""
        g = self.g
        count = 0
        for loop in self.loops:
            if loop["direction"] > 0 or loop["axis"] not in g.masks:
                continue
            members = set(loop["nodes"])
            states = sorted({a.node for x in members for a in g.nodes[x].args
                             if a.node in members and a.mode == "step" and a.delay != 0},
                            key=lambda x: self.index[x])
            for s in states:
                node = g.nodes[s]
                raw = Node(s + "#raw", node.op, node.args, node.attrs, node.loc, None, node.axis, node.ty)
                g.nodes[raw.name] = raw
                node.op, node.attrs = "select", {}
                node.args = [Operand(g.masks[node.axis]), Operand(raw.name), Operand(s, -1)]
                self.index[raw.name] = self.index[s] - 0.5
                count += 1
        self.stats["padding carries"] = count

    def _slots(self):
        """How many slots each axis value needs before t=0 (reads at t-k) and after t=T-1."""
        g = self.g
        self.pre = {n: 0 for n in g.nodes}
        self.post = {n: 0 for n in g.nodes}
        for n in g.nodes.values():
            for a in n.args:
                if a.mode == "step" and a.delay > 0:
                    self.pre[a.node] = max(self.pre[a.node], a.delay)
                elif a.mode == "step" and a.delay < 0:
                    self.post[a.node] = max(self.post[a.node], -a.delay)

    # ------------------------------------------------------------ sizes
    def _seq_len(self, ty) -> int:
        return self.T[ty.seq] if ty is not None and ty.seq else 1

    def _shape(self, n: Node) -> tuple:
        """Buffer shape: (slots, rows per slot, cols) for axis values, (rows, cols) otherwise."""
        ty = n.ty
        if n.op == "param":
            s = n.attrs["shape"]
            return (1, 1) if not s else (1, s[0]) if len(s) == 1 else (s[0], s[1])
        if n.op == "const":
            return (1, 1)
        if n.op == "input" and n.attrs.get("kind") == "table":
            V = next((v for k, v in self.g.dims.items() if k == "V" and isinstance(v, int)), 1000)
            return tuple(self.tables.get(n.attrs["field"], DEFAULT_TABLES[n.attrs["field"]](V)))
        if n.op in LOSS_OPS:
            return (1, 1)
        cols = ty.feat
        if n.op == "input" and n.attrs.get("kind") == "tokens" and n.attrs.get("width"):
            cols = n.attrs["width"]
        rows = self._seq_len(ty) * (self.B if self._batched_memo[n.name] else 1)
        if n.axis is not None:
            return (self.pre[n.name] + self.T[n.axis] + self.post[n.name], rows, cols)
        return (rows, cols)

    def _check_memory(self):
        g = self.g
        total = 0
        for n in g.nodes.values():
            if any(not isinstance(s, int) for s in self._raw_dims(n)):
                where = g.source.where(("dims",)) if getattr(g, "source", None) else Loc("<spec>", 1, 1)
                raise SpecError.at(where, f"dim of '{n.name}' is not bound; give its size or bind it from data")
            total += math.prod(self._shape(n))
        need = total * self.dtype_bytes * 2
        self.stats["memory bytes"] = need
        if need > MAX_BYTES:
            where = g.source.where(("dims",)) if getattr(g, "source", None) else Loc("<spec>", 1, 1)
            sizes = ", ".join(f"{k}={v}" for k, v in g.dims.items())
            raise SpecError.at(where, f"these dims ({sizes}) with batch {self.B} and lengths "
                                      f"{', '.join(f'{k}={v}' for k, v in self.T.items())} need "
                                      f"{need / 2**30:.1f} GiB for values and gradients; the limit is "
                                      f"{MAX_BYTES / 2**30:.0f} GiB: use smaller dims or a shorter length")

    def _raw_dims(self, n):
        if n.op == "param":
            return n.attrs["shape"]
        if n.ty is None:
            return []
        return [n.ty.feat]

    def _dep_graph(self):
        dg = nx.DiGraph()
        for n in self.g.nodes.values():
            dg.add_node(n.name)
            for a in n.args:
                dg.add_edge(a.node, n.name)
            if n.init is not None:
                dg.add_edge(n.init.node, n.name)
        return dg

    # ------------------------------------------------------------ layout
    def _allocate(self):
        g = self.g
        plan = Plan(g.name, self.B, dict(self.T))
        self.plan = plan
        order = []
        kinds = (("param", True), ("param", False))
        for kind, learn in kinds:
            order += [n for n in g.nodes.values() if n.op == kind and bool(n.attrs.get("learn", True)) == learn]
        order += [n for n in g.nodes.values() if n.op == "const" and n.ty.dtype == "f"]
        fvalues = [n for n in g.nodes.values() if n.op not in ("param", "const") and n.ty.dtype == "f"]
        tables = [n for n in g.nodes.values() if n.op == "input" and n.attrs.get("kind") == "table"]
        ivalues = [n for n in g.nodes.values() if n.op not in ("param", "const") and n.ty.dtype == "i"
                   and n not in tables]
        self.buf = {}
        off = 0
        for n in order:
            off = self._place(n, "f", off)
            if n.op == "param" and n.attrs.get("learn", True):
                plan.nlearn = off
        plan.value_start = off
        for n in fvalues:
            off = self._place(n, "f", off)
        self.foff = off
        ioff = 0
        for n in tables:
            ioff = self._place(n, "i", ioff)
        plan.ivalue_start = ioff
        for n in ivalues:
            ioff = self._place(n, "i", ioff)
        self.ioff = ioff

    def _place(self, n: Node, dtype: str, off: int) -> int:
        kind = {"param": "param", "const": "const", "input": "input"}.get(n.op, "value")
        shape = self._shape(n)
        b = Buffer(n.name, kind, dtype, shape, off, learn=n.op == "param" and bool(n.attrs.get("learn", True)),
                   init=n.attrs.get("init") if n.op == "param" else n.attrs.get("value"),
                   pre=self.pre.get(n.name, 0), post=self.post.get(n.name, 0), node=n.name)
        if n.op == "input":
            b.fields = {"kind": n.attrs.get("kind"), "field": n.attrs.get("field"), "axis": n.axis}
        self.plan.buffers[n.name] = b
        self.buf[n.name] = b
        return off + b.size

    def _scratch(self, name: str, dtype: str, rows: int, cols: int) -> View:
        if dtype == "f":
            off, self.foff = self.foff, self.foff + rows * cols
        else:
            off, self.ioff = self.ioff, self.ioff + rows * cols
        self.plan.buffers[name] = Buffer(name, "scratch", dtype, (rows, cols), off)
        return View(dtype, off, rows, cols, name)

    # ------------------------------------------------------------ views
    def _view(self, name: str, s0: Optional[int] = None, ns: int = 1, label: str = "") -> View:
        """A view of node `name`: for axis values, slots s0 .. s0+ns-1 counted from t=0."""
        b = self.buf[name]
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

    # ------------------------------------------------------------ emission
    def _requires_grad(self):
        return _fixpoint(self.g, lambda n, get: (
            bool(n.attrs.get("learn", True)) if n.op == "param" else False if n.is_leaf
            else n.ty.dtype == "f" and (n.op == "concat" or REGISTRY[n.op].grad)
            and any(get(a.node) for a in n.args)))

    def _emit(self):
        g, plan = self.g, self.plan
        self.rg = self._requires_grad()
        # super-nodes: a loop, or one non-leaf node
        sup = {}
        for n in g.nodes.values():
            if not n.is_leaf:
                sup[n.name] = ("loop", self.loop_of[n.name]) if n.name in self.loop_of else ("node", n.name)
        cg = nx.DiGraph()
        key = {}
        for name, s in sup.items():
            cg.add_node(s)
            key[s] = min(key.get(s, 1e18), self.index[name])
        for n in g.nodes.values():
            if n.is_leaf:
                continue
            deps = [a.node for a in n.args] + ([n.init.node] if n.init is not None else [])
            for d in deps:
                if d in sup and sup[d] != sup[n.name]:
                    cg.add_edge(sup[d], sup[n.name])
        naive = 0
        # inputs read at t-k (the teacher-forced target y[t-1]) need their initial slots too: <bos>
        for n in g.nodes.values():
            if n.op == "input" and n.init is not None:
                self._emit_inits(n)
        for s in nx.lexicographical_topological_sort(cg, key=lambda s: key[s]):
            if s[0] == "loop":
                self._emit_loop(self.loops[s[1]])
            else:
                n = g.nodes[s[1]]
                self._emit_inits(n)
                if n.axis is not None and n.op in STEPWISE:
                    for t in range(self.T[n.axis]):
                        self._eqn(n, t)
                else:
                    self._eqn(n, None)
        for n in g.nodes.values():
            if not n.is_leaf:
                naive += self.T[n.axis] if n.axis is not None else 1
        self.stats["unrolled nodes"] = naive + sum(n.is_leaf for n in g.nodes.values())
        self.stats["plan ops before hoisting"] = naive
        self.stats["plan ops"] = len(plan.eqns)
        self.stats["hoisted nodes"] = sum(1 for n in g.nodes.values()
                                          if not n.is_leaf and n.axis is not None and n.name not in self.loop_of)
        self._mark_sparse()
        plan.losses = [self._view(x) for x in g.losses if x in self.buf]
        plan.outputs = {k: (op.node, op.mode) for k, op in g.outputs.items()}
        plan.fsize, plan.isize = self.foff, self.ioff
        self.stats["params"] = plan.param_count()

    def _mark_sparse(self):
        """A learnable param whose every reader takes it at a `rows` operand (a lookup table)
        has a row-sparse gradient: the runtime may zero and update only the rows a batch picks."""
        reads = {}
        for e in self.plan.eqns:
            for k, v in enumerate(e.ins):
                reads.setdefault(v.buf, []).append(k in REGISTRY[e.op].rows)
        for b in self.plan.params():
            b.sparse = b.learn and bool(reads.get(b.name)) and all(reads[b.name])
        self.stats["sparse params"] = sum(b.sparse for b in self.plan.params())

    def _emit_inits(self, n: Node):
        """Fill the slots before t=0 (after t=T-1 for backward loops) with the initial value."""
        if n.axis is None:
            return
        pre, post = self.pre[n.name], self.post[n.name]
        if not (pre or post) or n.init is None:
            return                      # zeros: the value region is zeroed before each forward
        b = self.buf[n.name]
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

    def _emit_loop(self, loop):
        g = self.g
        T = self.T[loop["axis"]]
        for x in loop["nodes"]:
            self._emit_inits(g.nodes[x])
        deferred = set()
        for x in loop["nodes"]:
            n = g.nodes[x]
            w, v = (n.args + [None, None])[:2]
            if n.op in ("matmul", "affine") and self.rg[w.node] and v.mode == "step" and g.nodes[v.node].axis == n.axis:
                # one GEMM over all steps for dW, run after the loop's backward
                out = self._view(x, 0, T, "t=*")
                ins = [self._operand(w, None, T), self._operand(v, None, T)]
                self.plan.eqns.append(Eqn("matmul", out, ins, {}, (True, False), nofwd=True))
                deferred.add(x)
        steps = range(T) if loop["direction"] > 0 else range(T - 1, -1, -1)
        for t in steps:
            for x in loop["nodes"]:
                self._eqn(g.nodes[x], t, skip_w=x in deferred)

    def _eqn(self, n: Node, t: Optional[int], skip_w: bool = False):
        T = self.T[n.axis] if n.axis is not None else 1
        if n.axis is None:
            out = self._view(n.name)
        elif n.op in LOSS_OPS:
            out = self._view(n.name)
        elif t is None:
            out = self._view(n.name, 0, T, "t=*")
        else:
            out = self._view(n.name, t, 1, f"t={t}")
        ins = [self._operand(a, t, T) for a in n.args]
        need = [self.rg[a.node] and v.dtype == "f" for a, v in zip(n.args, ins)]
        if n.op == "concat":
            col = 0
            for a, v, nd in zip(n.args, ins, need):
                self.plan.eqns.append(Eqn("place", out, [v], {"col": col, "width": v.cols}, (nd,)))
                col += v.cols
            return
        op, attrs = n.op, dict(n.attrs)
        if op == "dropout" and not self.training:
            op, attrs = "copy", {}
        if skip_w:
            need[0] = False
        sig = REGISTRY[op]
        if not sig.grad:
            need = [False] * len(need)
        need = [nd and k not in sig.masks for k, nd in enumerate(need)]
        if "norm" in sig.attrs:
            attrs["norm"] = float(self.B)
        if "batch" in sig.attrs:
            attrs["batch"] = self.B
        attrs = {k: attrs[k] for k in sig.attrs}
        scratch = None
        if sig.scratch:
            cols = out.cols if op == "dropout" else int(attrs["k"])
            rows = ins[0].rows
            scratch = self._scratch(f"{n.name}.scratch[{'*' if t is None else t}]", sig.scratch, rows, cols)
        self.plan.eqns.append(Eqn(op, out, ins, attrs, tuple(need), scratch=scratch, node=n.name))


def _fixpoint(g: Graph, rule) -> dict:
    """A monotone boolean property over a graph with cycles (through delays): iterate to rest."""
    val = {n: False for n in g.nodes}
    changed = True
    while changed:
        changed = False
        for n in g.nodes.values():
            v = bool(rule(n, val.__getitem__))
            if v != val[n.name]:
                val[n.name], changed = v, True
    return val


def _shown(name: str) -> str:
    return name.split("#")[0]


def memory_estimate(plan: Plan, dtype_bytes: int = 4) -> int:
    """Bytes of values, inputs and scratch, and their gradients (the activation memory)."""
    return (plan.fsize - plan.value_start) * dtype_bytes * 2 + (plan.isize - plan.ivalue_start) * 8
