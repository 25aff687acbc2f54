"""Weights handed to compiled code as addresses: a read-only uint8 array made from (address,
length) inside a Numba function.

The fused decode step reads hundreds of weights that live at arbitrary places (the file
mapping, or arrays converted at load). Passing them as one int64 array of addresses keeps a
single compiled signature for every model and needs no ``numba.typed.List`` (whose methods
compile again in every process, about a second at each load). The arrays built here have the
type of the weights everywhere else (``array(uint8, 1d, C, readonly)``), so the drivers keep
their one compiled signature. The caller keeps the underlying arrays alive.
"""

from __future__ import annotations

from numba.core import cgutils, types
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array

READONLY_BYTES = types.Array(types.uint8, 1, "C", readonly=True)


@intrinsic
def readonly_bytes(typingctx, addr, n):
    """``addr`` (int64) and ``n`` (int64) -> a read-only uint8 array of n bytes at addr."""
    sig = READONLY_BYTES(types.int64, types.int64)

    def codegen(context, builder, signature, args):
        address, length = args
        ary = make_array(READONLY_BYTES)(context, builder)
        ptr_t = context.get_value_type(types.CPointer(types.uint8))
        one = context.get_constant(types.intp, 1)
        populate_array(ary, data=builder.inttoptr(address, ptr_t),
                       shape=cgutils.pack_array(builder, [length]),
                       strides=cgutils.pack_array(builder, [one]), itemsize=one, meminfo=None)
        return ary._getvalue()

    return sig, codegen
