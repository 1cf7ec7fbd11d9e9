"""The sampler's KV cache: allocated once per batch at its final length, filled in place.

transformers' ``DynamicLayer`` grows by ``torch.cat``, copying the whole cache at every
step (about half the sampling time on the CPU before this existed); these layers write
each step in place and hand attention a view of what is filled. They also copy rows out
(``batch_select_indices`` with repeated indices), which is how one prompt's prefill is
shared by the k rows that sample it.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def preallocated_cache(config: Any, capacity: int) -> Any:
    """A KV cache whose full-attention layers are allocated once, at ``capacity`` tokens.

    Sliding-window and other layer kinds keep transformers' own classes (which select
    rows by themselves).
    """
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    layer_class = _preallocated_layer_class()
    cache = DynamicCache(config=config)
    if cache.layers:
        cache.layers = [
            layer_class(capacity) if type(layer) is DynamicLayer else layer
            for layer in cache.layers
        ]
    else:  # no per-layer types known: every layer is made on first use
        cache.layer_class_to_replicate = functools.partial(layer_class, capacity)
    return cache


@functools.cache
def _preallocated_layer_class() -> type:
    """The cache layer class (made on first use: transformers is imported only when sampling)."""
    from transformers.cache_utils import DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        def __init__(self, capacity: int) -> None:
            super().__init__()
            self.capacity = capacity
            self.length = 0

        def lazy_initialization(self, key_states: torch.Tensor, value_states: Any) -> None:
            self.dtype, self.device = key_states.dtype, key_states.device
            batch, heads, _, dim = key_states.shape
            self._keys = key_states.new_empty((batch, heads, self.capacity, dim))
            self._values = value_states.new_empty(
                (batch, heads, self.capacity, value_states.shape[-1])
            )
            self.is_initialized = True

        def update(
            self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
        ) -> tuple[torch.Tensor, torch.Tensor]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            self._keys[:, :, self.length : end] = key_states
            self._values[:, :, self.length : end] = value_states
            self.length = end
            self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            # Rows may repeat: each new row owns its copy (index_select copies), so the
            # rows sharing one prompt's prefill write their own tokens after it.
            if not self.is_initialized:
                return
            self._keys = self._keys.index_select(0, indices)
            self._values = self._values.index_select(0, indices)
            self.keys, self.values = (
                self._keys[:, :, : self.length],
                self._values[:, :, : self.length],
            )

    return PreallocatedLayer
