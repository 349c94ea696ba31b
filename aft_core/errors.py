"""The one error type the project raises for bad input, and the message shape it promises.

Every message names the file, the field and the fix, so a user can act on it without
reading a traceback. The CLI prints it and exits 2; Prefect tasks let it fail the run.
"""

from __future__ import annotations

from pathlib import Path


class AftInputError(ValueError):
    """Bad input: a file, a field or a setting that cannot be used as given."""

    def __init__(self, where: str | Path, field: str, problem: str, fix: str):
        self.where, self.field, self.problem, self.fix = str(where), field, problem, fix
        super().__init__(f"{where}: field '{field}': {problem}. Fix: {fix}")
