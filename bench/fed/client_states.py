"""Every client's personal state, held packed: clients whose states share a structure share one buffer per dtype.

A federation keeps each client's personal state from one round to the next. Held as nested dicts of small
tensors, every tensor costs a few hundred bytes of bookkeeping (Python object, tensor and storage headers,
aligned allocation) on top of its data; for personal heads of a few kilobytes that overhead is over a third of
the data, multiplied by thousands of clients. :class:`ClientStates` keeps the state's structure (container kinds,
keys, shapes, offsets) once per distinct structure, and the tensors of all clients with that structure in one
2-D buffer per dtype (usually a single float32 one), a row per client. Storing a client's new state of the same
structure copies it into the client's row: no allocation. Non-tensor leaves (numbers, strings) are kept per
client.

Reading a client's state rebuilds the nested containers with tensors copied out of the client's row: a state is
changed only by storing a new one (``states[c] = state``), as the engine does with every local update's result.
Copies, not views, because a job sent to a worker process pickles each view with its whole buffer.

The buffers live on the run's device (``run.state_device=device``), or in pinned host memory (``pinned``) for
federations whose states do not fit on the device: a state is then copied to the device when it is read and back
when it is stored, both asynchronously (pinned memory lets the copies overlap with computation). On the CPU the two
are the same: states are in host memory either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

# A layout is (tree, dtypes, widths): the tree is a nested tuple — ("T", buffer, offset, shape) for a tensor
# stored in the buffer of dtype ``dtypes[buffer]`` (``widths[buffer]`` elements per client), ("V", i) for the
# client's i-th non-tensor leaf, ("D", ((key, tree), ...)) for a dict, ("L", (tree, ...)) for a list and
# ("U", (tree, ...)) for a tuple.
Layout = tuple
CPU = torch.device("cpu")


def flatten(state: Any, device: torch.device = CPU) -> tuple[Layout, list[list[torch.Tensor]], tuple]:
    """``state`` as (layout, its tensors flattened to 1-D grouped by dtype in layout order, non-tensor leaves);
    every tensor must be on ``device``."""
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    sizes: dict[torch.dtype, int] = {}
    leaves: list[Any] = []

    def walk(node: Any) -> Layout:
        if isinstance(node, torch.Tensor):
            if node.device != device:
                raise ValueError(f"client states must hold tensors on {device}, got one on {node.device}")
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
    return (tree, tuple(groups), tuple(sizes[d] for d in groups)), list(groups.values()), tuple(leaves)


def rebuild(tree: Layout, rows: tuple[torch.Tensor, ...], leaves: tuple) -> Any:
    """The nested state of a layout's ``tree``, its tensors copied out of ``rows`` (one 1-D tensor per dtype)."""
    kind = tree[0]
    if kind == "T":
        _, buffer, offset, shape = tree
        return rows[buffer][offset : offset + torch.Size(shape).numel()].view(shape).clone()
    if kind == "D":
        return {key: rebuild(child, rows, leaves) for key, child in tree[1]}
    if kind == "L":
        return [rebuild(child, rows, leaves) for child in tree[1]]
    if kind == "U":
        return tuple(rebuild(child, rows, leaves) for child in tree[1])
    return leaves[tree[1]]


def pinned_available() -> bool:
    """Whether this machine can pin host memory (it needs an accelerator: CUDA)."""
    return torch.cuda.is_available()


