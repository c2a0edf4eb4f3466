// Bundle the parts of Sentry's browser SDK the test page uses (sentry-entry.js) into one IIFE
// that defines window.Sentry: @sentry/browser ships no CDN bundle in its npm package.
// Usage: node build.mjs [outfile]   (default: build/sentry.bundle.js)
import { build } from "esbuild";

await build({
  entryPoints: [new URL("./sentry-entry.js", import.meta.url).pathname],
  outfile: process.argv[2] ?? new URL("./build/sentry.bundle.js", import.meta.url).pathname,
  bundle: true,
  format: "iife",
  globalName: "Sentry",
  // the SDK's debug build: `debug: true` logs to the console (in Chromium's log on failure)
  conditions: ["development"],
  target: "es2020",
  logLevel: "warning",
});
