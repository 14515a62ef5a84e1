//! The failover agent end to end: two `hadisk agent` processes in two
//! network namespaces joined by a bridge, moving a group made of a virtual
//! IP and a recorded script resource (no replicated disk: the replication
//! link between daemons is not there yet, so `hadisk::RES` is not in these
//! groups and "heartbeat link cut while the replication link is up" is not
//! tested here).
//!
//! Every wait polls a state with a generous deadline; nothing asserts a time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "agent_harness.rs"]
mod harness;

use harness::*;

fn running_on(node: &AgentNode, other: &AgentNode) -> bool {
    node.group_state(0) == "Running" && Net::has_vip(&node.ns) && !Net::has_vip(&other.ns)
}

/// The preferred node takes the group at start; kill -9 of its agent → the
/// other takes over after deadtime, the VIP moves and a gratuitous ARP moves
/// the client's neighbour entry; the preferred node's agent returns →
/// auto_failback gives it the group back, stopped right to left on the
/// other.
#[test]
fn preferred_node_starts_kill_9_fails_over_and_auto_failback_returns() {
    need_root();
    let mut net = Net::new();
    let ns_a = net.host("a", 1);
    let ns_b = net.host("b", 2);
    let ns_c = net.host("c", 20);
    let a = AgentNode::new("alpha", &ns_a, &hacf(""), "s3cret", &group(""));
    let b = AgentNode::new("beta", &ns_b, &hacf(""), "s3cret", &group(""));
    let mut agent_a = a.start();
    let _agent_b = b.start();

    wait_for(
        "alpha (preferred) to hold the group",
        || running_on(&a, &b),
        || format!("{}\n{}", a.explain(), b.explain()),
    );
    assert_eq!(a.record(), vec!["g1 start"]);
    assert!(
        b.record().is_empty(),
        "beta started something: {:?}",
        b.record()
    );
    let sb = b.status();
    assert_eq!(sb["groups"][0]["holder"], "alpha", "{sb}");
    assert_eq!(sb["groups"][0]["state"], "Stopped");
    assert_eq!(sb["peer_liveness"], "Alive");
    assert!(sb["peer_last_heartbeat_age_ms"].as_u64().is_some(), "{sb}");

    // The client talks to the VIP: its neighbour entry now has alpha's MAC.
    let mac_a = Net::mac(&ns_a);
    let mac_b = Net::mac(&ns_b);
    let neigh = || sh("ip", &["-n", &ns_c, "neigh", "show", VIP]);
    let _ = std::process::Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns_c}"))
        .args(["bash", "-c", &format!("echo x > /dev/udp/{VIP}/9")])
        .status();
    wait_for(
        "the client to learn the VIP's MAC",
        || neigh().contains(&mac_a),
        neigh,
    );

    agent_a.crash();
    wait_for(
        "beta to take over after deadtime",
        || b.group_state(0) == "Running" && Net::has_vip(&ns_b),
        || b.explain(),
    );
    assert_eq!(b.record(), vec!["g1 start"]);
    assert!(
        b.log()
            .contains("taking over: the peer has been silent for"),
        "{}",
        b.log()
    );
    wait_for(
        "the client's neighbour entry to move to beta's MAC (gratuitous ARP)",
        || neigh().contains(&mac_b),
        || format!("neigh: {}\n{}", neigh(), b.log()),
    );
    wait_for(
        "beta's log to show the arping finished",
        || b.log().contains("gratuitous ARP sent"),
        || b.log(),
    );

    // The crash left alpha's resources active (its VIP, its script): the
    // agent's restart stops them first, then auto_failback gives the group
    // back once beta has released it.
    assert!(Net::has_vip(&ns_a), "kill -9 should leave the VIP behind");
    let _agent_a = a.start();
    wait_for(
        "auto_failback: the group returns to alpha",
        || running_on(&a, &b) && b.group_state(0) == "Stopped",
        || format!("{}\n{}", a.explain(), b.explain()),
    );
    assert_eq!(b.record(), vec!["g1 start", "g1 stop"]);
    assert_eq!(a.record(), vec!["g1 start", "g1 stop", "g1 start"]);
    assert!(
        a.log().contains("active at start (left by an earlier agent): IPaddr::10.77.0.100/24/eth0:0, rec::g1; stopping the group first"),
        "{}",
        a.log()
    );
    assert!(
        b.log()
            .contains("handing over: failing back to the preferred node"),
        "{}",
        b.log()
    );
}

