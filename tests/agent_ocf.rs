//! The OCF resource agent `ocf/hadisk` against a real standalone daemon:
//! every action and its OCF exit code, and the master scores
//! (`tests/ocf_hadisk.sh` does the work; this runs it with the binary cargo
//! built).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

#[test]
fn every_ocf_action_returns_its_exit_code_against_a_real_daemon() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("sh")
        .arg(root.join("tests/ocf_hadisk.sh"))
        .arg(env!("CARGO_BIN_EXE_hadisk"))
        .arg(root.join("ocf/hadisk"))
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("FAIL"), "{text}");
    // The script checked these; make sure it got that far.
    for line in [
        "ok: promote -> 1",
        "ok: monitor -> 8",
        "ok: crm_master -Q -l reboot -v 10000",
        "ok: stop -> 0",
        "ok: ocf-tester passed",
        "Testing: promotion of promoted resource",
    ] {
        assert!(text.contains(line), "missing '{line}' in:\n{text}");
    }
}
