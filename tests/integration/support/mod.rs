//! Integration-test harness: real git repositories and real git servers on loopback.
//!
//! Every test module of the one integration binary uses it through `crate::support`.
//!
//! - [`Repo`] builds history with the git CLI in a temp dir and mirrors it into a bare
//!   [`BareRepo`], which is what every server serves ([`Repo::push_all`] publishes).
//! - [`file_url`], [`GitDaemon`] (`git://`) and [`HttpGitServer`] (smart HTTP through nginx,
//!   fcgiwrap and `git http-backend`) serve bare repositories.
//! - [`StallingServer`] is a hung git server: silent, or a proxy that stops forwarding
//!   mid-advertisement or mid-pack.
//! - [`Proxy`] is a real forward HTTP proxy (tinyproxy) whose log tells which requests and
//!   tunnels went through it.
//!
//! Every server gets its own temp dir and a free loopback port, so tests may run in parallel
//! threads and several test binaries at once. Every process the harness starts runs in a
//! process group of its own, which is stopped (and reaped) on drop, also when a test panics; a
//! watchdog kills the group should the test process die without unwinding.

#[macro_use]
mod both;
pub mod azurite;
mod daemon;
mod data;
mod git;
mod http;
pub mod kube;
mod objects;
mod output;
mod process;
mod proxy;
mod running;
pub mod seaweed;
mod snapshot;
mod sshd;
mod stall;
mod tls;
pub mod token_server;

use std::path::PathBuf;

pub use both::{implementation, implementation_name, IMPLEMENTATION};
pub use daemon::GitDaemon;
pub use data::{noise, peak_rss_kib};
pub use git::{file_url, git, git_command, git_output, Repo};
pub use http::{HttpGitServer, TlsFiles};
pub use output::{describe, sha256_file, text};
pub use process::{free_port, port_in_use};
pub use proxy::Proxy;
pub use running::Running;
pub use snapshot::unpack;
pub use sshd::{fingerprint, keygen, SshServer};
pub use stall::StallingServer;
pub use tls::{openssl, TestPki};

/// The `gitopsd` binary that cargo built for this test run.
pub fn gitopsd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gitopsd"))
}
