"""The Flask app tests/test_browser.py opens in headless Chromium (under opentelemetry-instrument).

Its pages load Sentry's browser SDK from this app (``/sentry.bundle.js``, bundled by the test
from the pinned ``@sentry/browser`` of package.json) and send to ``BROWSER_SENTRY_DSN``:

* ``/page`` gets its meta tags from ``SentryMetaTagsMiddleware``;
* ``/jinja-page`` renders them itself with ``{{ sentry_meta_tags() }}`` (the middleware then
  leaves the page alone).

Once loaded, each page calls ``/api/ping`` with ``fetch`` (the SDK adds its trace headers).
``?lifecycle=static`` makes the SDK send a ``pageload`` transaction; by default (the SDK's
``traceLifecycle: "stream"``) it streams the ``pageload`` segment span as a v2 ``span`` item.

Environment: ``BROWSER_PORT`` (set by tests/apps.py), ``BROWSER_SENTRY_DSN``,
``BROWSER_SENTRY_BUNDLE`` (the bundle's path).
"""

from __future__ import annotations

import os
import signal
import sys

from flask import Flask, render_template_string, request, send_file

from otel_sentry_bridge import SentryMetaTagsMiddleware, meta_tags

PAGE = """<!doctype html>
<html lang="en">
<head>
{%- if jinja %}{{ sentry_meta_tags() }}{% endif %}
<meta charset="utf-8">
<title>{{ title }}</title>
<script src="/sentry.bundle.js"></script>
<script>
Sentry.init({
  dsn: {{ dsn|tojson }},
  release: "browser-test@1.0",
  integrations: [Sentry.browserTracingIntegration(), Sentry.replayIntegration()],
  tracesSampleRate: 1.0,
  traceLifecycle: {{ lifecycle|tojson }},
  replaysSessionSampleRate: 1.0,
  replaysOnErrorSampleRate: 1.0,
  debug: true,
});
// An API call of the page: it carries sentry-trace and baggage (with the replay id). The replay
// starts asynchronously (a cold Chromium can load the page first): wait for its id, 5 s at most.
window.addEventListener("load", () => {
  const since = Date.now();
  const ping = () => {
    const replay = Sentry.getReplay();
    if ((replay && replay.getReplayId()) || Date.now() - since > 5000) fetch("/api/ping");
    else setTimeout(ping, 20);
  };
  ping();
});
</script>
</head>
<body><h1>{{ title }}</h1><p>Rendered by Flask under OpenTelemetry.</p></body>
</html>
"""

app = Flask(__name__)
# Zero-code Flask instrumentation wraps wsgi_app when the app is created: this wraps that, so
# the request's server span is current when the page's response starts.
app.wsgi_app = SentryMetaTagsMiddleware(app.wsgi_app)  # type: ignore[method-assign]
app.jinja_env.globals["sentry_meta_tags"] = meta_tags


def _page(title: str, jinja: bool) -> str:
    lifecycle = "static" if request.args.get("lifecycle") == "static" else "stream"
    return render_template_string(PAGE, title=title, jinja=jinja, lifecycle=lifecycle,
                                  dsn=os.environ["BROWSER_SENTRY_DSN"])


@app.route("/health")
def health() -> str:
    return "ok"


@app.route("/page")
def page() -> str:
    return _page("middleware", jinja=False)


@app.route("/jinja-page")
def jinja_page() -> str:
    return _page("jinja", jinja=True)


@app.route("/api/ping")
def ping() -> dict[str, bool]:
    return {"ok": True}


@app.route("/sentry.bundle.js")
def bundle() -> object:
    return send_file(os.environ["BROWSER_SENTRY_BUNDLE"], mimetype="text/javascript",
                     max_age=3600)


@app.route("/favicon.ico")
def favicon() -> tuple[str, int]:
    return "", 204


def main() -> None:
    # SIGTERM -> SystemExit: the bridge flushes at exit.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    app.run(host="127.0.0.1", port=int(os.environ["BROWSER_PORT"]), threaded=True)


if __name__ == "__main__":
    main()
