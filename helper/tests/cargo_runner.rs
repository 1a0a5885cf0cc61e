//! The cargo runner's list of targets it runs as root (`scripts/needs-root`) stays true to the
//! workspace: every name on it is a real target, every test or bench that needs root is on
//! it, and the runner matches a built binary against it exactly. Renaming a kernel test so
//! fails here instead of silently running it without root.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a test that cannot set up must fail loudly

use std::path::{Path, PathBuf};
use std::process::Command;

/// The directories whose top-level `.rs` files are cargo targets named after the file.
const TARGET_DIRS: [&str; 4] = ["helper/tests", "tests", "helper/benches", "benches"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the helper crate is in the workspace")
        .to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(workspace().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The names in scripts/needs-root, comments and blank lines aside.
fn listed() -> Vec<String> {
    read("scripts/needs-root")
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// The `[[bin]]` names of a manifest.
fn bin_names(manifest: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_bin = false;
    for line in read(manifest).lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin {
            if let Some(v) = line.strip_prefix("name = ") {
                out.push(v.trim_matches('"').to_string());
            }
        }
    }
    out
}

/// The test and bench targets: (target name, source file relative to the workspace).
fn targets() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for dir in TARGET_DIRS {
        for e in std::fs::read_dir(workspace().join(dir))
            .expect(dir)
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".rs") {
                if e.path().is_file() {
                    out.push((stem.to_string(), format!("{dir}/{name}")));
                }
            }
        }
    }
    out.sort();
    out
}

#[test]
fn test_and_bench_targets_are_named_after_their_files() {
    // What the checks below take for granted: no manifest gives a test or bench another name
    // or another file, or turns off cargo's discovery of the files in tests/ and benches/.
    for manifest in ["Cargo.toml", "helper/Cargo.toml"] {
        let text = read(manifest);
        assert!(!text.contains("[[test]]"), "{manifest} declares a [[test]]");
        assert!(
            !text.contains("autotests") && !text.contains("autobenches"),
            "{manifest} changes target discovery"
        );
        let mut section = String::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line.to_string();
            } else if section == "[[bench]]" {
                assert!(
                    !line.starts_with("path"),
                    "{manifest}: a [[bench]] with its own path: {line}"
                );
            }
        }
    }
}

#[test]
fn every_name_the_runner_elevates_is_a_real_target() {
    let names = listed();
    assert!(!names.is_empty(), "scripts/needs-root lists nothing");
    let bins: Vec<String> = ["Cargo.toml", "helper/Cargo.toml"]
        .iter()
        .flat_map(|m| bin_names(m))
        .collect();
    assert!(
        bins.contains(&"conntrack-tray-helper".to_string()),
        "{bins:?}"
    );
    let targets = targets();
    for name in &names {
        assert!(
            !name.chars().any(char::is_whitespace),
            "scripts/needs-root: {name:?} has whitespace; the runner matches lines exactly"
        );
        let is_target = targets.iter().any(|(t, _)| t == name) || bins.contains(name);
        assert!(
            is_target,
            "scripts/needs-root lists {name:?}, which is no file {} nor a [[bin]] ({bins:?})",
            TARGET_DIRS.map(|d| format!("{d}/{name}.rs")).join(", ")
        );
    }
}

#[test]
fn every_target_that_needs_root_is_elevated_by_the_runner() {
    // Spelled apart, so this file does not find itself.
    let needle = concat!("root_or", "_skip(");
    let names = listed();
    let mut found = Vec::new();
    for (name, file) in targets() {
        if read(&file).contains(needle) {
            assert!(
                names.contains(&name),
                "{file} calls root_or_skip, so the cargo runner must run it as root: add \
                 {name:?} to scripts/needs-root"
            );
            found.push(name);
        }
    }
    // The kernel tests and the benchmark are among them (a scan that finds none is broken).
    for known in [
        "namespaces",
        "applet_kernel",
        "bench_helper",
        "desktop_hour",
    ] {
        assert!(found.iter().any(|f| f == known), "{known} not in {found:?}");
    }
}

/// Whether the runner would run `binary` as root.
fn runner_elevates(binary: &str) -> bool {
    let out = Command::new(workspace().join("scripts/cargo-runner"))
        .args(["--needs-root", binary])
        .output()
        .expect("run scripts/cargo-runner");
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!(
            "cargo-runner --needs-root {binary}: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[test]
fn the_runner_matches_a_binary_by_its_exact_target_name() {
    let deps = "/w/target/debug/deps";
    for name in listed() {
        assert!(
            runner_elevates(&format!("{deps}/{name}-0123456789abcdef")),
            "{name}"
        );
        assert!(
            runner_elevates(&format!("/w/target/debug/{name}")),
            "{name}"
        );
        // Not a name that merely starts or ends like it, nor a hash that is not cargo's.
        assert!(!runner_elevates(&format!(
            "{deps}/{name}_2-0123456789abcdef"
        )));
        assert!(!runner_elevates(&format!(
            "{deps}/x{name}-0123456789abcdef"
        )));
        assert!(!runner_elevates(&format!("{deps}/{name}-0123")));
        assert!(!runner_elevates(&format!("{deps}/{name}-0123456789abcdeg")));
    }
    // The real binaries: the helper is elevated, this test is not.
    assert!(runner_elevates(env!("CARGO_BIN_EXE_conntrack-tray-helper")));
    let me = std::env::current_exe().expect("current exe");
    assert!(!runner_elevates(me.to_str().expect("utf-8 path")));
}
