"""Types of the public API: what :func:`casa_compute.run` and :func:`casa_compute.cluster` accept.

Only for annotations: nothing here is needed at run time, and the heavy packages they name
(distributed, pyarrow, casa_data's Dataset) are imported for type checkers only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias

if TYPE_CHECKING:
    import pyarrow as pa
    from distributed import Client
    from distributed.deploy.spec import SpecCluster

    from casa_data.dataset import Dataset

__all__ = ["Processor", "DatasetLike", "ClusterLike", "ClusterKind"]


class Processor(Protocol):
    """A coffea processor: ``process(events)`` per chunk (``postprocess(output)``, if defined,
    once on the merged output). :class:`coffea.processor.ProcessorABC` subclasses qualify."""

    def process(self, events: Any) -> Any: ...


#: A kind for :func:`casa_compute.cluster` (a plain string is checked at run time).
ClusterKind: TypeAlias = Literal["auto", "local", "slurm", "htcondor", "gateway", "facility"]

#: What ``run(..., dataset)`` reads: a Dataset, a list of them, a coffea fileset dict, or Arrow
#: data (a Table, a RecordBatch or an iterator of them, e.g. ``ds.iter_batches(...)``).
DatasetLike: TypeAlias = (
    "Dataset | Sequence[Dataset] | Mapping[str, Any] | pa.Table | pa.RecordBatch | Iterable[pa.RecordBatch]"
)

#: Where ``run(..., cluster=)`` runs: a Client, a cluster object, a cluster kind or "facility".
ClusterLike: TypeAlias = "Client | SpecCluster | ClusterKind | Literal['facility'] | str"
