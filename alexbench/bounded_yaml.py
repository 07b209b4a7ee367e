"""YAML with a bounded cost: small input, small work.

PyYAML's safe loader refuses Python tags, but a few hundred bytes of aliases (each list
naming the previous one ten times: "billion laughs") build a structure whose expanded
size is 10**9 nodes. The loader shares the nodes, so loading is cheap; the first code
that walks the result (a deep copy, validation, ``yaml.safe_dump``) is not. Deep
nesting overflows the recursive composer. This loader refuses, while composing and
before anything is built:

- documents over :data:`MAX_BYTES` (read with a cap, so ``/dev/zero`` ends at once);
- nesting deeper than :data:`MAX_DEPTH`, counted through aliases;
- an expanded size (every alias counted as a full copy) over :data:`MAX_NODES`;
- recursive aliases (``&a [*a]``) and integers too long to convert.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "YamlLimit", "load_bounded", "read_capped"]

MAX_BYTES = 64 << 10  # a config or preset is a few KB; the pure-Python scanner reads ~50 KB/s under load
MAX_DEPTH = 32
MAX_NODES = 100_000


class YamlLimit(ValueError):
    """The document is over one of the bounds (the message says which)."""


def read_capped(path: str | os.PathLike, cap: int = MAX_BYTES) -> bytes:
    """At most ``cap`` bytes of ``path``; :class:`YamlLimit` if there is more."""
    with open(Path(path), "rb") as fh:
        data = fh.read(cap + 1)
    if len(data) > cap:
        raise YamlLimit(f"larger than {cap // 1024} KiB; a config is a few KB")
    return data


class _Loader(yaml.SafeLoader):
    """The safe loader, with depth and expanded-size bounds checked on the composed nodes."""

    def __init__(self, stream: str | bytes) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index) -> yaml.Node | None:  # noqa: ANN001 - PyYAML's signature
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YamlLimit(f"nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node) -> Any:  # noqa: ANN001 - PyYAML's signature
        _measure(node, 1, {}, set())
        return super().construct_document(node)


def _measure(node: yaml.Node, depth: int, memo: dict[int, tuple[int, int]], active: set[int]) -> tuple[int, int]:
    """(expanded node count, height) of ``node``; an alias costs what it points to, every time."""
    if depth > MAX_DEPTH:
        raise YamlLimit(f"nested deeper than {MAX_DEPTH} levels (through aliases)")
    key = id(node)
    if key in memo:
        size, height = memo[key]
        if depth + height - 1 > MAX_DEPTH:
            raise YamlLimit(f"nested deeper than {MAX_DEPTH} levels (through aliases)")
        return size, height
    if key in active:
        raise YamlLimit("a recursive alias (a node that contains itself)")
    active.add(key)
    size, height = 1, 1
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    else:
        children = []
    for child in children:
        s, h = _measure(child, depth + 1, memo, active)
        size += s
        height = max(height, h + 1)
        if size > MAX_NODES:
            raise YamlLimit(f"expands to more than {MAX_NODES:,} values (aliases of aliases?)")
    active.discard(key)
    memo[key] = (size, height)
    return size, height


def load_bounded(text: str | bytes) -> Any:
    """``yaml.safe_load`` within the bounds; :class:`YamlLimit` or ``yaml.YAMLError`` otherwise."""
    if len(text) > MAX_BYTES:
        raise YamlLimit(f"larger than {MAX_BYTES // 1024} KiB; a config is a few KB")
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except RecursionError:  # not reached within the bounds; kept as a clear refusal all the same
        raise YamlLimit(f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # int("9" * 5000): Python's digit limit
        if isinstance(exc, YamlLimit):
            raise
        raise YamlLimit(str(exc).split(";")[0]) from None
    finally:
        loader.dispose()
