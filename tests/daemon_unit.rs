//! The shipped systemd unit: `systemd-analyze verify` accepts it and `systemd-analyze security`
//! rates its exposure 2.0 or lower. Both run offline (no systemd needed); `verify` checks that
//! `ExecStart=` exists, so the unit is checked with the built binary in its place.

mod support;

use std::process::Command;

use support::peers::repo_root;

const MAX_EXPOSURE: f64 = 2.0;

/// The shipped unit, with `ExecStart=` pointing at the binary under test, in a temp directory.
fn unit_under_test() -> (tempfile::TempDir, std::path::PathBuf) {
    let unit = std::fs::read_to_string(repo_root().join("deploy/systemd/mcp-relay.service"))
        .expect("read the shipped unit");
    assert!(unit.contains("/usr/local/bin/mcp-relay serve"));
    let unit = unit.replace("/usr/local/bin/mcp-relay", env!("CARGO_BIN_EXE_mcp-relay"));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mcp-relay.service");
    std::fs::write(&path, unit).expect("write the unit");
    (dir, path)
}

fn systemd_analyze(args: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("systemd-analyze is missing ({e}): install Debian's `systemd` package")
        })
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let (_dir, unit) = unit_under_test();
    let output = systemd_analyze(&["verify", unit.to_str().expect("path")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "verify failed:\n{stderr}");
    assert!(
        !stderr.contains("mcp-relay.service"),
        "verify warned about the unit:\n{stderr}"
    );
}

#[test]
fn the_unit_is_hardened_to_an_exposure_of_2_or_lower() {
    let (_dir, unit) = unit_under_test();
    let output = systemd_analyze(&[
        "security",
        "--offline=true",
        "--no-pager",
        unit.to_str().expect("path"),
    ]);
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no exposure level in:\n{text}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable score in {line:?}"));
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE}:\n{text}"
    );
}
