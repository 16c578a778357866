"""``${VAR}`` references in job files: the one rule for finding and substituting them.

Used by ``speechbed.jobs`` (every job file), the container executor (which variables a job
needs) and the reports (cache folders named in run configs).

``${VAR}`` and ``${VAR:-default}`` are replaced line by line from the environment; an unset
variable without default is an error naming the file, the line and the variable; ``$${``
writes a literal ``${``; a default cannot hold another ``${...}``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from speechbed.errors import UserInputError

_VARIABLE = re.compile(r"\$(\$?)\{([^}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def substitute_variables(
    text: str, source: str | Path, environ: Mapping[str, str] | None = None
) -> str:
    """Replace ``${VAR}`` / ``${VAR:-default}`` line by line; unset variables are errors."""
    environ = os.environ if environ is None else environ
    lines = text.split("\n")  # not splitlines(): it also splits at \x1c-\x1e, \v, \f, ...
    for number, line in enumerate(lines, start=1):

        def replace(match: re.Match[str], number: int = number) -> str:
            if match.group(1):  # "$${...}" is an escaped literal "${...}"
                return "${" + match.group(2) + "}"
            name, has_default, default = match.group(2).partition(":-")
            if "${" in default:
                raise UserInputError(
                    f"{source}:{number}: '{match.group(0)}': a default cannot hold another "
                    "${...} reference; set the variable instead"
                )
            if not _NAME.fullmatch(name):
                raise UserInputError(
                    f"{source}:{number}: '{match.group(0)}' is not a variable reference; "
                    "write ${NAME} or ${NAME:-default} (or $${...} for a literal)"
                )
            if name in environ:
                return environ[name]
            if has_default:
                return default
            raise UserInputError(
                f"{source}:{number}: variable {name} is not set; export it, set it in your "
                f"ENV_FILE, or write ${{{name}:-default}}"
            )

        lines[number - 1] = _VARIABLE.sub(replace, line)
    return "\n".join(lines)


def referenced_variables(text: str) -> set[str]:
    """The names ``substitute_variables`` would look up in ``text``.

    ``${NAME}`` and ``${NAME:-default}`` count; ``$${...}`` (a literal) and references that
    are not a variable name do not. Called by the container executor, which passes a job
    exactly the variables its job file names.
    """
    names: set[str] = set()
    for line in text.split("\n"):  # as substitute_variables reads it: line by line
        for match in _VARIABLE.finditer(line):
            name = match.group(2).partition(":-")[0]
            if not match.group(1) and _NAME.fullmatch(name):
                names.add(name)
    return names
