"""The parameters and native record of :class:`avq_plugin.AVQIndex` (a private part of the index:
with ``index.py``, ``_index_io.py`` and ``_index_protected.py`` the only modules that use
``_native``). ``_IndexBase`` holds the validated parameters, the resolved record of a trained
index (``default_search_params``, ``_native_params``) and the one place that builds a native
index from the parameters (``_new_native``).
"""

from __future__ import annotations

from typing import Any

from . import _native, _params
from . import _validation as V
from ._progress import ProgressArg
from ._wrapper import _NativeWrapper


class _SearchDefault(V.Checked):
    """``leaves_to_search`` / ``reorder_k``: a search-time parameter (as scikit-learn's
    ``n_neighbors``). A number assigned to a trained index also becomes its stored default budget
    (what ``search`` uses without budget arguments and what its files keep); None leaves the
    stored budget as training or ``tune`` resolved it."""

    def __set__(self, obj: Any, value: Any) -> None:
        super().__set__(obj, value)
        obj._store_search_default(self.name, obj.__dict__[self.slot])


class _IndexBase(_NativeWrapper[_native.Index]):
    """What the parts of AVQIndex share: its parameters and its native index."""

    metric: str
    anisotropic_threshold: float | str | None
    eta: float | None
    eta_formula: str
    reorder: str
    spill: str | None
    soar_lambda: float
    verbose: bool
    progress: ProgressArg

    # Integer parameters are checked on every assignment (constructor, setters, unpickling,
    # loading), against the limits exported by the native core (_validation.LIMITS).
    num_leaves = V.Checked(V.check_num_leaves)
    dims_per_block = V.Checked(V.check_dims_per_block)
    leaves_to_search = _SearchDefault(V.check_leaves_to_search)
    reorder_k = _SearchDefault(V.check_reorder_k)
    training_iterations = V.Checked(lambda v: V.check_iterations("training_iterations", v))
    kmeans_iterations = V.Checked(lambda v: V.check_iterations("kmeans_iterations", v, minimum=1))
    training_sample_size = V.Checked(V.check_training_sample_size)
    num_threads = V.Checked(V.resolve_threads)
    seed = V.Checked(V.check_seed)

    def _require_index(self) -> _native.Index:
        """The native index; ValueError when there is none yet."""
        if self._index is None:
            raise ValueError("the index is not trained yet: call fit(X) or train(X) first")
        return self._index

    def _require_trained(self) -> _native.Index:
        """The native index; ValueError when it is not trained yet."""
        index = self._index
        if index is None or not index.is_trained:
            raise ValueError("the index is not trained yet: call fit(X) or train(X) first")
        return index

    def default_search_params(self) -> tuple[int, int]:
        """(leaves_to_search, reorder_k) used when search() is not given them.

        The budget stored with the index: resolved by training from the ``leaves_to_search`` and
        ``reorder_k`` parameters, replaced by ``tune`` or by assigning those attributes.
        """
        p = self._require_trained().params()
        return p.default_leaves_to_search, p.default_reorder_k

    def default_leaf_margin(self) -> float | None:
        """The ``leaf_margin`` used when search() is not given one: None (the fixed count of
        leaves) unless ``tune`` chose a margin; stored with the index like the budget."""
        m = self._require_trained().params().default_leaf_margin
        return None if m < 0 else float(m)

    def _store_search_default(self, name: str, value: int | None) -> None:
        """A budget attribute assigned a number on a trained index becomes its stored default."""
        index = self._index
        if value is None or index is None or not index.is_trained:
            return
        p = index.params()
        index.set_default_search_params(
            value if name == "leaves_to_search" else p.default_leaves_to_search,
            value if name == "reorder_k" else p.default_reorder_k,
            p.default_leaf_margin,  # kept
        )

    def _new_native(self, d: int, threshold: float, budget: _params.Budget, *, spill: bool = True) -> _native.Index:
        """An untrained native index with this object's parameters and a resolved ``budget``
        (:class:`avq_plugin._params.Budget`): the one place that makes one. ``spill=False``: never
        spill (an index whose codes come from elsewhere, e.g. Faiss, has no spilled copies).
        Under l2 the PQ scan scores ``||q - decoded||^2`` (``l2_decoded_norms``, native/src/index.h)."""
        enc = self._encoding_for(d, spill=spill)
        p = _native.IndexParams()
        p.metric = self.metric
        p.d = d
        p.num_leaves = budget.num_leaves
        p.dims_per_block = enc.dims_per_block
        p.threshold = threshold
        p.eta = self.eta or 0.0
        p.eta_scann = self.eta_formula == "scann"
        p.avq_iterations = self.training_iterations
        p.kmeans_iterations = self.kmeans_iterations
        p.training_sample_size = self.training_sample_size or 0
        p.seed = self.seed
        p.reorder = self.reorder
        p.default_leaves_to_search = budget.leaves_to_search
        p.default_reorder_k = budget.reorder_k
        p.l2_decoded_norms = self.metric == "l2"
        p.spill = enc.spill or "none"
        p.soar_lambda = self.soar_lambda
        return _native.Index(p)

    def _encoding_for(self, d: int, *, spill: bool = True) -> _params.Encoding:
        """The concrete (dims_per_block, spill) for data of dimension d (``spill=False``: none)."""
        if not spill and self.spill == "soar":
            raise ValueError("spill='soar' needs vectors to encode: an index built from imported codes cannot spill")
        return _params.resolve_encoding(
            d, self.metric, dims_per_block=self.dims_per_block, spill=self.spill if spill else None
        )

    def _budget_for(
        self, n: int | None, d: int, num_leaves: int | None = None, *, spill: bool = True
    ) -> _params.Budget:
        """The concrete (num_leaves, leaves_to_search, reorder_k) for n vectors of dimension d."""
        return _params.resolve_budget(
            n,
            d,
            num_leaves=self.num_leaves if num_leaves is None else num_leaves,
            leaves_to_search=self.leaves_to_search,
            reorder_k=self.reorder_k,
            spilled=self._encoding_for(d, spill=spill).spill is not None,
        )

    def _native_params(self) -> dict[str, Any]:
        """The native parameter record (``_native.IndexParams``, as stored in the file) as a dict:
        the resolved values (threshold, num_leaves, default budget), not the constructor's."""
        p = self._require_index().params()
        return {name: getattr(p, name) for name in dir(p) if not name.startswith("_")}
