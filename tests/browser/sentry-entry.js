// The parts of Sentry's browser SDK the test page uses (bundled by build.mjs into one IIFE,
// window.Sentry): @sentry/browser ships no prebuilt CDN bundle in its npm package.
export {
  browserTracingIntegration,
  getReplay,
  init,
  replayIntegration,
} from "@sentry/browser";
