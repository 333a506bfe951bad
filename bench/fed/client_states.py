"""Every client's personal state, held packed: one flat buffer per dtype and client, the structure shared.

A federation keeps each client's personal state from one round to the next. Held as nested dicts of small
tensors, every tensor costs a few hundred bytes of bookkeeping (Python object, tensor and storage headers,
aligned allocation) on top of its data; for personal heads of a few kilobytes that overhead is over a third of
the data, multiplied by thousands of clients. :class:`ClientStates` copies each client's tensors into one flat
buffer per dtype (usually a single float32 one) and keeps the state's structure (container kinds, keys, shapes,
offsets) once per distinct structure, shared by all the clients that have it. Non-tensor leaves (numbers,
strings) are kept per client.

Reading a client's state rebuilds the nested containers with tensors copied out of the client's buffers: a state is
changed only by storing a new one (``states[c] = state``), as the engine does with every local update's result.
Copies, not views, because a job sent to a worker process pickles each view with its whole buffer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

# A layout is (tree, dtypes): the tree is a nested tuple — ("T", buffer, offset, shape) for a tensor stored in the
# buffer of dtype ``dtypes[buffer]``, ("V", i) for the client's i-th non-tensor leaf, ("D", ((key, tree), ...))
# for a dict, ("L", (tree, ...)) for a list and ("U", (tree, ...)) for a tuple.
Layout = tuple
Packed = tuple[Layout, tuple[torch.Tensor, ...], tuple]


def pack(state: Any) -> Packed:
    """``state`` as (layout, one flat buffer per dtype, non-tensor leaves)."""
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    sizes: dict[torch.dtype, int] = {}
    leaves: list[Any] = []

    def walk(node: Any) -> Layout:
        if isinstance(node, torch.Tensor):
            if node.device.type != "cpu":
                raise ValueError(f"client states must hold CPU tensors, got one on {node.device}")
            group = groups.setdefault(node.dtype, [])
            offset = sizes.get(node.dtype, 0)
            group.append(node.detach().reshape(-1))
            sizes[node.dtype] = offset + node.numel()
            return ("T", list(groups).index(node.dtype), offset, tuple(node.shape))
        if isinstance(node, dict):
            return ("D", tuple((key, walk(value)) for key, value in node.items()))
        if isinstance(node, list):
            return ("L", tuple(walk(value) for value in node))
        if isinstance(node, tuple):
            return ("U", tuple(walk(value) for value in node))
        leaves.append(node)
        return ("V", len(leaves) - 1)

    tree = walk(state)
    buffers = tuple(torch.cat(group) for group in groups.values())
    return (tree, tuple(groups)), buffers, tuple(leaves)


def unpack(packed: Packed) -> Any:
    """The nested state of a :func:`pack` result, with tensors copied out of the buffers."""
    (tree, _), buffers, leaves = packed

    def build(node: Layout) -> Any:
        kind = node[0]
        if kind == "T":
            _, buffer, offset, shape = node
            return buffers[buffer][offset : offset + torch.Size(shape).numel()].view(shape).clone()
        if kind == "D":
            return {key: build(child) for key, child in node[1]}
        if kind == "L":
            return [build(child) for child in node[1]]
        if kind == "U":
            return tuple(build(child) for child in node[1])
        return leaves[node[1]]

    return build(tree)


class ClientStates:
    """The personal states of all clients, packed; indexing returns (``[c] = state`` stores) a nested state."""

    def __init__(self, states: Iterable[Any]):
        self._layouts: dict[Layout, Layout] = {}
        self._packed: list[Packed] = []
        for state in states:
            self._packed.append(self._intern(pack(state)))

    def _intern(self, packed: Packed) -> Packed:
        layout, buffer, leaves = packed
        return self._layouts.setdefault(layout, layout), buffer, leaves

    def __len__(self) -> int:
        return len(self._packed)

    def __getitem__(self, client: int) -> Any:
        return unpack(self._packed[client])

    def __setitem__(self, client: int, state: Any) -> None:
        self._packed[client] = self._intern(pack(state))

    def __iter__(self) -> Iterator[Any]:
        return (unpack(p) for p in self._packed)