/// Heartbeats signed with another key are dropped and logged; the node
/// does not count them as heartbeats (the peer stays never-heard, so it
/// takes the group itself after initdead).
#[test]
fn wrong_authkeys_are_dropped_logged_and_not_heartbeats() {
    need_root();
    let mut net = Net::new();
    let ns_a = net.host("a", 1);
    let ns_b = net.host("b", 2);
    let bcast = format!("{TIMING}bcast eth0\nauto_failback on\nnode alpha\nnode beta\n");
    let a = AgentNode::new("alpha", &ns_a, &bcast, "the-right-key", &group(""));
    let b = AgentNode::new("beta", &ns_b, &bcast, "a-wrong-key", &group(""));
    let _agent_a = a.start();
    let _agent_b = b.start();
    wait_for(
        "beta to drop alpha's datagrams and, never hearing it, take the group",
        || {
            let s = b.status();
            s["rejected_datagrams"].as_u64().unwrap_or(0) > 0
                && s["groups"][0]["state"] == "Running"
        },
        || b.explain(),
    );
    let s = b.status();
    assert!(s["peer_last_heartbeat_age_ms"].is_null(), "{s}");
    assert_eq!(s["peer_liveness"], "Dead");
    assert!(
        b.log().contains(
            "dropped a datagram: bad signature (key 1): wrong authkeys on one node, or a forged or corrupted message"
        ),
        "{}",
        b.log()
    );
    // The text status says it too.
    let text = String::from_utf8_lossy(&b.run(&["agent", "status"]).stdout).into_owned();
    assert!(text.contains("peer alpha: Dead (never heard)"), "{text}");
    assert!(text.contains("dropped datagrams: "), "{text}");
}

