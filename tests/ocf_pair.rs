//! The OCF resource agent `ocf/hadisk` against a real replicating pair on
//! loopback (two `hadisk daemon`s): every action on both nodes, its OCF exit
//! code and the master score it leaves, through the life of a promotable
//! clone: Inconsistent (not promotable) → synced (10000 on both) → promote
//! on alpha → promote on beta refused while alpha is Primary → switch-over
//! to beta → data written through beta's export on both disks → notify →
//! stop → Debian's ocf-tester on alpha with beta up as a connected Secondary.
//!
//! Pacemaker is not installed, so each node has a stand-in `crm_master` on
//! its PATH that appends its arguments to the node's `crm_master.log` (the
//! agent calls `crm_master -Q -l reboot -v SCORE | -D`): the last line is the
//! score the agent last set.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

const RES: &str = "data";

/// OCF exit codes (the agent's, as the OCF specification names them).
const OCF_SUCCESS: i32 = 0;
const OCF_ERR_GENERIC: i32 = 1;
const OCF_ERR_CONFIGURED: i32 = 6;
const OCF_NOT_RUNNING: i32 = 7;
const OCF_RUNNING_MASTER: i32 = 8;

/// The scores the agent sets through crm_master.
const SCORE_UPTODATE: &str = "-Q -l reboot -v 10000";
const SCORE_REMOVED: &str = "-Q -l reboot -D";

fn agent_path() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ocf/hadisk")
}

