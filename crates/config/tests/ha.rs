#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Heartbeat files: the seed's `ha.cf`, `authkeys` and `haresources` as the
//! seed's blog post writes them, and malformed inputs with their exact
//! messages and lines.

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use hadisk_config::ha::{
    check_authkeys_mode, load_authkeys, load_hacf, load_haresources, parse_authkeys, parse_hacf,
    parse_haresources, AuthMethod, AutoFailback, HaResource, IpAddrKind, Ucast,
};
use hadisk_config::ConfigError;

/// The seed's `/etc/ha.d/ha.cf` on NAS1, as the post writes it (each line
/// indented by one space).
const SEED_HA_CF: &str = " debugfile /home/ha_debug
 logfile /home/ha_log
 logfacility local0
 keepalive 2
 deadtime 30
 udpport 694
 bcast eth0
 auto_failback on
 node NAS1
 node NAS2
";

/// The seed's `/etc/ha.d/authkeys`.
const SEED_AUTHKEYS: &str = " auth 1
 1 md5 hatest
";

/// The seed's `/etc/ha.d/haresources` at step 3-1-3 (with its trailing
/// blank after the last word).
const SEED_HARESOURCES_3: &str = " NAS1 drbddisk::data \\
 Filesystem::/dev/drbd0::/data::ext4 \\
 Delay::1::0 \\
 IPaddr::192.168.0.225/27/eth0:0 
";

/// The seed's final `haresources` (step 4-7), with continuations.
const SEED_HARESOURCES: &str = " NAS1 drbddisk::data \\
 Filesystem::/dev/drbd0::/data::ext4 \\
 Delay::1::0 \\
 IPaddr::192.168.0.225/27/eth0:0 \\
 nfslock \\
 nfs
";

/// The same group on one line, as the seed's README writes it.
const SEED_HARESOURCES_LINE: &str = "NAS1 drbddisk::data Filesystem::/dev/drbd0::/data::ext4 Delay::1::0 IPaddr::192.168.0.225/27/eth0:0 nfslock nfs\n";

fn hacf_err(text: &str) -> String {
    parse_hacf(text, Path::new("ha.cf"))
        .unwrap_err()
        .to_string()
}

fn keys_err(text: &str) -> String {
    parse_authkeys(text, Path::new("authkeys"), false)
        .unwrap_err()
        .to_string()
}

fn res_err(text: &str) -> String {
    parse_haresources(text, Path::new("haresources"))
        .unwrap_err()
        .to_string()
}

/// A minimal valid ha.cf around `extra` lines.
fn hacf_with(extra: &str) -> String {
    format!("node a\nnode b\nucast eth0 10.0.0.2\nauto_failback off\n{extra}")
}

#[test]
fn seed_ha_cf_verbatim() {
    let c = parse_hacf(SEED_HA_CF, Path::new("ha.cf")).unwrap();
    assert_eq!(c.keepalive_ms, 2000);
    assert_eq!(c.deadtime_ms, 30_000);
    assert_eq!(c.warntime_ms, None);
    assert_eq!(c.initdead_ms, 60_000);
    assert_eq!(c.udpport, 694);
    assert_eq!(c.bcast, vec!["eth0".to_owned()]);
    assert!(c.ucast.is_empty());
    assert_eq!(c.auto_failback, AutoFailback::On);
    assert_eq!(c.nodes, vec!["NAS1".to_owned(), "NAS2".to_owned()]);
    assert!(c.ping.is_empty());
    assert_eq!(c.logfile, Some(PathBuf::from("/home/ha_log")));
    assert_eq!(c.debugfile, Some(PathBuf::from("/home/ha_debug")));
    assert_eq!(c.logfacility.as_deref(), Some("local0"));
    assert!(c.ignored.is_empty());
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.peer_of("NAS1"), Some("NAS2"));
    assert_eq!(c.peer_of("nas2"), Some("NAS1"));
    assert_eq!(c.peer_of("NAS3"), None);
}

#[test]
fn seed_ha_cf_on_nas2_lists_the_nodes_the_other_way() {
    // The post tells the reader to swap the node lines on the secondary;
    // that must not change which node prefers the group (haresources does).
    let text = SEED_HA_CF.replace(" node NAS1\n node NAS2\n", " node NAS2\n node NAS1\n");
    let c = parse_hacf(&text, Path::new("ha.cf")).unwrap();
    assert_eq!(c.nodes, vec!["NAS2".to_owned(), "NAS1".to_owned()]);
    let r = parse_haresources(SEED_HARESOURCES, Path::new("haresources")).unwrap();
    r.check_nodes(&c, Path::new("haresources")).unwrap();
    assert_eq!(r.groups[0].node, "NAS1");
}

