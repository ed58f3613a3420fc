//! Events in and out, as Flux's notification-controller:
//!
//! - [`receiver`]: is an incoming webhook genuine, and does it trigger a sync (pure
//!   functions; the listener that serves them is `api::receivers`, above the engine it
//!   triggers);
//! - [`alert`]: what the engine reports (new artifact, failed fetch, applied or failed
//!   kustomization), filtered by the configured alerts and delivered to providers off the
//!   reconcile path;
//! - [`secret`]: reading the receivers' and providers' secrets;
//! - [`metrics`]: the counters both sides add to `/metrics`.

pub mod alert;
pub mod metrics;
pub mod receiver;
pub mod secret;
