"""The kernels' calling convention, shared by every generated adapter (runtime/codegen.py):
views of the flat arrays built from an equation's record (Plan.encode). Kept in one module so
that numba compiles these helpers once, not once per generated kernel."""
import numpy as np
from llvmlite import ir
from numba import carray, types
from numba.extending import intrinsic

from graphspec.plan import MAX_ATTRS, RECORD_HEADER, UNITS

from .jit import jit


@intrinsic
def call(typingctx, addr, a, b, c, d, e):
    """Call the kernel at address `addr`, `void k(F, G, I, record, attrs)`, with five
    pointer-sized integers as its pointers."""
    sig = types.void(addr, a, b, c, d, e)

    def codegen(context, builder, signature, args):
        i8p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i8p] * 5)
        fn = builder.inttoptr(args[0], fnty.as_pointer())
        builder.call(fn, [builder.inttoptr(x, i8p) for x in args[1:]])
        return context.get_dummy_value()
    return sig, codegen


@jit
def run(table, offsets, records, attrs, f, g, i, i0, i1, step):
    """Equations [i0, i1) of a plan, first to last (step 1) or last to first (step -1): the
    kernel at table[k] of each (0: none) over the record at address records + 8 offsets[k].
    records, attrs, f, g, i: addresses."""
    k = i0 if step > 0 else i1 - 1
    for _ in range(i1 - i0):
        if table[k] != 0:
            call(table[k], f, g, i, records + 8 * offsets[k], attrs + 8 * MAX_ATTRS * k)
        k += step


def _element_at(ty):
    """An intrinsic: the address of element `off` of a `ty` array at address p, typed."""
    @intrinsic
    def at(typingctx, p, off):
        def codegen(context, builder, signature, args):
            base = builder.bitcast(args[0], context.get_value_type(ty).as_pointer())
            return builder.gep(base, [args[1]])
        return types.CPointer(ty)(p, off), codegen
    return at


_f32_at, _f64_at, _i64_at = (_element_at(t) for t in (types.float32, types.float64, types.int64))


# Views are carrays at the element's address: slicing a carray and reshaping the slice (as these
# did) calls numba's no-copy-reshape helper, ~17 ns a view, 5-10 views a kernel call: at B=1 most
# of what a fused cell or a one-row product cost per step.
@jit
def fv32(p, off, rows, cols):
    """A [rows, cols] float32 view at offset `off` of the array at address p."""
    return carray(_f32_at(p, off), (rows, cols))


@jit
def fv64(p, off, rows, cols):
    return carray(_f64_at(p, off), (rows, cols))


@jit
def iv(p, off, rows, cols):
    """A [rows, cols] view of token ids (int64)."""
    return carray(_i64_at(p, off), (rows, cols))


def _stack_array(ty):
    """An intrinsic: a 1-d `ty` array of n elements on the stack of the function that calls it
    (LLVM alloca; no meminfo), freed when that function returns: call it directly (a @jit
    wrapper's frame would be gone), outside loops, and for small n only (STACK_BYTES)."""
    @intrinsic
    def on_stack(typingctx, n):
        aryty = types.Array(ty, 1, "C")

        def codegen(context, builder, signature, args):
            ary = context.make_array(aryty)(context, builder)
            itemsize = context.get_constant(types.intp, context.get_abi_sizeof(context.get_data_type(ty)))
            data = builder.alloca(context.get_data_type(ty), size=args[0])
            context.populate_array(ary, data=data, shape=[args[0]], strides=[itemsize], itemsize=itemsize, meminfo=None)
            return ary._getvalue()
        return aryty(n), codegen
    return on_stack


# A generated kernel's row buffer (codegen.fused_source): np.empty and its release cost ~40 ns
# a call, a quarter of a fused LSTM cell's backward at B=1/H=32.
stack32, stack64 = _stack_array(types.float32), _stack_array(types.float64)
STACK_BYTES = 1 << 15           # bigger buffers come from the heap, far from any thread's stack limit


@jit
def record(p, nviews):
    """An equation's record: the header, then (offset, rows, cols) of each view."""
    return carray(p, (RECORD_HEADER + 3 * nviews,), np.int64)


@jit
def attributes(p):
    return carray(p, (MAX_ATTRS,), np.float64)


@jit
def unit_range(att, width):
    """The hidden units [u0, u1) a thread runs of an equation in a loop split by units
    (attrs[UNITS:], Plan.unit_segments); unset: (0, width), all of them."""
    if att[UNITS + 1] == 0:
        return 0, width
    return int(att[UNITS]), int(att[UNITS + 1])