#[test]
fn ha_cf_fast_settings_and_every_used_directive() {
    let text = "# fast failover, as the benchmark runs it
keepalive 200ms
deadtime 1
warntime 500ms
initdead 2s
udpport 7694
ucast eth0 10.99.0.2   # the peer
ucast eth1 fd00::2
bcast eth2 eth3
udp eth4
node a b
ping 10.99.0.254 gw.example
logfacility NONE
auto_failback legacy
crm off
mcast eth0 225.0.0.1 694 1 0
";
    let c = parse_hacf(text, Path::new("ha.cf")).unwrap();
    assert_eq!(
        (c.keepalive_ms, c.deadtime_ms, c.warntime_ms, c.initdead_ms),
        (200, 1000, Some(500), 2000)
    );
    assert_eq!(c.udpport, 7694);
    assert_eq!(
        c.ucast,
        vec![
            Ucast {
                iface: "eth0".into(),
                addr: IpAddr::V4(Ipv4Addr::new(10, 99, 0, 2))
            },
            Ucast {
                iface: "eth1".into(),
                addr: "fd00::2".parse().unwrap()
            },
        ]
    );
    assert_eq!(c.bcast, vec!["eth2", "eth3", "eth4"]);
    assert_eq!(c.nodes, vec!["a", "b"]);
    assert_eq!(c.ping, vec!["10.99.0.254", "gw.example"]);
    assert_eq!(c.logfacility.as_deref(), Some("none"));
    assert_eq!(c.auto_failback, AutoFailback::Legacy);
    assert!(c.auto_failback.returns());
    assert_eq!(c.mcast.len(), 1);
    let ignored: Vec<(u32, &str, &str)> = c
        .ignored
        .iter()
        .map(|i| (i.line, i.directive.as_str(), i.reason))
        .collect();
    assert_eq!(
        ignored,
        vec![
            (
                15,
                "crm",
                "hadisk runs its own resource manager (see ocf/hadisk for Pacemaker)"
            ),
            (
                16,
                "mcast",
                "hadisk sends heartbeats by ucast or bcast only"
            ),
        ]
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn ha_cf_warnings_as_heartbeat_gives_them() {
    let c = parse_hacf(
        "node a\nnode b\nbcast eth0\nkeepalive 1\ndeadtime 10\nwarntime 1\ninitdead 15\n",
        Path::new("ha.cf"),
    )
    .unwrap();
    let w: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        w,
        vec![
            "ha.cf:6: warntime (1000 ms) is not more than keepalive (1000 ms): every heartbeat will look late",
            "ha.cf:7: initdead (15000 ms) is less than twice deadtime (10000 ms); Heartbeat recommends at least twice, for slow network start-up",
            "ha.cf: auto_failback not set; defaulting to legacy (behaves as on)",
        ]
    );
    assert_eq!(c.auto_failback, AutoFailback::Legacy);
}

#[test]
fn ha_cf_errors() {
    let table: &[(&str, &str)] = &[
        ("keepalve 2\n", "ha.cf:1: unknown directive 'keepalve'; did you mean `keepalive`?"),
        ("frobnicate 2\n", "ha.cf:1: unknown directive 'frobnicate' (hadisk reads Heartbeat 3's ha.cf directives)"),
        ("keepalive\n", "ha.cf:1: keepalive takes one value (a time), got none"),
        ("keepalive 2 3\n", "ha.cf:1: keepalive takes one value (a time), got 2: 2 3"),
        ("keepalive 2x\n", "ha.cf:1: keepalive: '2x' is not a time; write seconds (2, 0.5) or milliseconds (200ms)"),
        ("keepalive 0\n", "ha.cf:1: keepalive must be more than 0"),
        ("deadtime 100000\n", "ha.cf:1: deadtime: '100000' is more than a day (86400000 ms)"),
        ("\n\nkeepalive 1\nkeepalive 2\n", "ha.cf:4: keepalive given twice (first on line 3); keep one"),
        ("udpport 0\n", "ha.cf:1: udpport: '0' is not a UDP port (1-65535)"),
        ("udpport 70000\n", "ha.cf:1: udpport: '70000' is not a UDP port (1-65535)"),
        ("auto_failback maybe\n", "ha.cf:1: auto_failback: 'maybe' is not on, off or legacy"),
        ("logfacility local9\n", "ha.cf:1: logfacility: 'local9' is not a syslog facility (auth, authpriv, cron, daemon, ftp, kern, lpr, mail, news, syslog, user, uucp, local0, local1, local2, local3, local4, local5, local6, local7, none); did you mean `local0`?"),
        ("ucast eth0\n", "ha.cf:1: ucast takes an interface and the peer's IP address (ucast eth0 192.168.0.227), got 1 values"),
        ("ucast eth0 nas2\n", "ha.cf:1: ucast: 'nas2' is not an IP address (hadisk does not resolve host names here)"),
        ("ucast eth0/1 10.0.0.1\n", "ha.cf:1: ucast: 'eth0/1' is not an interface name"),
        ("bcast\n", "ha.cf:1: bcast needs at least one interface (bcast eth0)"),
        ("bcast averyveryverylongname\n", "ha.cf:1: bcast: interface 'averyveryverylongname' is longer than Linux's 15 characters"),
        ("mcast eth0 225.0.0.1 694 1\n", "ha.cf:1: mcast takes an interface, a group, a port, a TTL and a loop flag (mcast eth0 225.0.0.1 694 1 0), got 4 values"),
        ("mcast eth0 10.0.0.1 694 1 0\n", "ha.cf:1: mcast: '10.0.0.1' is not a multicast address"),
        ("mcast eth0 225.0.0.1 694 0 0\n", "ha.cf:1: mcast: '0' is not a TTL (1-255)"),
        ("mcast eth0 225.0.0.1 694 1 2\n", "ha.cf:1: mcast: the loop flag is 0 or 1, not '2'"),
        ("node\n", "ha.cf:1: node needs at least one name"),
        ("node a\nnode A\n", "ha.cf:2: node 'A' listed twice (first on line 1)"),
        ("node a/b\n", "ha.cf:1: node name 'a/b' may hold only letters, digits, '-', '_' and '.' (it is the host name, `uname -n`)"),
        ("ping\n", "ha.cf:1: ping needs at least one host (ping 192.168.0.1)"),
        ("ping 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17\n", "ha.cf:1: more than 16 ping nodes; one to three are enough"),
        ("bcast eth0\n", "ha.cf: names no node; hadisk's agent runs a pair: list both nodes with `node NAME` lines"),
        ("bcast eth0\nnode a\n", "ha.cf: names 1 node (a); hadisk's agent runs a pair: list both nodes with `node NAME` lines"),
        ("bcast eth0\nnode a b c\n", "ha.cf: names 3 nodes (a, b, c); hadisk's agent runs a pair: list both nodes with `node NAME` lines"),
        ("node a b\n", "ha.cf: has no heartbeat path; add `ucast IFACE PEER-IP` or `bcast IFACE` (mcast is not supported)"),
        ("node a b\nmcast eth0 225.0.0.1 694 1 0\n", "ha.cf: has no heartbeat path; add `ucast IFACE PEER-IP` or `bcast IFACE` (mcast is not supported)"),
        ("node a b\nbcast e0 e1 e2 e3 e4 e5 e6 e7 e8 e9 e10 e11 e12 e13 e14 e15 e16\n", "ha.cf: has more than 16 heartbeat paths (ucast lines and bcast interfaces)"),
        ("node a b\nbcast eth0\nkeepalive 1\ndeadtime 2\n", "ha.cf:4: deadtime (2000 ms) must be more than twice keepalive (1000 ms), or one lost heartbeat declares the peer dead"),
        ("node a b\nbcast eth0\nkeepalive 15\n", "ha.cf:3: deadtime (30000 ms) must be more than twice keepalive (15000 ms), or one lost heartbeat declares the peer dead"),
        ("node a b\nbcast eth0\ndeadtime 10\nwarntime 10\n", "ha.cf:4: warntime (10000 ms) must be less than deadtime (10000 ms)"),
        ("node a b\nbcast eth0\ndeadtime 10\ninitdead 5\n", "ha.cf:4: initdead (5000 ms) must be at least deadtime (10000 ms)"),
    ];
    let mut failures = Vec::new();
    for (text, want) in table {
        let got = hacf_err(text);
        if got != *want {
            failures.push(format!("{text:?}\n  got:  {got}\n  want: {want}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn ha_cf_continued_lines_report_their_first_line() {
    let text = hacf_with("node \\\n  c\n");
    assert_eq!(hacf_err(&text), "ha.cf: names 3 nodes (a, b, c); hadisk's agent runs a pair: list both nodes with `node NAME` lines");
    let text = "\n# c\nkeepalive \\\n 2x\n";
    assert_eq!(
        hacf_err(text),
        "ha.cf:3: keepalive: '2x' is not a time; write seconds (2, 0.5) or milliseconds (200ms)"
    );
}

#[test]
fn seed_authkeys_verbatim() {
    let k = parse_authkeys(SEED_AUTHKEYS, Path::new("authkeys"), false).unwrap();
    assert_eq!(k.active, 1);
    let key = k.active_key().unwrap();
    assert_eq!(
        (key.index, key.method, key.key.as_slice()),
        (1, AuthMethod::Md5, &b"hatest"[..])
    );
    // Debug never shows the secret.
    let dbg = format!("{k:?}");
    assert!(!dbg.contains("hatest"), "{dbg}");
    assert!(dbg.contains("<6 bytes redacted>"), "{dbg}");
}

#[test]
fn authkeys_several_keys_spaces_and_crc_when_allowed() {
    let text = "# rotate: sign with 2, accept 1 too\nauth 2\n1 md5 old key\n2 SHA1 new # key with spaces\n";
    let k = parse_authkeys(text, Path::new("authkeys"), false).unwrap();
    assert_eq!(k.active, 2);
    assert_eq!(k.keys.len(), 2);
    assert_eq!(k.key(1).unwrap().key, b"old key");
    assert_eq!(k.key(2).unwrap().method, AuthMethod::Sha1);
    assert_eq!(k.key(2).unwrap().key, b"new # key with spaces");
    let k = parse_authkeys("auth 3\n3 crc\n", Path::new("authkeys"), true).unwrap();
    assert_eq!(k.active_key().unwrap().method, AuthMethod::Crc);
    assert!(k.active_key().unwrap().key.is_empty());
}

#[test]
fn authkeys_errors_never_show_the_key() {
    let table: &[(&str, &str)] = &[
        ("", "authkeys: has no `auth N` line; add one naming the key to sign with (auth 1)"),
        ("1 sha1 s3cret\n", "authkeys: has no `auth N` line; add one naming the key to sign with (auth 1)"),
        ("auth 2\n1 sha1 s3cret\n", "authkeys:1: auth 2: key 2 is not defined (keys: 1); add a line `2 sha1 SECRET`"),
        ("auth 1\n", "authkeys:1: auth 1: key 1 is not defined (keys: none); add a line `1 sha1 SECRET`"),
        ("auth\n", "authkeys:1: auth takes one key index (auth 1)"),
        ("auth 1 2\n", "authkeys:1: auth takes one key index (auth 1)"),
        ("auth 16\n", "authkeys:1: auth: '16' is not a key index (0-15)"),
        ("auth 1\nauth 1\n", "authkeys:2: auth given twice (first on line 1); keep one"),
        ("auth 1\none sha1 s3cret\n", "authkeys:2: 'one' is not a key index (0-15); lines are `auth N` or `N METHOD KEY`"),
        ("auth 1\n1\n", "authkeys:2: key 1 has no method; write `1 sha1 SECRET`"),
        ("auth 1\n1 sha256 s3cret\n", "authkeys:2: key 1: unknown method 'sha256'; Heartbeat's methods are sha1, md5 and crc"),
        ("auth 1\n1 shaa1 s3cret\n", "authkeys:2: key 1: unknown method 'shaa1'; Heartbeat's methods are sha1, md5 and crc; did you mean `sha1`?"),
        ("auth 1\n1 sha1\n", "authkeys:2: key 1 (sha1) has no key; write `1 sha1 SECRET`"),
        ("auth 1\n1 md5   \n", "authkeys:2: key 1 (md5) has no key; write `1 md5 SECRET`"),
        ("auth 1\n1 crc\n", "authkeys:2: key 1 uses crc, which has no key: anyone on the network could forge heartbeats; use sha1 or md5 with a secret (or allow crc explicitly)"),
        ("auth 1\n1 sha1 s3cret\n1 md5 s3cret\n", "authkeys:3: key 1 defined twice (first on line 2)"),
    ];
    let mut failures = Vec::new();
    for (text, want) in table {
        let got = keys_err(text);
        assert!(!got.contains("s3cret"), "{got}");
        if got != *want {
            failures.push(format!("{text:?}\n  got:  {got}\n  want: {want}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let long = format!("auth 1\n1 sha1 {}\n", "k".repeat(1025));
    assert_eq!(
        keys_err(&long),
        "authkeys:2: key 1 is 1025 bytes, longer than the 1024-byte limit"
    );
    assert_eq!(
        parse_authkeys("auth 1\n1 crc secret\n", Path::new("authkeys"), true).unwrap_err().to_string(),
        "authkeys:2: key 1: crc takes no key (it is a checksum, not a signature); remove the key or use sha1 or md5"
    );
}

#[test]
fn authkeys_mode_is_checked_as_heartbeat_does() {
    let f = Path::new("/etc/ha.d/authkeys");
    for ok in [0o600, 0o400, 0o100600, 0o700] {
        check_authkeys_mode(f, ok).unwrap();
    }
    for (mode, shown) in [
        (0o644, "0644"),
        (0o640, "0640"),
        (0o604, "0604"),
        (0o100660, "0660"),
        (0o4601, "4601"),
    ] {
        assert_eq!(
            check_authkeys_mode(f, mode).unwrap_err().to_string(),
            format!("/etc/ha.d/authkeys: mode {shown} lets other users read the key; run `chmod 600 /etc/ha.d/authkeys` (Heartbeat refuses it too)")
        );
    }
}

#[test]
fn load_authkeys_stats_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authkeys");
    std::fs::write(&path, SEED_AUTHKEYS).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = load_authkeys(&path, false).unwrap_err();
    assert!(matches!(e, ConfigError::HaFile { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "{p}: mode 0644 lets other users read the key; run `chmod 600 {p}` (Heartbeat refuses it too)",
            p = path.display()
        )
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let k = load_authkeys(&path, false).unwrap();
    assert_eq!(k.active_key().unwrap().key, b"hatest");

    let missing = dir.path().join("nope");
    let e = load_authkeys(&missing, false).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "cannot read {}: No such file or directory (os error 2)",
            missing.display()
        )
    );
    let e = load_authkeys(dir.path(), false).unwrap_err().to_string();
    assert_eq!(
        e,
        format!("{}: is not a regular file", dir.path().display())
    );
}

fn seed_group() -> Vec<HaResource> {
    vec![
        HaResource::Hadisk {
            resource: "data".into(),
            drbddisk: true,
        },
        HaResource::Filesystem {
            device: "/dev/drbd0".into(),
            directory: PathBuf::from("/data"),
            fstype: "ext4".into(),
            options: None,
        },
        HaResource::Delay {
            start_ms: 1000,
            stop_ms: 0,
        },
        HaResource::IpAddr {
            kind: IpAddrKind::IPaddr,
            addr: Ipv4Addr::new(192, 168, 0, 225),
            prefix: 27,
            iface: "eth0".into(),
            label: Some("eth0:0".into()),
            broadcast: None,
        },
        HaResource::Script {
            name: "nfslock".into(),
            args: vec![],
        },
        HaResource::Script {
            name: "nfs".into(),
            args: vec![],
        },
    ]
}

#[test]
fn seed_haresources_verbatim() {
    for text in [SEED_HARESOURCES, SEED_HARESOURCES_LINE] {
        let r = parse_haresources(text, Path::new("haresources")).unwrap();
        assert_eq!(r.groups.len(), 1);
        assert_eq!(r.groups[0].line, 1);
        assert_eq!(r.groups[0].node, "NAS1");
        assert_eq!(r.groups[0].resources, seed_group());
        let shown: Vec<String> = r.groups[0]
            .resources
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            shown.join(" "),
            "drbddisk::data Filesystem::/dev/drbd0::/data::ext4 Delay::1000ms::0ms IPaddr::192.168.0.225/27/eth0:0 nfslock nfs"
        );
    }
    let r = parse_haresources(SEED_HARESOURCES_3, Path::new("haresources")).unwrap();
    assert_eq!(r.groups[0].resources, seed_group()[..4].to_vec());
    let c = parse_hacf(SEED_HA_CF, Path::new("ha.cf")).unwrap();
    r.check_nodes(&c, Path::new("haresources")).unwrap();
}

#[test]
fn haresources_other_forms() {
    let text = "# two groups\n\nNAS2 hadisk::web 10.0.0.9/24/eth1 \\\n  IPaddr2::10.0.0.10/255.255.255.0/eth1:web/10.0.0.255 \\\n  Filesystem::UUID=abcd::/srv/web::xfs::noatime,nodiratime Delay::2 \\\n  apache2::-k::graceful\nNAS1 nfs\n";
    let r = parse_haresources(text, Path::new("haresources")).unwrap();
    assert_eq!(r.groups.len(), 2);
    assert_eq!((r.groups[0].line, r.groups[1].line), (3, 7));
    assert_eq!(
        r.groups[0].resources,
        vec![
            HaResource::Hadisk {
                resource: "web".into(),
                drbddisk: false
            },
            HaResource::IpAddr {
                kind: IpAddrKind::IPaddr,
                addr: Ipv4Addr::new(10, 0, 0, 9),
                prefix: 24,
                iface: "eth1".into(),
                label: None,
                broadcast: None,
            },
            HaResource::IpAddr {
                kind: IpAddrKind::IPaddr2,
                addr: Ipv4Addr::new(10, 0, 0, 10),
                prefix: 24,
                iface: "eth1".into(),
                label: Some("eth1:web".into()),
                broadcast: Some(Ipv4Addr::new(10, 0, 0, 255)),
            },
            HaResource::Filesystem {
                device: "UUID=abcd".into(),
                directory: PathBuf::from("/srv/web"),
                fstype: "xfs".into(),
                options: Some("noatime,nodiratime".into()),
            },
            HaResource::Delay {
                start_ms: 2000,
                stop_ms: 2000
            },
            HaResource::Script {
                name: "apache2".into(),
                args: vec!["-k".into(), "graceful".into()]
            },
        ]
    );
    let shown: Vec<String> = r.groups[0]
        .resources
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(shown[1], "IPaddr::10.0.0.9/24/eth1");
    assert_eq!(shown[2], "IPaddr2::10.0.0.10/24/eth1:web/10.0.0.255");
    assert_eq!(
        shown[3],
        "Filesystem::UUID=abcd::/srv/web::xfs::noatime,nodiratime"
    );
    assert_eq!(shown[5], "apache2::-k::graceful");
}

#[test]
fn haresources_errors() {
    let table: &[(&str, &str)] = &[
        ("", "haresources: defines no group; write one line `NODE RESOURCE…` (e.g. NAS1 drbddisk::data Filesystem::/dev/drbd0::/data::ext4)"),
        ("# only a comment\n", "haresources: defines no group; write one line `NODE RESOURCE…` (e.g. NAS1 drbddisk::data Filesystem::/dev/drbd0::/data::ext4)"),
        ("NAS1\n", "haresources:1: the group of 'NAS1' has no resources; list them after the node name"),
        ("NAS1 drbddisk::data \\\n\nFilesystem::/dev/drbd0::/data::ext4\n", "haresources:3: the line starts with the resource 'Filesystem::/dev/drbd0::/data::ext4', not a node name: a group is `NODE RESOURCE…`; if it continues the line above, end that line with `\\` and remove any blank line between them"),
        ("NAS/1 nfs\n", "haresources:1: node name 'NAS/1' may hold only letters, digits, '-', '_' and '.' (it is the host name, `uname -n`)"),
        ("NAS1 drbddisk\n", "haresources:1: 'drbddisk': drbddisk needs the resource name (drbddisk::data); hadisk does not promote all resources at once"),
        ("NAS1 hadisk::a::b\n", "haresources:1: 'hadisk::a::b': hadisk takes one argument, the resource name"),
        ("NAS1 hadisk::a/b\n", "haresources:1: 'hadisk::a/b': 'a/b' is not a resource name"),
        ("NAS1 drbddisk::\n", "haresources:1: 'drbddisk::': empty resource type or argument (write TYPE::ARG::ARG)"),
        ("NAS1 ::data\n", "haresources:1: '::data': empty resource type or argument (write TYPE::ARG::ARG)"),
        ("NAS1 Filesystem::/dev/drbd0::/data\n", "haresources:1: 'Filesystem::/dev/drbd0::/data': Filesystem needs a device, a mount point and a filesystem type: Filesystem::DEV::DIR::FSTYPE[::OPTS]"),
        ("NAS1 Filesystem::/dev/drbd0::/data::ext4::rw::x\n", "haresources:1: 'Filesystem::/dev/drbd0::/data::ext4::rw::x': Filesystem takes at most 4 arguments, DEV::DIR::FSTYPE::OPTS"),
        ("NAS1 Filesystem::drbd0::/data::ext4\n", "haresources:1: 'Filesystem::drbd0::/data::ext4': the device 'drbd0' is not a path, UUID=… or LABEL=…"),
        ("NAS1 Filesystem::/dev/drbd0::data::ext4\n", "haresources:1: 'Filesystem::/dev/drbd0::data::ext4': the mount point 'data' is not an absolute path"),
        ("NAS1 Filesystem::/dev/drbd0::/data::ext;4\n", "haresources:1: 'Filesystem::/dev/drbd0::/data::ext;4': 'ext;4' is not a filesystem type"),
        ("NAS1 IPaddr::192.168.0.225\n", "haresources:1: 'IPaddr::192.168.0.225': the address needs its prefix length and interface, IP/PREFIX/IFACE[:LABEL] (e.g. 192.168.0.225/27/eth0:0); hadisk does not guess them"),
        ("NAS1 192.168.0.225\n", "haresources:1: '192.168.0.225': the address needs its prefix length and interface, IP/PREFIX/IFACE[:LABEL] (e.g. 192.168.0.225/27/eth0:0); hadisk does not guess them"),
        ("NAS1 IPaddr::192.168.0.225/27\n", "haresources:1: 'IPaddr::192.168.0.225/27': the address needs its prefix length and interface, IP/PREFIX/IFACE[:LABEL] (e.g. 192.168.0.225/27/eth0:0); hadisk does not guess them"),
        ("NAS1 IPaddr::1.2.3.4/8/e/1.255.255.255/x\n", "haresources:1: 'IPaddr::1.2.3.4/8/e/1.255.255.255/x': too many '/' parts; write IP/PREFIX/IFACE[:LABEL][/BROADCAST]"),
        ("NAS1 IPaddr::192.168.0.256/27/eth0\n", "haresources:1: 'IPaddr::192.168.0.256/27/eth0': '192.168.0.256' is not an IPv4 address"),
        ("NAS1 IPaddr::192.168.0.225/33/eth0\n", "haresources:1: 'IPaddr::192.168.0.225/33/eth0': '33' is not a prefix length (0-32) or a netmask (255.255.255.224)"),
        ("NAS1 IPaddr::192.168.0.225/255.0.255.0/eth0\n", "haresources:1: 'IPaddr::192.168.0.225/255.0.255.0/eth0': '255.0.255.0' is not a prefix length (0-32) or a netmask (255.255.255.224)"),
        ("NAS1 IPaddr::192.168.0.225/27/eth0:\n", "haresources:1: 'IPaddr::192.168.0.225/27/eth0:': the label after ':' is empty"),
        ("NAS1 IPaddr::192.168.0.225/27/:0\n", "haresources:1: 'IPaddr::192.168.0.225/27/:0': the interface name is empty"),
        ("NAS1 IPaddr::192.168.0.225/27/eth0:averylonglabel\n", "haresources:1: 'IPaddr::192.168.0.225/27/eth0:averylonglabel': the label 'eth0:averylonglabel' is longer than Linux's 15 characters"),
        ("NAS1 IPaddr::192.168.0.225/27/eth0/x\n", "haresources:1: 'IPaddr::192.168.0.225/27/eth0/x': 'x' is not a broadcast address"),
        ("NAS1 IPaddr::1.2.3.4/8/e::x\n", "haresources:1: 'IPaddr::1.2.3.4/8/e::x': IPaddr takes one argument, IP/PREFIX/IFACE[:LABEL]"),
        ("NAS1 Delay\n", "haresources:1: 'Delay': Delay takes START[::STOP] (seconds or ms)"),
        ("NAS1 Delay::1::2::3\n", "haresources:1: 'Delay::1::2::3': Delay takes START[::STOP] (seconds or ms)"),
        ("NAS1 Delay::soon\n", "haresources:1: 'Delay::soon': 'soon' is not a time; write seconds (2, 0.5) or milliseconds (200ms)"),
        ("NAS1 filesystem::/dev/drbd0::/data::ext4\n", "haresources:1: 'filesystem::/dev/drbd0::/data::ext4': unknown resource type 'filesystem'; did you mean `Filesystem`? (types are case-sensitive)"),
        ("NAS1 IPAddr::1.2.3.4/8/eth0\n", "haresources:1: 'IPAddr::1.2.3.4/8/eth0': unknown resource type 'IPAddr'; did you mean `IPaddr`? (types are case-sensitive)"),
        ("NAS1 ../../bin/sh\n", "haresources:1: '../../bin/sh': '../../bin/sh' is not a script name (a file name in resource.d/ or /etc/init.d/, without '/')"),
        ("NAS1 .hidden\n", "haresources:1: '.hidden': '.hidden' is not a script name (a file name in resource.d/ or /etc/init.d/, without '/')"),
        ("NAS1 nfs\nNAS1 \\\n a$b\n", "haresources:2: 'a$b': 'a$b' is not a script name (a file name in resource.d/ or /etc/init.d/, without '/')"),
    ];
    let mut failures = Vec::new();
    for (text, want) in table {
        let got = res_err(text);
        if got != *want {
            failures.push(format!("{text:?}\n  got:  {got}\n  want: {want}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let many = format!("NAS1 {}\n", vec!["nfs"; 65].join(" "));
    assert_eq!(
        res_err(&many),
        "haresources:1: the group of 'NAS1' has more than 64 resources"
    );
    let groups = "NAS1 nfs\n".repeat(17);
    assert_eq!(
        res_err(&groups),
        "haresources:17: more than 16 groups; hadisk's agent handles at most 16"
    );
}

#[test]
fn haresources_node_must_be_in_ha_cf() {
    let c = parse_hacf(SEED_HA_CF, Path::new("ha.cf")).unwrap();
    let r = parse_haresources("\nNAS3 nfs\n", Path::new("haresources")).unwrap();
    assert_eq!(
        r.check_nodes(&c, Path::new("haresources")).unwrap_err().to_string(),
        "haresources:2: node 'NAS3' is not a `node` in ha.cf (nodes: NAS1, NAS2); the first word of a group is its preferred node"
    );
}

#[test]
fn load_the_seed_ha_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ha.cf"), SEED_HA_CF).unwrap();
    std::fs::write(dir.path().join("haresources"), SEED_HARESOURCES).unwrap();
    let c = load_hacf(&dir.path().join("ha.cf")).unwrap();
    let r = load_haresources(&dir.path().join("haresources")).unwrap();
    r.check_nodes(&c, &dir.path().join("haresources")).unwrap();
    assert_eq!(r.groups[0].resources, seed_group());
    std::fs::write(dir.path().join("ha.cf"), "node a b\n").unwrap();
    assert_eq!(
        load_hacf(&dir.path().join("ha.cf")).unwrap_err().to_string(),
        format!(
            "{}: has no heartbeat path; add `ucast IFACE PEER-IP` or `bcast IFACE` (mcast is not supported)",
            dir.path().join("ha.cf").display()
        )
    );
}

proptest::proptest! {
    /// Any text, hostile or not, is parsed or refused with an error: never a
    /// panic.
    #[test]
    fn arbitrary_text_never_panics(text in "(?s).{0,400}") {
        let _ = parse_hacf(&text, Path::new("ha.cf"));
        let _ = parse_authkeys(&text, Path::new("authkeys"), true);
        let _ = parse_haresources(&text, Path::new("haresources"));
    }

    /// Text made of the files' own words, to reach deeper than random bytes.
    #[test]
    fn word_soup_never_panics(words in proptest::collection::vec(
        proptest::prop_oneof![
            proptest::strategy::Just("keepalive".to_owned()),
            proptest::strategy::Just("deadtime".to_owned()),
            proptest::strategy::Just("node".to_owned()),
            proptest::strategy::Just("ucast".to_owned()),
            proptest::strategy::Just("auth".to_owned()),
            proptest::strategy::Just("\\\n".to_owned()),
            proptest::strategy::Just("\n".to_owned()),
            proptest::strategy::Just("::".to_owned()),
            proptest::strategy::Just("/".to_owned()),
            "[0-9.]{1,6}(ms|s)?",
            "[a-zA-Z0-9:/._=-]{1,12}",
        ], 0..40)) {
        let text = words.join(" ");
        let _ = parse_hacf(&text, Path::new("ha.cf"));
        let _ = parse_authkeys(&text, Path::new("authkeys"), false);
        let _ = parse_haresources(&text, Path::new("haresources"));
    }
}
