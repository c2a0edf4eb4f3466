"""Requirements and versions: ``Requires-Dist`` lines and version ranges.

``packaging`` is used when available (it comes with opentelemetry-instrumentation); otherwise a
simple parser and comparison that follow PEP 440 for the specifiers packages actually use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata

try:
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.version import InvalidVersion, Version
except ImportError:  # pragma: no cover - packaging comes with opentelemetry-instrumentation
    HAVE_PACKAGING = False
else:
    HAVE_PACKAGING = True


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


_SIMPLE_REQUIREMENT = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*\(?(?P<spec>[^;)]*)\)?"
    r"\s*(?:;(?P<marker>.*))?$"
)
_SIMPLE_SPEC = re.compile(r"^\s*(~=|===|==|!=|<=|>=|<|>)\s*(\S+?)\s*$")
_SIMPLE_VERSION = re.compile(
    r"^\s*v?(?P<release>\d+(?:\.\d+)*)(?:[._-]?(?P<pre>a|b|c|rc|alpha|beta|pre|preview)"
    r"[._-]?(?P<pren>\d*))?(?:[._-]?(?:post|rev|r)[._-]?(?P<post>\d*))?"
    r"(?:[._-]?dev[._-]?(?P<dev>\d*))?"
)
_PRE_RANK = {"a": 0, "alpha": 0, "b": 1, "beta": 1, "c": 2, "rc": 2, "pre": 2, "preview": 2}


def _simple_version_key(text: str) -> tuple[int, ...] | None:
    match = _SIMPLE_VERSION.match(text)
    if match is None:
        return None
    release = [int(part) for part in match.group("release").split(".")]
    release += [0] * (6 - len(release))
    pre = match.group("pre")
    dev = match.group("dev")
    if pre is not None:
        tail = (0, _PRE_RANK[pre], int(match.group("pren") or 0))
    elif dev is not None:
        tail = (-1, 0, int(dev or 0))
    else:
        tail = (1, 0, int(match.group("post") or 0))
    return (*release[:6], *tail)


def _simple_contains(spec: str, version: str) -> bool | None:
    """``version`` against a comma-separated specifier; None when it cannot be compared."""
    have = _simple_version_key(version)
    if have is None:
        return None
    for part in filter(None, (p.strip() for p in spec.split(","))):
        match = _SIMPLE_SPEC.match(part)
        if match is None:
            return None
        op, wanted = match.groups()
        if op == "===":
            if version != wanted:
                return False
            continue
        prefix = wanted.endswith(".*")
        want = _simple_version_key(wanted[:-2] if prefix else wanted)
        if want is None:
            return None
        if prefix:
            length = len(wanted[:-2].split("."))
            same = have[:length] == want[:length]
            if (op == "==" and not same) or (op == "!=" and same):
                return False
            continue
        if op == "~=":
            release = [int(p) for p in re.findall(r"\d+", wanted.split("a")[0].split("b")[0])]
            upper = [*release[:-2], release[-2] + 1] if len(release) >= 2 else [release[0] + 1]
            upper_key = _simple_version_key(".".join(map(str, upper)) + ".dev0")
            if have < want or (upper_key is not None and have >= upper_key):
                return False
            continue
        if op == "<" and want[6] == 1 and have[:6] == want[:6]:
            return False  # PEP 440: "<1.0" excludes 1.0's pre-releases
        ok = {
            "==": have == want, "!=": have != want, "<": have < want,
            "<=": have <= want, ">": have > want, ">=": have >= want,
        }[op]
        if not ok:
            return False
    return True


@dataclass(frozen=True)
class Req:
    """One requirement: canonical name, specifier text, and the extra it belongs to (if any)."""

    name: str
    spec: str
    extra: str | None
    raw: str


def _marker_extra(req: Requirement) -> str | None:
    """``None`` for an unconditional requirement, the extra's name for ``instruments``/
    ``instruments-any``, ``"?"`` for any other condition that does not hold here."""
    marker = req.marker
    if marker is None:
        return None
    try:
        if marker.evaluate({"extra": ""}):
            return None
        for candidate in ("instruments", "instruments-any"):
            if marker.evaluate({"extra": candidate}):
                return candidate
    except Exception:  # an unusual marker: treat it as conditional
        return "?"
    return "?"


def parse_requirement(text: str) -> Req | None:
    """Parse a ``Requires-Dist`` line (``None`` when it cannot be read)."""
    if HAVE_PACKAGING:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            return None
        return Req(_canonical(req.name), str(req.specifier), _marker_extra(req), text)
    match = _SIMPLE_REQUIREMENT.match(text)
    if match is None:
        return None
    marker = match.group("marker") or ""
    extra_match = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
    extra = extra_match.group(1) if extra_match else ("?" if marker.strip() else None)
    return Req(_canonical(match.group("name")), match.group("spec").strip(), extra, text)


def version_in(spec: str, version: str) -> bool | None:
    """True/False when ``version`` is/is not in ``spec``; None when it cannot be compared."""
    if not spec:
        return True
    if HAVE_PACKAGING:
        try:
            return Requirement(f"x{spec}").specifier.contains(Version(version), prereleases=True)
        except (InvalidRequirement, InvalidVersion):
            return None
    return _simple_contains(spec, version)


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
