"""What the TensorFlow hooks read from the traced graph of a training step.

`GraphStats` (`_graph_stats`) takes the norms of the weights before the
update from the reads the forward pass made already (`_read_in`), and the
norms of their change from the optimizer's own update ops
(`_additive_updates`): no copy of the weights and few extra graph ops.
Public graph APIs only (`FuncGraph.capture`, `Operation.consumers`, op
types and inputs); `tests/callbacks/test_graph_stats.py` fails loudly when
they change.
"""

from __future__ import annotations


def _f32(tensor):
    import tensorflow as tf

    return tf.cast(tensor, "float32")


def _handle_of(read):
    """The resource handle a variable read came from, or None."""
    op = read.op
    while op.type == "Identity":
        op = op.inputs[0].op
    return op.inputs[0] if op.type == "ReadVariableOp" else None


def _read_in(graph, variable):
    """The output of a `ReadVariableOp` of `variable` that `graph` (a
    `FuncGraph` being traced) holds already, or None: also when something
    else takes the variable's handle in `graph` (an assign, a gather, a
    cond or loop), whose value a read of its own sees in program order."""
    import tensorflow as tf

    handle = getattr(variable, "handle", None)
    if not tf.is_tensor(handle):
        return None
    # Captured once per graph: this finds the placeholder the layers' reads
    # take (or adds one that nothing reads yet).
    reads = []
    for op in graph.capture(handle).consumers():
        if op.type != "ReadVariableOp":
            # Written already, or handed to a cond, loop or function that
            # may write it: a read of our own comes after all that.
            return None
        reads.append(op)
    return reads[0].outputs[0] if reads else None


_ADDITIVE_UPDATES = {"AssignSubVariableOp": -1.0, "AssignAddVariableOp": 1.0}


def _additive_updates(reads: list, ops: list) -> list:
    """The tensor each variable was changed by in `ops`, or None.

    `reads` are reads of the variables taken before `ops` (the optimizer's
    `apply`) were traced. When the only ops of `ops` that take a variable's
    handle, besides reads, are `AssignSubVariableOp`s and
    `AssignAddVariableOp`s (an update, and weight decay with AdamW), their
    signed sum is the change, and its norm is `||w_after - w_before||`
    without keeping a copy of the weights. Any other use (an assign, a
    constraint, a scatter, the handle passed into a cond or a function)
    gives None: the caller then compares the weights after `ops` with
    `reads`.
    """
    users: dict[str, list] = {}
    for op in ops:
        if op.type != "ReadVariableOp":
            for t in op.inputs:
                users.setdefault(t.name, []).append(op)
    updates = []
    for read in reads:
        handle = _handle_of(read)
        found = [] if handle is None else users.get(handle.name, [])
        if not found or any(op.type not in _ADDITIVE_UPDATES for op in found):
            updates.append(None)
            continue
        if len(found) == 1:  # Its sign does not change the norm.
            updates.append(found[0].inputs[1])
            continue
        signed = [_ADDITIVE_UPDATES[op.type] * _f32(op.inputs[1]) for op in found]
        updates.append(sum(signed[1:], signed[0]))
    return updates
