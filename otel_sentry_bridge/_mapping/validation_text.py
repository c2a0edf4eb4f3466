"""Input values out of validation-error texts (pure).

pydantic's ``str(ValidationError)`` quotes every failing input (``[type=int_parsing,
input_value='carol@example.com', input_type=str]``), and FastAPI's request/response validation
errors quote each error dict, ``'input'`` included (for a missing field: the whole object). Those
texts reach Sentry as an exception's value or a span's status description when a framework
records the exception. Without PII, the inputs are replaced by ``[Filtered]``; what failed
(location, type, message) stays.
"""

from __future__ import annotations

import re

FILTERED = "[Filtered]"

#: pydantic: ``input_value=<repr>, input_type=<name>]`` on one line.
_PYDANTIC_INPUT = re.compile(r"input_value=.*?, input_type=(?=[\w.]+\])")
#: FastAPI: ``  {'type': ..., 'loc': ..., 'msg': ..., 'input': <repr>[, 'ctx': ...]}``.
_FASTAPI_INPUT = re.compile(r", 'input': .*$")


def looks_like_validation_error(text: str) -> bool:
    """Whether ``text`` is (or quotes) a pydantic / FastAPI validation error's text."""
    return "validation error" in text and ("input_value=" in text or "'input': " in text)


def filter_validation_inputs(text: str) -> str:
    """``text`` with the quoted input values of a validation error replaced (other texts are
    returned unchanged)."""
    if not looks_like_validation_error(text):
        return text
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if "input_value=" in line:
            line = _PYDANTIC_INPUT.sub(f"input_value={FILTERED}, input_type=", line)
        if line.lstrip().startswith("{") and "'input': " in line:
            line = _FASTAPI_INPUT.sub(f", 'input': '{FILTERED}'}}", line)
        lines[index] = line
    return "\n".join(lines)
