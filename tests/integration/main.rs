//! gitopsd's integration tests, as one test binary with one module per area (ripgrep's
//! layout): the harness in `support` and the heavy dependencies are compiled and linked once,
//! and every helper the harness offers is used by some test, so nothing needs a `dead_code`
//! allowance. Run one area with `cargo test --test integration git_auth::`.

#[macro_use]
mod support;

mod alerts;
mod api;
mod apply;
mod artifacts;
mod azblob;
mod bucket;
mod cli;
mod daemon;
mod git_auth;
mod git_cache;
mod git_hang;
mod git_refs;
mod git_secret;
mod harness;
mod layers;
mod package;
mod proxy;
mod receivers;
mod reload;
mod render;
mod render_sandbox;
mod service;
mod sidecar;
mod status_table;
mod suspend;