/// Puts `hadisk` and a recording `crm_master` in `node`'s `bin/`.
fn node_bin(node: &Node) {
    let bin_dir = node.path("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let crm = bin_dir.join("crm_master");
    std::fs::write(
        &crm,
        format!(
            "#!/bin/sh\necho \"$*\" >> {}\n",
            node.path("crm_master.log").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&crm, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(bin(), bin_dir.join("hadisk")).unwrap();
}

/// Runs `ocf/hadisk ACTION` as Pacemaker would on `node` (OCF_RESKEY_*
/// parameters, plus `extra` environment); returns (exit code, stderr).
fn agent(node: &Node, action: &str, extra: &[(&str, &str)]) -> (i32, String) {
    let path = format!(
        "{}:{}",
        node.path("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(agent_path());
    cmd.arg(action)
        .env("PATH", path)
        .env("OCF_ROOT", "/usr/lib/ocf")
        .env("OCF_RESOURCE_INSTANCE", "hadisk-data:0")
        .env("OCF_RESKEY_resource", RES)
        .env("OCF_RESKEY_config", node.config())
        .env("OCF_RESKEY_run_dir", node.run_dir())
        .env("OCF_RESKEY_node", &node.name)
        .env("HADISK_CONFIG", node.config())
        .env("HADISK_NODE", &node.name)
        .env("HADISK_RUN_DIR", node.run_dir())
        .env_remove("RUST_LOG");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts that `action` on `node` exits with `want`; returns its stderr.
fn expect(node: &Node, action: &str, extra: &[(&str, &str)], want: i32) -> String {
    let (got, err) = agent(node, action, extra);
    assert_eq!(
        got, want,
        "{} on {}: exit {got}, expected {want}; stderr:\n{err}",
        action, node.name
    );
    err
}

/// The last crm_master call on `node`.
fn last_score(node: &Node) -> String {
    std::fs::read_to_string(node.path("crm_master.log"))
        .unwrap_or_default()
        .lines()
        .last()
        .unwrap_or("")
        .to_string()
}

#[test]
fn ocf_agent_drives_a_replicating_pair_as_a_promotable_clone() {
    require("nbdcopy");
    require("xmllint");
    let pair = Pair::new(RES, 64 * MIB, "");
    let (a, b) = (&pair.a, &pair.b);
    node_bin(a);
    node_bin(b);
    let (_da, _db) = pair.daemons();

    // Informational actions; a resource name not in the config.
    let meta = Command::new(agent_path())
        .arg("meta-data")
        .output()
        .unwrap();
    assert_eq!(meta.status.code(), Some(OCF_SUCCESS));
    let xml = a.path("meta-data.xml");
    std::fs::write(&xml, &meta.stdout).unwrap();
    let (ok, _, err) = run_cmd("xmllint", &["--noout", xml.to_str().unwrap()]);
    assert!(ok, "meta-data is not well-formed XML: {err}");
    expect(a, "validate-all", &[], OCF_SUCCESS);
    let err = expect(
        a,
        "validate-all",
        &[("OCF_RESKEY_resource", "nosuch")],
        OCF_ERR_CONFIGURED,
    );
    assert!(
        err.contains("resource 'nosuch' is not defined in"),
        "validate-all's message: {err}"
    );
    // OCF's rule: stop/monitor of a misconfigured resource never fence.
    expect(
        a,
        "monitor",
        &[("OCF_RESKEY_resource", "nosuch")],
        OCF_NOT_RUNNING,
    );
    expect(a, "stop", &[("OCF_RESKEY_resource", "nosuch")], OCF_SUCCESS);

    // start on both: Secondary, connected; fresh metadata is Inconsistent on
    // both nodes, so neither is promotable (the score is removed).
    for n in [a, b] {
        expect(n, "monitor", &[], OCF_NOT_RUNNING);
        expect(n, "start", &[], OCF_SUCCESS);
    }
    pair.wait_connected(30);
    for n in [a, b] {
        expect(n, "monitor", &[], OCF_SUCCESS);
        assert_eq!(n.resource_status(RES)["disk"], "Inconsistent");
        assert_eq!(last_score(n), SCORE_REMOVED, "{} Inconsistent", n.name);
    }
    let err = expect(a, "promote", &[("OCF_RESKEY_tries", "1")], OCF_ERR_GENERIC);
    assert!(
        err.contains("the local disk is Inconsistent, not UpToDate: refusing to promote"),
        "alpha's promote: {err}"
    );

    // The initial sync, forced on alpha through hadisk, then alpha back to
    // Secondary: both UpToDate Secondaries, both promotable.
    pair.first_sync();
    a.ok(&["secondary", RES]);
    for n in [a, b] {
        expect(n, "monitor", &[], OCF_SUCCESS);
        assert_eq!(last_score(n), SCORE_UPTODATE, "{} UpToDate", n.name);
    }

    // promote alpha; beta stays Secondary with the UpToDate score.
    expect(a, "promote", &[], OCF_SUCCESS);
    expect(a, "monitor", &[], OCF_RUNNING_MASTER);
    expect(b, "monitor", &[], OCF_SUCCESS);
    assert_eq!(last_score(b), SCORE_UPTODATE);
    // alpha's new role reaches beta with alpha's next state message.
    wait_until("beta to see alpha as Primary", 20, || {
        b.resource_status(RES)["peer"]["role"] == "Primary"
    });
    // Single primary: beta is refused while alpha is Primary.
    let err = expect(b, "promote", &[("OCF_RESKEY_tries", "1")], OCF_ERR_GENERIC);
    assert!(
        err.contains("promote failed: hadisk: data: the peer is Primary: demote it first"),
        "beta's promote: {err}"
    );
    expect(b, "monitor", &[], OCF_SUCCESS);
    expect(a, "monitor", &[], OCF_RUNNING_MASTER);

    // Switch-over: demote alpha, promote beta.
    expect(a, "demote", &[], OCF_SUCCESS);
    expect(a, "monitor", &[], OCF_SUCCESS);
    expect(b, "promote", &[], OCF_SUCCESS);
    expect(b, "monitor", &[], OCF_RUNNING_MASTER);
    expect(a, "monitor", &[], OCF_SUCCESS);
    assert_eq!(last_score(a), SCORE_UPTODATE);

    // Data written through beta's export is on both disks (protocol C).
    let src = b.path("src.bin");
    sh(
        "sh",
        &[
            "-c",
            &format!("head -c {} /dev/urandom > {}", 16 * MIB, src.display()),
        ],
    );
    sh("nbdcopy", &[src.to_str().unwrap(), &b.uri(RES)]);
    let usable = pair.usable_bytes();
    let (sum_a, sum_b) = pair.checksums(usable);
    assert_eq!(
        sum_a, sum_b,
        "the backing disks differ after writes on beta"
    );
    assert_eq!(
        sha256_prefix(&pair.disk_a, 16 * MIB),
        sha256_prefix(&src, 16 * MIB),
        "alpha's disk does not hold what was written through beta"
    );

    // notify: pre/post promote and demote, with Pacemaker's variables.
    for (kind, op) in [
        ("pre", "promote"),
        ("post", "promote"),
        ("pre", "demote"),
        ("post", "demote"),
    ] {
        let env = [
            ("OCF_RESKEY_CRM_meta_notify", "true"),
            ("OCF_RESKEY_CRM_meta_notify_type", kind),
            ("OCF_RESKEY_CRM_meta_notify_operation", op),
            ("OCF_RESKEY_CRM_meta_notify_promote_uname", "beta"),
            ("OCF_RESKEY_CRM_meta_notify_demote_uname", "alpha"),
            ("OCF_RESKEY_CRM_meta_notify_master_uname", "beta"),
            ("OCF_RESKEY_CRM_meta_notify_slave_uname", "alpha"),
            ("OCF_RESKEY_CRM_meta_notify_start_uname", ""),
            ("OCF_RESKEY_CRM_meta_notify_stop_uname", ""),
            ("OCF_RESKEY_CRM_meta_clone_max", "2"),
            ("OCF_RESKEY_CRM_meta_master_max", "1"),
        ];
        for n in [a, b] {
            expect(n, "notify", &env, OCF_SUCCESS);
        }
    }
    expect(b, "monitor", &[], OCF_RUNNING_MASTER);
    expect(a, "monitor", &[], OCF_SUCCESS);

    // stop both (beta is Primary: the agent demotes it first).
    for n in [b, a] {
        expect(n, "stop", &[], OCF_SUCCESS);
        expect(n, "monitor", &[], OCF_NOT_RUNNING);
        assert_eq!(last_score(n), SCORE_REMOVED, "{} stopped", n.name);
        expect(n, "stop", &[], OCF_SUCCESS);
    }
    let (sum_a, sum_b) = pair.checksums(usable);
    assert_eq!(sum_a, sum_b, "the backing disks differ after stop");

    // Debian's ocf-tester on alpha while beta runs as a connected
    // Secondary: its own sequence of every action, promotion included.
    require("ocf-tester");
    expect(b, "start", &[], OCF_SUCCESS);
    let path = format!(
        "{}:{}",
        a.path("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let opt = |k: &str, v: &std::path::Path| format!("{k}={}", v.display());
    let out = Command::new("ocf-tester")
        .args(["-v", "-n", "hadisk-ocf-pair", "-o", "resource=data", "-o"])
        .arg(opt("hadisk", std::path::Path::new(bin())))
        .arg("-o")
        .arg(opt("config", &a.config()))
        .arg("-o")
        .arg(opt("run_dir", &a.run_dir()))
        .args(["-o", "node=alpha"])
        .arg(agent_path())
        .env("PATH", path)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "ocf-tester on the pair:\n{text}");
    assert!(
        text.contains("Testing: promotion of promoted resource"),
        "ocf-tester skipped the promotable-clone checks:\n{text}"
    );
    expect(a, "monitor", &[], OCF_NOT_RUNNING);
    expect(b, "stop", &[], OCF_SUCCESS);
}
