//! What can be checked of the container image without `docker build` (no Docker daemon in CI):
//! the worker binary needs only the shared libraries the runtime image has, at glibc versions
//! it has. The runtime stage of `deploy/Dockerfile` is `debian:bookworm-slim` (glibc 2.36, with
//! libc6 and libgcc-s1, both Essential in Debian), and the build stage is the same Debian release
//! (`rust:1-bookworm`), so the binary built there links as this one does. `hadolint` checks the
//! Dockerfile itself (scripts/test.sh). Needs `readelf` (binutils); fails loudly without it.

use std::process::Command;

/// The runtime image and its glibc.
const RUNTIME_IMAGE: &str = "debian:bookworm-slim";
const RUNTIME_GLIBC: (u32, u32) = (2, 36);
/// Every library the runtime image provides that a Rust binary may need.
const RUNTIME_LIBRARIES: &[&str] =
    &["libc.so.6", "libm.so.6", "libgcc_s.so.1", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1"];

fn readelf(flag: &str) -> String {
    let binary = env!("CARGO_BIN_EXE_worker");
    let out = Command::new("readelf")
        .args([flag, "--wide", binary])
        .output()
        .unwrap_or_else(|e| panic!("readelf is needed to check the worker binary (apt-get install binutils): {e}"));
    assert!(out.status.success(), "readelf {flag} {binary}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `GLIBC_x.y` versions named in `readelf -V` output.
fn glibc_versions(text: &str) -> Vec<(u32, u32)> {
    text.split("GLIBC_")
        .skip(1)
        .filter_map(|rest| {
            let v: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
            let mut parts = v.split('.').filter_map(|p| p.parse::<u32>().ok());
            Some((parts.next()?, parts.next().unwrap_or(0)))
        })
        .collect()
}

#[test]
fn the_worker_binary_runs_on_the_runtime_image() {
    let dockerfile = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/Dockerfile"))
        .unwrap_or_else(|e| panic!("deploy/Dockerfile: {e}"));
    let froms: Vec<&str> = dockerfile.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.last(), Some(&format!("FROM {RUNTIME_IMAGE}").as_str()), "the runtime stage changed: {froms:?}");
    assert!(froms.first().is_some_and(|f| f.contains("-bookworm")), "build on the runtime's Debian: {froms:?}");

    let dynamic = readelf("-d");
    let needed: Vec<&str> = dynamic
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    assert!(!needed.is_empty(), "no NEEDED entries: is the binary dynamically linked?\n{dynamic}");
    for lib in &needed {
        assert!(RUNTIME_LIBRARIES.contains(lib), "the worker needs {lib}, which {RUNTIME_IMAGE} lacks");
    }
    let versions = glibc_versions(&readelf("-V"));
    let newest = versions.iter().max().copied().unwrap_or_else(|| panic!("no GLIBC symbol versions"));
    assert!(newest <= RUNTIME_GLIBC, "the worker needs glibc {newest:?}, {RUNTIME_IMAGE} has {RUNTIME_GLIBC:?}");
    println!("deploy image: the worker needs {needed:?} and glibc up to {}.{}", newest.0, newest.1);
}

#[test]
fn glibc_versions_are_read_from_readelf_output() {
    let text = "  0x0010:   Name: GLIBC_2.2.5  Flags: none\n  Name: GLIBC_2.34\n  Name: GLIBC_PRIVATE\n  GLIBC_2.17";
    assert_eq!(glibc_versions(text), vec![(2, 2), (2, 34), (2, 17)]);
}