class Slab:
    """The tensors of every client whose state has one layout: a ``rows × width`` buffer per dtype, a row each.

    Rows are handed out by :meth:`take` (the buffers double when full) and handed back by :meth:`release`. The
    buffers are on ``device``, or in pinned host memory with ``pinned`` (rows read back onto ``device``).
    """

    def __init__(self, layout: Layout, device: torch.device = CPU, pinned: bool = False):
        _, dtypes, widths = layout
        self.layout, self.device, self.pinned = layout, device, pinned
        self.buffers = tuple(self._empty(0, width, dtype) for dtype, width in zip(dtypes, widths, strict=True))
        self.free: list[int] = []
        self.used = 0

    @property
    def capacity(self) -> int:
        return self.buffers[0].shape[0] if self.buffers else 1 << 62

    def take(self) -> int:
        if self.free:
            return self.free.pop()
        if self.used == self.capacity:
            self.buffers = tuple(self._grown(b) for b in self.buffers)
        self.used += 1
        return self.used - 1

    def _empty(self, rows: int, width: int, dtype: torch.dtype) -> torch.Tensor:
        if self.pinned:
            return torch.empty(rows, width, dtype=dtype, pin_memory=True)
        return torch.empty(rows, width, dtype=dtype, device=self.device)

    def _grown(self, buffer: torch.Tensor) -> torch.Tensor:
        """``buffer`` with twice the rows (at least 4); the new rows are left unwritten, so the pages of a large
        buffer that no client uses yet are not resident."""
        grown = self._empty(max(4, 2 * len(buffer)), buffer.shape[1], buffer.dtype)
        grown[: len(buffer)] = buffer
        return grown

    def release(self, row: int) -> None:
        self.free.append(row)

    def write(self, row: int, groups: list[list[torch.Tensor]]) -> None:
        for buffer, group in zip(self.buffers, groups, strict=True):
            if self.pinned:  # gathered on the device, then one asynchronous copy into the pinned row
                buffer[row].copy_(torch.cat(group), non_blocking=True)
            else:
                torch.cat(group, out=buffer[row])

    def read(self, row: int, leaves: tuple) -> Any:
        rows = tuple(buffer[row] for buffer in self.buffers)
        if self.pinned:  # the copy to the device is the copy out of the buffer
            return rebuild(self.layout[0], tuple(r.to(self.device, non_blocking=True) for r in rows), leaves)
        return rebuild(self.layout[0], rows, leaves)


class ClientStates:
    """The personal states of all clients, packed; indexing returns (``[c] = state`` stores) a nested state.

    States are stored from and read back as tensors on ``device``; ``pinned`` keeps the buffers in pinned host
    memory instead of on ``device`` (a no-op on the CPU, whose states are in host memory anyway).
    """

    def __init__(self, states: Iterable[Any], device: torch.device | str = "cpu", pinned: bool = False):
        self.device = torch.device(device)
        self.pinned = pinned and self.device.type != "cpu"
        if self.pinned and not pinned_available():
            raise ValueError(f"run.state_device=pinned: pinned host memory needs CUDA, which {self.device} "
                             "cannot use; use run.state_device=device")
        self._slabs: dict[Layout, Slab] = {}
        self._slots: list[tuple[Slab, int]] = []
        self._leaves: list[tuple] = []
        for state in states:
            layout, groups, leaves = flatten(state, self.device)
            self._slots.append(self._place(layout, groups))
            self._leaves.append(leaves)

    def _place(self, layout: Layout, groups: list[list[torch.Tensor]]) -> tuple[Slab, int]:
        """Write a state's tensors into a free row of its layout's slab."""
        slab = self._slabs.get(layout)
        if slab is None:
            slab = self._slabs[layout] = Slab(layout, self.device, self.pinned)
        row = slab.take()
        slab.write(row, groups)
        return slab, row

    def __len__(self) -> int:
        return len(self._slots)

    def __getitem__(self, client: int) -> Any:
        slab, row = self._slots[client]
        return slab.read(row, self._leaves[client])

    def __setitem__(self, client: int, state: Any) -> None:
        slab, row = self._slots[client]
        layout, groups, self._leaves[client] = flatten(state, self.device)
        if layout == slab.layout:
            slab.write(row, groups)
        else:
            slab.release(row)
            self._slots[client] = self._place(layout, groups)

    def __iter__(self) -> Iterator[Any]:
        return (self[c] for c in range(len(self)))
