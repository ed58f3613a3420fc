//! The Debian package: built by `cargo deb` from the binary under test, inspected with
//! `dpkg-deb`, and (when the tests run as root) installed, checked and purged with dpkg. One
//! test: cargo-deb stages files under the target dir, so two builds must not run at once.

use crate::support::{describe, gitopsd_bin};
use std::path::{Path, PathBuf};
use std::process::Command;

fn cache_dir() -> PathBuf {
    std::env::var_os("GITOPSD_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/gitopsd")
        })
}

/// Builds the package around the binary under test: `--no-build` with the profile that built
/// it (cargo-deb maps `target/release/` in the asset list to that profile's directory), fast
/// compression (a debug binary is large). cargo-deb 3.6 warns that the dev profile is meant
/// for releases only; packaging the binary the other tests ran is the point here.
fn build_deb(out: &Path) -> PathBuf {
    let cargo_deb = cache_dir().join("cargo-deb/bin/cargo-deb");
    assert!(
        cargo_deb.is_file(),
        "{} is missing: scripts/install-test-deps.sh installs it",
        cargo_deb.display()
    );
    let profile_dir = gitopsd_bin()
        .parent()
        .and_then(Path::file_name)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap();
    let profile = if profile_dir == "debug" {
        "dev"
    } else {
        profile_dir.as_str()
    };
    let deb = out.join("gitopsd.deb");
    let output = Command::new(&cargo_deb)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["--no-build", "--fast", "--profile", profile, "--output"])
        .arg(&deb)
        .output()
        .unwrap();
    assert!(output.status.success(), "cargo deb: {}", describe(&output));
    deb
}

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let output = Command::new("dpkg-deb")
        .args(args)
        .arg(deb)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "dpkg-deb {args:?}: {}",
        describe(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_deb_holds_the_binary_the_unit_and_a_conffile_and_installs_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let deb = build_deb(dir.path());

    let contents = dpkg_deb(&["--contents"], &deb);
    let paths: Vec<&str> = contents
        .lines()
        .filter_map(|line| line.split_whitespace().last())
        .collect();
    for wanted in [
        "./usr/bin/gitopsd",
        "./etc/gitopsd/config.yaml",
        "./usr/share/doc/gitopsd/README.md",
    ] {
        assert!(paths.contains(&wanted), "{wanted} missing:\n{contents}");
    }
    assert!(
        paths
            .iter()
            .any(|p| p.ends_with("/systemd/system/gitopsd.service")),
        "no unit:\n{contents}"
    );
    let binary = contents
        .lines()
        .find(|line| line.ends_with("./usr/bin/gitopsd"))
        .unwrap();
    let mut columns = binary.split_whitespace();
    assert_eq!(columns.next(), Some("-rwxr-xr-x"), "{binary}");
    assert!(
        matches!(columns.next(), Some("0/0" | "root/root")),
        "owned by root: {binary}"
    );

    let control = dpkg_deb(&["--field"], &deb);
    assert!(control.contains("Package: gitopsd"), "{control}");
    assert!(control.contains("Section: admin"), "{control}");

    let meta = dir.path().join("control");
    let output = Command::new("dpkg-deb")
        .arg("--control")
        .arg(&deb)
        .arg(&meta)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let conffiles = std::fs::read_to_string(meta.join("conffiles")).unwrap();
    assert!(
        conffiles.lines().any(|l| l == "/etc/gitopsd/config.yaml"),
        "{conffiles}"
    );
    // The maintainer scripts cargo-deb generated enable the unit on install.
    let postinst = std::fs::read_to_string(meta.join("postinst")).unwrap();
    assert!(postinst.contains("deb-systemd-helper"), "{postinst}");

    install_check_purge(&deb);
}

/// dpkg -i, the installed binary checks the installed config, dpkg --purge. Only as root, and
/// never over a gitopsd that dpkg did not install from this test.
fn install_check_purge(deb: &Path) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: the install check is skipped (the package contents are checked)");
        return;
    }
    let installed = Command::new("dpkg-query")
        .args(["--show", "--showformat=${Status}", "gitopsd"])
        .output()
        .unwrap();
    if Path::new("/usr/bin/gitopsd").exists()
        || String::from_utf8_lossy(&installed.stdout).contains("installed")
    {
        panic!("a gitopsd is already installed on this machine; refusing to replace it");
    }
    let install = Command::new("dpkg")
        .arg("--install")
        .arg(deb)
        .output()
        .unwrap();
    // Purge whatever happens next, so a failed assertion leaves no package behind.
    struct Purge;
    impl Drop for Purge {
        fn drop(&mut self) {
            let _ = Command::new("dpkg").args(["--purge", "gitopsd"]).output();
        }
    }
    let _purge = Purge;
    assert!(
        install.status.success(),
        "dpkg --install: {}",
        describe(&install)
    );
    let check = Command::new("/usr/bin/gitopsd")
        .args(["check", "--config", "/etc/gitopsd/config.yaml"])
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", describe(&check));
    let unit = [
        "/usr/lib/systemd/system/gitopsd.service",
        "/lib/systemd/system/gitopsd.service",
    ];
    assert!(
        unit.iter().any(|u| Path::new(u).is_file()),
        "unit not installed"
    );
    drop(_purge);
    assert!(
        !Path::new("/usr/bin/gitopsd").exists(),
        "purge left the binary"
    );
    assert!(
        !Path::new("/etc/gitopsd/config.yaml").exists(),
        "purge left the conffile"
    );
}
