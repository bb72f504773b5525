"""What the AIC readers raise and warn, and how they name a record.

A missing or malformed annotation file raises :class:`AICDataError` (or its subclass
:class:`AnnotationFileNotFoundError`) whose message names the file, the record (index and id) and the offending
field. Records that cannot be used (no image file, no critique, no data for a listed id) are skipped and counted;
each reason is reported once per call as a warning, with the count and a few examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

class AICDataError(ValueError):
    """An annotation file is malformed; the message names the file, the record and the field."""


class AnnotationFileNotFoundError(AICDataError, FileNotFoundError):
    """An annotation or split file that the reader needs does not exist."""


class EmptySplitError(AICDataError):
    """A split that was asked for ended with no rows; the message names the split and the likely cause."""


class AICDataWarning(UserWarning):
    """Base class of the warnings that report skipped records."""


class MissingImageWarning(AICDataWarning):
    """Records were skipped because their image file does not exist."""


class EmptyReferencesWarning(AICDataWarning):
    """Records were skipped because they have no non-empty critique."""


class UnavailableRecordWarning(AICDataWarning):
    """Ids listed in a split file have no downloaded data (e.g. deleted Reddit posts, a DPC2022 id without its JSON)."""


class FilteredImageWarning(AICDataWarning):
    """Posts were dropped by the rule their dataset's own preparation applies (RPCD's raw mode: Aestheval's filter)."""


class UndecodableImageWarning(AICDataWarning):
    """Rows were skipped at prepare time because their image file does not decode."""


class EmptySplitWarning(AICDataWarning):
    """A split that nobody asked for by name ended with no rows and was left out (`split`, and `cause`: why)."""

    def __init__(self, message: str, split: str | None = None, cause: str | None = None):
        super().__init__(message)
        self.split, self.cause = split, cause


@dataclass(frozen=True)
class RecordLocation:
    """Where a record lives, for error messages.

    Attributes:
        file: annotation file holding the record.
        index: position of the record in the file (list index, CSV data row, ...), if any.
        record_id: the record's id, if known.
    """

    file: Path
    index: int | str | None = None
    record_id: str | None = None

    def describe(self) -> str:
        """Return e.g. ``"/r/guru_test.json: record 3 (id '12_tart')"``."""
        parts = [str(self.file)]
        if self.index is not None:
            record = f"record {self.index}"
            if self.record_id is not None:
                record += f" (id {self.record_id!r})"
            parts.append(record)
        elif self.record_id is not None:
            parts.append(f"record id {self.record_id!r}")
        return ": ".join(parts)

    def error(self, field_name: str | None, problem: str) -> AICDataError:
        """Build the error for a bad field (``field_name=None`` for the record as a whole)."""
        where = self.describe()
        if field_name is not None:
            where += f": field {field_name!r}"
        return AICDataError(f"{where}: {problem}")

    def with_id(self, record_id: str) -> "RecordLocation":
        return RecordLocation(self.file, self.index, record_id)

