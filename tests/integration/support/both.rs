//! One test body, run once per git implementation: [`on_both!`] makes `gix::NAME` and
//! `git2::NAME` tests that set [`IMPLEMENTATION`] for their thread and call `NAME()`.

use gitopsd::config::GitImplementation;
use std::cell::Cell;

thread_local! {
    /// The implementation the current test runs on (each test has its own thread).
    pub static IMPLEMENTATION: Cell<GitImplementation> =
        const { Cell::new(GitImplementation::Gix) };
}

pub fn implementation() -> GitImplementation {
    IMPLEMENTATION.with(Cell::get)
}

/// [`implementation`] as the config spells it.
pub fn implementation_name() -> &'static str {
    match implementation() {
        GitImplementation::Gix => "gix",
        GitImplementation::Git2 => "git2",
        GitImplementation::Auto => "auto",
    }
}

/// Each named test, once per implementation: `gix::NAME` and `git2::NAME`. Needs
/// `#[macro_use] mod support;` at the crate root (tests/integration/main.rs).
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod gix {
            $(#[test]
            fn $name() {
                $crate::support::IMPLEMENTATION
                    .with(|i| i.set(gitopsd::config::GitImplementation::Gix));
                super::$name();
            })*
        }
        mod git2 {
            $(#[test]
            fn $name() {
                $crate::support::IMPLEMENTATION
                    .with(|i| i.set(gitopsd::config::GitImplementation::Git2));
                super::$name();
            })*
        }
    };
}
