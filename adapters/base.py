"""The source adapter interface: a source declares its streams and yields rows; the node does the rest.

An adapter only reads. The department node owns everything else: mapping rows to record
fields, validation, the outbox, the saved reading position, batching, signing and delivery.
A new adapter is one module with a `Source` subclass plus an entry point in the group
`cx.adapters` (see docs/adapters.md).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, ClassVar


class SourceError(Exception):
    """The source cannot be read (connection refused, table missing, folder not found …).

    The message is shown to department IT staff as it is: say what and where, in Chinese and English.
    """


class StreamConfigError(SourceError):
    """The source answers, but a stream's configuration does not fit it (a table, key or cursor column it
    lacks, options missing): people must change node.toml. The node stops before reading (exit 3)."""


@dataclass(frozen=True)
class StreamSpec:
    """One stream of a source, as configured in node.toml's [[streams]] table."""

    name: str
    options: Mapping[str, Any]  # adapter-specific: table or query (sql), pattern (files) …
    key: tuple[str, ...]  # source columns that identify a row
    cursor: str | None = None  # incremental by this column; None means snapshot mode

    @property
    def snapshot(self) -> bool:
        return self.cursor is None


@dataclass(frozen=True)
class Row:
    key: tuple[str, ...]  # the key columns' values, as strings
    values: Mapping[str, Any]  # column -> value as the source gives it (str, int, Decimal, date, datetime, None …)
    locator: str  # where a person finds this row: "table xzcf id=123", "penalties.csv line 17"


@dataclass
class Chunk:
    """Rows the node commits to its outbox in one transaction, with the position to resume from."""

    stream: str
    rows: list[Row]
    position: Any = None  # JSON-serialisable; saved with the rows; given back to read() after a restart
    unit: str | None = None  # a unit of work finished after commit (files: "<name>:<sha256>")
    snapshot_complete: bool = False  # snapshot mode: a full pass over the source ends with this chunk
    error: str | None = None  # the unit could not be read at all (rows empty); the node reports it


@dataclass
class UnitReport:
    """What the node made of a unit (a dropped file), for the adapter to leave beside it."""

    unit: str
    rows: int
    valid: int
    invalid: int
    rejections: list[dict[str, Any]] = field(default_factory=list)  # {"locator", "errors": [FieldError json]}
    error: str | None = None


class Source(ABC):
    """A configured source. Constructed with its [sources.<name>] options and its streams."""

    name: ClassVar[str]  # the entry point name, e.g. "sql"

    def __init__(self, options: Mapping[str, Any], streams: Sequence[StreamSpec]):
        self.options = options
        self.streams = list(streams)

    def check(self) -> None:
        """Raise SourceError if the source or any stream cannot be read. Reads nothing else."""

    @abstractmethod
    def read(self, stream: StreamSpec, position: Any, chunk_size: int) -> Iterator[Chunk]:
        """Yield chunks of at most `chunk_size` rows from `position` on (None: from the start).

        Cursor mode: rows ordered by (cursor, key), each chunk's position resumes after its last
        row, so no row is skipped or repeated when many rows share a cursor value.
        Snapshot mode: every row, ordered by key, the last chunk marked snapshot_complete.
        """

    def finish(self, stream: StreamSpec, chunk: Chunk, report: UnitReport) -> None:
        """Called after the node committed (or gave up on) a chunk that has a `unit`."""

    def inventory(self, stream: StreamSpec) -> int | None:
        """How many rows the stream holds at the source now (for completeness checks), if cheap to say."""
        return None

    def columns(self, stream: StreamSpec) -> Sequence[str] | None:
        """The column names the stream's rows will have, reading no rows; None when only rows can tell
        (a drop folder before a file arrives). The node checks its mapping against them before it reads."""
        return None

    def ref(self, stream: StreamSpec, chunk: Chunk, row: Row) -> Any:
        """A JSON-serialisable reference from which `reread` finds this row again, or None if it cannot.

        The node keeps it with a row it rejected, so the row can be read again when the mapping, the
        schemas or the data at the source change (`cx node retry`).
        """
        return None

    def reread(self, stream: StreamSpec, refs: Sequence[Any]) -> Iterator[Chunk]:
        """Chunks holding the rows `refs` (from `ref`) name, as the source holds them now; rows gone are left
        out. A chunk from a unit (a dropped file) has that `unit`; the node does not finish it again."""
        raise SourceError(f"数据源不支持重新读取 the {self.name} source cannot read rows again")

    def close(self) -> None:
        """Release connections."""


def load_adapter(name: str) -> type[Source]:
    """The Source class registered under `name` in the `cx.adapters` entry point group."""
    found = {ep.name: ep for ep in entry_points(group="cx.adapters")}
    if name not in found:
        known = ", ".join(sorted(found)) or "none"
        raise SourceError(f"未知的适配器 unknown adapter {name!r}; installed: {known}")
    cls = found[name].load()
    if not (isinstance(cls, type) and issubclass(cls, Source)):
        raise SourceError(f"adapter {name!r} ({found[name].value}) is not a cx_adapters.base.Source")
    return cls
