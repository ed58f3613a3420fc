//! Events in and out, as Flux's notification-controller: webhook receivers that trigger a
//! sync ([`receiver`]). The receivers' listener and the alert providers build on these.

pub mod receiver;
