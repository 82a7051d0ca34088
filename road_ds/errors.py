"""One error type for bad input, so every message names the file, the row and the field."""

from __future__ import annotations

import sys


class DataError(ValueError):
    """Bad user input: a data file, a recipe or a store that cannot be used as given.

    The message always says where: ``FILE: row ROW, field 'FIELD': what is wrong``.
    """

    def __init__(self, path, message: str, row=None, field: str | None = None):
        self.path = str(path) if path is not None else None
        self.row = row
        self.field = field
        self.reason = message
        where = []
        if self.path:
            where.append(self.path)
        detail = []
        if row is not None:
            detail.append(f"row {row}")
        if field is not None:
            detail.append(f"field '{field}'")
        prefix = ": ".join(where)
        if detail:
            prefix = f"{prefix}: {', '.join(detail)}" if prefix else ", ".join(detail)
        super().__init__(f"{prefix}: {message}" if prefix else message)

    def __reduce__(self):  # pickled whole (from a DataLoader worker to the training process), not as its text
        return (DataError, (self.path, self.reason, self.row, self.field))


def run_job(prog: str, body, *args, code: int = 2) -> int:
    """A job's main(): run its body; bad input ends it as one line `PROG: error: ...` and exit `code`."""
    try:
        body(*args)
    except DataError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return code
    return 0
