// Spotlight's sidecar (@spotlightjs/spotlight), started as a library on 127.0.0.1 for
// tests/test_spotlight.py.
//
//   node server.mjs [PORT] [--exit-on-stdin-eof]      (PORT: argv, else $SPOTLIGHT_PORT, else 0)
//
// Prints `READY <port>` on stdout once listening (port 0 = the OS picks a free one), logs go to
// stderr, exits on SIGTERM/SIGINT (and, with --exit-on-stdin-eof, when stdin closes, so an
// orphaned sidecar never outlives the test that started it).
//
// Why a library and not the `spotlight` CLI: the CLI (dist/run.js) imports dist/instrument.js,
// which calls Sentry.init() with Spotlight's own hard-coded DSN and `enabled: true`; no flag or
// environment variable turns that off. The library entry (exports "." = dist/server/main.js)
// never calls init(); its startSpan()/captureException() calls are no-ops without a client.
// Below we also drop SENTRY_* variables and refuse to run if a Sentry client exists anyway.
//
// Why the listen() shim: startServer() calls @hono/node-server's serve({ fetch, port }) without
// a hostname, which would listen on every interface. Every listen(port, ...) in this process is
// forced onto 127.0.0.1, and the bound address is checked before READY is printed.
import net from "node:net";

const HOST = "127.0.0.1";

const args = process.argv.slice(2);
const exitOnStdinEof = args.includes("--exit-on-stdin-eof");
const portArg = args.find((arg) => !arg.startsWith("--")) ?? process.env.SPOTLIGHT_PORT ?? "0";
if (!/^\d+$/.test(portArg) || Number(portArg) > 65535) {
  console.error(`server.mjs: bad port ${JSON.stringify(portArg)}`);
  process.exit(2);
}
const requestedPort = Number(portArg);

// Nothing in this process may pick up a DSN (or a Spotlight URL pointing back at itself).
for (const key of Object.keys(process.env)) {
  if (key.startsWith("SENTRY_")) delete process.env[key];
}
delete process.env.SPOTLIGHT_CAPTURE; // would write every payload to a file in the cwd

const originalListen = net.Server.prototype.listen;
net.Server.prototype.listen = function listenOnLoopback(...listenArgs) {
  const first = listenArgs[0];
  if (typeof first === "number" || (typeof first === "string" && /^\d+$/.test(first))) {
    const callback = typeof listenArgs.at(-1) === "function" ? listenArgs.at(-1) : undefined;
    return originalListen.call(this, { port: Number(first), host: HOST }, callback);
  }
  if (first && typeof first === "object" && ("port" in first) && !("path" in first)) {
    return originalListen.call(this, { ...first, host: HOST }, ...listenArgs.slice(1));
  }
  return originalListen.apply(this, listenArgs);
};

const { startServer } = await import("@spotlightjs/spotlight");
const Sentry = await import("@sentry/node");

if (Sentry.getClient() !== undefined) {
  console.error("server.mjs: a Sentry client is initialised; refusing to run (telemetry)");
  process.exit(3);
}

let server;
try {
  // No basePath/filesToServe: API only (POST /stream, GET /stream as SSE, DELETE /clear, ...).
  server = await startServer({ port: requestedPort });
} catch (error) {
  console.error(`server.mjs: cannot start Spotlight: ${error?.stack ?? error}`);
  process.exit(1);
}

const address = server.address();
if (!address || typeof address !== "object" || address.address !== HOST) {
  console.error(`server.mjs: listening on ${JSON.stringify(address)}, not ${HOST}; stopping`);
  process.exit(4);
}

let stopping = false;
function stop() {
  if (stopping) return;
  stopping = true;
  server.close(() => process.exit(0));
  server.closeAllConnections(); // open SSE streams would keep close() waiting
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
if (exitOnStdinEof) {
  process.stdin.on("end", stop);
  process.stdin.on("error", stop);
  process.stdin.resume();
}

process.stdout.write(`READY ${address.port}\n`);
