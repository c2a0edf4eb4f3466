"""Every Python example in docs/ runs, against a loopback receiver, and its spans arrive."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sentry_receiver import SentryReceiver

DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)

PREAMBLE = """
from opentelemetry.sdk.trace import TracerProvider as _TP
provider = _TP()
"""

EPILOGUE = """
from opentelemetry import trace as _trace
from opentelemetry.trace import SpanKind as _Kind
_provider = _trace.get_tracer_provider()
if not hasattr(_provider, "force_flush"):
    _provider = provider
_tracer = _provider.get_tracer("docs-example")
with _tracer.start_as_current_span("docs example", kind=_Kind.SERVER):
    with _tracer.start_as_current_span("child"):
        pass
_provider.force_flush()
"""

PAGES = sorted(p for p in DOCS.rglob("*.md") if BLOCK.search(p.read_text()))


def test_docs_have_python_examples() -> None:
    assert {p.name for p in PAGES} >= {"getting-started.md", "configuration.md"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_python_examples_run(page: Path, tmp_path: Path) -> None:
    blocks = [textwrap.dedent(b) for b in BLOCK.findall(page.read_text())]
    script = PREAMBLE + "\n".join(blocks) + EPILOGUE
    path = tmp_path / "example.py"
    path.write_text(script)
    with SentryReceiver() as receiver:
        env = {"PATH": "/usr/bin:/bin", "SENTRY_DSN": receiver.dsn(),
               "SENTRY_BRIDGE_LATE_SPAN_GRACE": "0", "_SENTRY_BRIDGE_RAISE_INTERNAL_ERRORS": "1"}
        result = subprocess.run([sys.executable, str(path)], env=env, capture_output=True,
                                text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        names = [t["transaction"] for t in receiver.wait_for_transactions(1, timeout=10)]
        assert "docs example" in names
        receiver.assert_no_problems()


LINK = re.compile(r"\]\(([^)\s#]+\.md)(#[^)]*)?\)")


@pytest.mark.parametrize("page", sorted(DOCS.rglob("*.md")), ids=lambda p: str(p.relative_to(DOCS)))
def test_relative_links_resolve(page: Path) -> None:
    """Every relative link to another docs page points at a page that exists."""
    missing = [target for target, _ in LINK.findall(page.read_text())
               if "://" not in target and not (page.parent / target).resolve().is_file()]
    assert missing == []