/// Both links of alpha cut (its only interface): with a ping node in a third
/// namespace, only beta, which still reaches the ping node, holds the group;
/// alpha, isolated, releases it.
#[test]
fn isolated_node_releases_and_only_the_node_reaching_the_ping_node_holds() {
    need_root();
    let mut net = Net::new();
    let ns_a = net.host("a", 1);
    let ns_b = net.host("b", 2);
    let _ns_p = net.host("p", 9);
    let cf = hacf(&format!("ping {NET}.9\n"));
    let a = AgentNode::new("alpha", &ns_a, &cf, "s3cret", &group(""));
    let b = AgentNode::new("beta", &ns_b, &cf, "s3cret", &group(""));
    let _agent_a = a.start();
    let _agent_b = b.start();
    wait_for(
        "alpha to hold the group with the ping node answering",
        || {
            running_on(&a, &b)
                && a.status()["ping"] == "Reachable"
                && b.status()["ping"] == "Reachable"
        },
        || format!("{}\n{}", a.explain(), b.explain()),
    );

    net.link("a", false);
    wait_for(
        "alpha isolated releases, beta takes the group",
        || {
            b.group_state(0) == "Running"
                && Net::has_vip(&ns_b)
                && a.group_state(0) == "Stopped"
                && !Net::has_vip(&ns_a)
        },
        || format!("{}\n{}", a.explain(), b.explain()),
    );
    assert_eq!(a.record(), vec!["g1 start", "g1 stop"]);
    assert_eq!(b.record(), vec!["g1 start"]);
    assert!(
        a.log()
            .contains("releasing: the peer and every ping node are lost, this node is isolated"),
        "{}",
        a.log()
    );
    let sa = a.status();
    assert_eq!(sa["ping"], "Unreachable", "{sa}");
    // alpha stays out while it cannot reach the ping node.
    assert!(
        sa["groups"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("no ping node answers"),
        "{sa}"
    );
}

/// A resource that fails to start: the group is stopped again right to
/// left (the VIP removed, the script stopped), the failure names the
/// resource and its message, and the peer, where it starts, takes it.
#[test]
fn failed_start_is_rolled_back_reported_and_the_peer_takes_it() {
    need_root();
    let mut net = Net::new();
    let ns_a = net.host("a", 1);
    let ns_b = net.host("b", 2);
    let res = group(" fail rec::g2");
    let a = AgentNode::new("alpha", &ns_a, &hacf(""), "s3cret", &res);
    let b = AgentNode::new("beta", &ns_b, &hacf(""), "s3cret", &res);
    a.script("fail", FAIL_SCRIPT);
    b.script("fail", NOOP_SCRIPT);
    let _agent_a = a.start();
    let _agent_b = b.start();
    wait_for(
        "alpha's start to fail and beta to take the group",
        || {
            a.group_state(0) == "StartFailed"
                && b.group_state(0) == "Running"
                && Net::has_vip(&ns_b)
        },
        || format!("{}\n{}", a.explain(), b.explain()),
    );
    assert!(!Net::has_vip(&ns_a), "the VIP was not removed on alpha");
    assert_eq!(a.record(), vec!["g1 start", "g1 stop"]);
    assert_eq!(b.record(), vec!["g1 start", "g2 start"]);
    let sa = a.status();
    let script = a.ha_dir().join("resource.d/fail");
    assert_eq!(
        sa["groups"][0]["last_failure"],
        format!(
            "resource 3 (fail) failed to start: `{} start` failed (exit 1): cannot start: simulated failure; the group was stopped again",
            script.display()
        ),
        "{sa}"
    );
    assert_eq!(
        sa["groups"][0]["resources"][2]["state"]["start_failed"],
        format!(
            "`{} start` failed (exit 1): cannot start: simulated failure",
            script.display()
        )
    );
    assert_eq!(sa["groups"][0]["resources"][3]["state"], "stopped");
    assert_eq!(sa["groups"][0]["holder"], "beta");
}

/// `hadisk agent standby` hands the group to the peer; `takeover` brings
/// it back. Heartbeats go on two paths (ucast and bcast): the second copy
/// of each is a duplicate, not a rejected datagram.
#[test]
fn standby_and_takeover_move_the_group() {
    need_root();
    let mut net = Net::new();
    let ns_a = net.host("a", 1);
    let ns_b = net.host("b", 2);
    let cf = hacf("bcast eth0\n");
    let a = AgentNode::new("alpha", &ns_a, &cf, "s3cret", &group(""));
    let b = AgentNode::new("beta", &ns_b, &cf, "s3cret", &group(""));
    let _agent_a = a.start();
    let _agent_b = b.start();
    wait_for(
        "alpha to hold the group",
        || running_on(&a, &b),
        || a.explain(),
    );

    let out = a.run(&["agent", "standby"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "alpha: standby; the groups go to beta while it is alive\n"
    );
    wait_for(
        "standby: beta holds the group",
        || running_on(&b, &a) && a.group_state(0) == "Stopped",
        || format!("{}\n{}", a.explain(), b.explain()),
    );
    assert_eq!(b.status()["peer_mode"], "standby");

    let out = a.run(&["agent", "takeover"]);
    assert!(out.status.success(), "{out:?}");
    wait_for(
        "takeover: alpha holds the group again",
        || running_on(&a, &b) && b.group_state(0) == "Stopped",
        || format!("{}\n{}", a.explain(), b.explain()),
    );
    assert_eq!(a.record(), vec!["g1 start", "g1 stop", "g1 start"]);
    assert_eq!(b.record(), vec!["g1 start", "g1 stop"]);
    for n in [&a, &b] {
        assert_eq!(n.status()["rejected_datagrams"], 0, "{}", n.explain());
        assert!(
            n.log().contains("paths=bcast eth0, ucast eth0"),
            "{}",
            n.log()
        );
    }
}

/// SIGTERM: the agent stops its group right to left (a Delay among the
/// resources), exits 0, and the peer takes the group.
#[test]
fn sigterm_stops_the_group_and_the_peer_takes_it() {
    need_root();
    let mut net = Net::new();
    let ns_a = net.host("a", 1);
    let ns_b = net.host("b", 2);
    let res = group(" Delay::100ms::50ms rec::g2");
    let a = AgentNode::new("alpha", &ns_a, &hacf(""), "s3cret", &res);
    let b = AgentNode::new("beta", &ns_b, &hacf(""), "s3cret", &res);
    let mut agent_a = a.start();
    let _agent_b = b.start();
    wait_for(
        "alpha to hold the group",
        || running_on(&a, &b),
        || a.explain(),
    );
    let st = agent_a.terminate().unwrap();
    assert!(st.success(), "{st:?}\n{}", a.log());
    assert_eq!(
        a.record(),
        vec!["g1 start", "g2 start", "g2 stop", "g1 stop"]
    );
    assert!(!Net::has_vip(&ns_a));
    assert!(
        a.log()
            .contains("stopping group=0 resource=Delay::100ms::50ms"),
        "{}",
        a.log()
    );
    wait_for(
        "beta to take the group",
        || running_on(&b, &a),
        || b.explain(),
    );
}

/// `auto_failback off`: after a failover the group stays where it is when
/// the preferred node returns.
#[test]
fn without_auto_failback_the_group_stays_on_the_survivor() {
    need_root();
    let mut net = Net::new();
    let ns_a = net.host("a", 1);
    let ns_b = net.host("b", 2);
    let cf = hacf("").replace("auto_failback on", "auto_failback off");
    let a = AgentNode::new("alpha", &ns_a, &cf, "s3cret", &group(""));
    let b = AgentNode::new("beta", &ns_b, &cf, "s3cret", &group(""));
    let mut agent_a = a.start();
    let _agent_b = b.start();
    wait_for(
        "alpha to hold the group",
        || running_on(&a, &b),
        || a.explain(),
    );
    agent_a.crash();
    wait_for(
        "beta to take over",
        || b.group_state(0) == "Running" && Net::has_vip(&ns_b),
        || b.explain(),
    );
    let _agent_a = a.start();
    wait_for(
        "alpha, back, to see that beta holds the group",
        || {
            let s = a.status();
            s["peer_liveness"] == "Alive" && s["groups"][0]["reason"] == "the peer holds it"
        },
        || a.explain(),
    );
    assert!(running_on(&b, &a), "{}\n{}", a.explain(), b.explain());
    assert_eq!(b.record(), vec!["g1 start"]);
    assert_eq!(a.record(), vec!["g1 start", "g1 stop"]);
}
