"""`void <name>_argv(i64* argv)`: the entry with all its arguments read from one array.

A ctypes call costs a conversion per argument; runtime/module.py keeps one preallocated array
of the entry's words (weights, arena, inputs.., outputs.., sync, tid, gen), rewrites only the
words that changed and calls this wrapper with that one pointer: the cheapest native call
Python can make, which is most of a small model's time per call. A library exported before
this wrapper existed lacks the symbol; the runtime then calls the entry itself.
"""

from __future__ import annotations

from llvmlite import ir

from .llvm import I64

I64P = I64.as_pointer()


def emit_argv(module: ir.Module, entry: ir.Function) -> ir.Function:
    """Add `void <name>_argv(i64* argv)` calling ``entry`` (`<name>_entry`) with argv's words
    converted to the entry's parameter types, in order."""
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [I64P]),
                     f"{entry.name.removesuffix('_entry')}_argv")
    fn.attributes.add("nounwind")
    b = ir.IRBuilder(fn.append_basic_block())
    args = []
    for i, param in enumerate(entry.function_type.args):
        word = b.load(b.gep(fn.args[0], [ir.Constant(I64, i)]))
        args.append(b.inttoptr(word, param) if isinstance(param, ir.PointerType) else word)
    b.call(entry, args)
    b.ret_void()
    return fn
