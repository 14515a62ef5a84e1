//! `hadisk agent` refusals that need no network: authkeys readable by
//! others, a missing agent for the client commands, a node not in ha.cf.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "agent_harness.rs"]
mod harness;

use std::os::unix::fs::PermissionsExt;

use harness::*;

fn fails(node: &AgentNode, args: &[&str]) -> String {
    let out = node.run(args);
    assert_eq!(out.status.code(), Some(1), "hadisk {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn authkeys_not_mode_600_is_refused() {
    let node = AgentNode::new("alpha", "unused", &hacf(""), "k", &group(""));
    let keys = node.ha_dir().join("authkeys");
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
    let ha = path_str(&node.ha_dir());
    let err = fails(&node, &["agent", "--ha-dir", &ha]);
    assert_eq!(
        err,
        format!(
            "hadisk: {k}: mode 0644 lets other users read the key; run `chmod 600 {k}` (Heartbeat refuses it too)\n",
            k = keys.display()
        )
    );
    assert!(!node.run_dir().join("agent.sock").exists());
}

#[test]
fn client_commands_without_an_agent_say_how_to_start_it() {
    let node = AgentNode::new("alpha", "unused", &hacf(""), "k", &group(""));
    let want = format!(
        "hadisk: the hadisk agent is not running (no control socket at {}); start it with `hadisk agent` (systemd: `systemctl start hadisk-agent`)\n",
        node.run_dir().join("agent.sock").display()
    );
    for args in [
        &["agent", "status"][..],
        &["agent", "standby"],
        &["agent", "takeover"],
    ] {
        assert_eq!(fails(&node, args), want, "{args:?}");
    }
}

#[test]
fn a_node_not_in_ha_cf_is_refused() {
    let node = AgentNode::new("gamma", "unused", &hacf(""), "k", &group(""));
    let ha = path_str(&node.ha_dir());
    let err = fails(&node, &["agent", "--ha-dir", &ha]);
    assert_eq!(
        err,
        format!(
            "hadisk: {}: this node 'gamma' is not a `node` (nodes: alpha, beta); set --node or the host name to one of them\n",
            node.ha_dir().join("ha.cf").display()
        )
    );
}
