#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! DRBD resource files: the seed's `data.res`, user-guide style layouts, and
//! malformed files with their exact error messages and positions.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hadisk_config::drbd::{AfterSb0Pri, AfterSb1Pri, AfterSb2Pri, MetaDisk, OnIoError, Protocol};
use hadisk_config::{load, parse_str, Config, ConfigError};

/// The seed's `/etc/drbd.d/data.res`, verbatim.
const SEED_DATA_RES: &str = "resource data {
  startup { wfc-timeout 30; outdated-wfc-timeout 20; degr-wfc-timeout 30; }
  net { shared-secret sync_disk; }
  on NAS1 { device /dev/drbd0; disk /dev/sdb; address 192.168.0.226:7789; meta-disk internal; }
  on NAS2 { device /dev/drbd0; disk /dev/sdb; address 192.168.0.227:7789; meta-disk internal; }
}
";

fn parse(text: &str) -> Config {
    parse_str(text, Path::new("t.res")).unwrap()
}

fn err(text: &str) -> String {
    parse_str(text, Path::new("t.res")).unwrap_err().to_string()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn seed_data_res_verbatim() {
    let c = parse(SEED_DATA_RES);
    assert_eq!(c.resources.len(), 1);
    let r = c.resource("data").unwrap();
    assert_eq!(r.startup.wfc_timeout_s, 30);
    assert_eq!(r.startup.outdated_wfc_timeout_s, 20);
    assert_eq!(r.startup.degr_wfc_timeout_s, 30);
    assert_eq!(r.net.shared_secret.as_deref(), Some("sync_disk"));
    assert_eq!(r.net.protocol, Protocol::C);
    assert_eq!(r.hosts.len(), 2);
    let me = r.this_host("NAS1").unwrap();
    assert_eq!(me.device.as_deref(), Some(Path::new("/dev/drbd0")));
    assert_eq!(me.disk, PathBuf::from("/dev/sdb"));
    assert_eq!(me.address, addr("192.168.0.226:7789"));
    assert_eq!(me.meta_disk, MetaDisk::Internal);
    let peer = r.peer_host("NAS1").unwrap();
    assert_eq!(peer.name, "NAS2");
    assert_eq!(peer.address, addr("192.168.0.227:7789"));
    assert_eq!(r.peer_host("NAS2").unwrap().name, "NAS1");
    assert!(c.ignored().next().is_none());
    // DRBD 8.4 defaults where the file says nothing.
    assert_eq!(r.net.timeout_ms, 6_000);
    assert_eq!(r.net.ping_timeout_ms, 500);
    assert_eq!(r.net.connect_int_ms, 10_000);
    assert_eq!(r.disk.resync_rate_bytes_per_s, 250 * 1024);
    assert_eq!(r.disk.al_extents, 1237);
    assert_eq!(r.disk.on_io_error, OnIoError::Detach);
}

#[test]
fn host_not_defined_message() {
    let c = parse(SEED_DATA_RES);
    let r = c.resource("data").unwrap();
    assert_eq!(
        r.this_host("x").unwrap_err().to_string(),
        "'data' not defined in your config (for this host 'x'); hosts: NAS1, NAS2"
    );
    assert_eq!(
        r.peer_host("nas3").unwrap_err().to_string(),
        "'data' not defined in your config (for this host 'nas3'); hosts: NAS1, NAS2"
    );
    // Case and domain do not matter, as for host names.
    assert_eq!(r.this_host("nas1.example.com").unwrap().name, "NAS1");
}

#[test]
fn unknown_resource_lists_defined_ones() {
    let c = parse(SEED_DATA_RES);
    assert_eq!(
        c.resource("r0").unwrap_err().to_string(),
        "resource 'r0' not defined in your config; resources: data"
    );
    let empty = parse("global { usage-count no; }");
    assert_eq!(
        empty.resource("data").unwrap_err().to_string(),
        "resource 'data' not defined in your config; resources: none"
    );
}

const GLOBAL_COMMON: &str = r#"# /etc/drbd.d/global_common.conf
global {
    usage-count no;
    # minor-count dialog-refresh disable-ip-verification
}
common {
    protocol C;
    handlers {
        pri-on-incon-degr "/usr/lib/drbd/notify-pri-on-incon-degr.sh; /usr/lib/drbd/notify-emergency-reboot.sh; echo b > /proc/sysrq-trigger ; reboot -f";
        split-brain "/usr/lib/drbd/notify-split-brain.sh root";
    }
    startup {
        wfc-timeout 300;
        degr-wfc-timeout 120;
    }
    disk {
        on-io-error detach;
        resync-rate 100M;
        fencing resource-only;
    }
    net {
        cram-hmac-alg sha1;
        shared-secret "common secret";
        after-sb-0pri discard-zero-changes;
        after-sb-1pri discard-secondary;
        after-sb-2pri disconnect;
        max-epoch-size 8000;
    }
}
"#;

const R0_RES: &str = r#"resource r0 {
  net {
    protocol A;
    shared-secret "FooFunFactory";
    timeout 90;        # 9 seconds
    ping-timeout 10;   # 1 second
    ping-int 5;
    connect-int 3;
    csums-alg md5;
    verify-alg sha1;
    allow-two-primaries no;
  }
  disk {
    c-plan-ahead 0;
    al-extents 3389;
    no-disk-flushes;
  }
  options { cpu-mask 0; }
  on alice {
    device    /dev/nbd1 minor 1;
    disk      /dev/sda7;
    address   10.1.1.31:7789;
    meta-disk internal;
    nbd-listen 127.0.0.1:10809;
  }
  on bob {
    volume 0 {
      device    minor 1;
      disk      /dev/sda7;
      meta-disk /dev/sdc [2];
    }
    address   ipv6 [fd00::32]:7789;
  }
}
"#;

const R1_RES: &str = "resource r1 {
  device /dev/drbd2;
  disk /dev/vg/r1;
  meta-disk internal;
  syncer { rate 10M; al-extents 257; verify-alg md5; after r0; }
  split-brain-dir /var/lib/hadisk/split-brain;
  nbd-listen 0.0.0.0:10810;
  floating 10.9.9.1:7790 { node-id 0; }
  floating ipv4 10.9.9.2:7790 { disk /dev/vg/other; node-id 1; }
}
";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, text).unwrap();
    p
}

/// The layout the DRBD user guide describes: drbd.conf includes
/// global_common.conf and drbd.d/*.res.
#[test]
fn user_guide_layout_with_includes() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(
        dir.path(),
        "drbd.conf",
        "# You can find an example in /usr/share/doc/drbd.../drbd.conf.example\n\
         include \"drbd.d/global_common.conf\";\ninclude \"drbd.d/*.res\";\n",
    );
    write(dir.path(), "drbd.d/global_common.conf", GLOBAL_COMMON);
    write(dir.path(), "drbd.d/r0.res", R0_RES);
    write(dir.path(), "drbd.d/r1.res", R1_RES);
    for c in [load(&main).unwrap(), load(dir.path()).unwrap()] {
        check_user_guide(&c, &dir.path().join("drbd.d/global_common.conf"));
    }
}

fn check_user_guide(c: &Config, global_common: &Path) {
    assert_eq!(
        c.resources
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        ["r0", "r1"]
    );
    assert_eq!(c.global.ignored.len(), 1);
    assert_eq!(c.global.ignored[0].option, "usage-count");
    assert_eq!(c.global.ignored[0].line, 3);

    let r0 = c.resource("r0").unwrap();
    // The resource's own values win over common's ...
    assert_eq!(r0.net.protocol, Protocol::A);
    assert_eq!(r0.net.shared_secret.as_deref(), Some("FooFunFactory"));
    // ... and what it does not set is inherited.
    assert_eq!(r0.net.cram_hmac_alg.as_deref(), Some("sha1"));
    assert_eq!(r0.net.after_sb_0pri, AfterSb0Pri::DiscardZeroChanges);
    assert_eq!(r0.net.after_sb_1pri, AfterSb1Pri::DiscardSecondary);
    assert_eq!(r0.net.after_sb_2pri, AfterSb2Pri::Disconnect);
    assert_eq!(r0.startup.wfc_timeout_s, 300);
    assert_eq!(r0.startup.degr_wfc_timeout_s, 120);
    assert_eq!(r0.disk.resync_rate_bytes_per_s, 100 << 20);
    assert_eq!(
        r0.handlers["split-brain"],
        "/usr/lib/drbd/notify-split-brain.sh root"
    );
    assert_eq!(r0.handlers.len(), 2);
    // Units: timeout and ping-timeout in tenths, ping-int and connect-int in seconds.
    assert_eq!(r0.net.timeout_ms, 9_000);
    assert_eq!(r0.net.ping_timeout_ms, 1_000);
    assert_eq!(r0.net.ping_int_ms, 5_000);
    assert_eq!(r0.net.connect_int_ms, 3_000);
    assert_eq!(r0.net.csums_alg.as_deref(), Some("md5"));
    assert_eq!(r0.net.verify_alg.as_deref(), Some("sha1"));
    assert!(!r0.net.allow_two_primaries);
    assert_eq!(r0.disk.c_plan_ahead_ms, 0);
    assert_eq!(r0.disk.al_extents, 3389);
    assert!(!r0.disk.disk_flushes);
    assert!(r0.disk.md_flushes);
    let ignored: Vec<String> = r0
        .ignored
        .iter()
        .map(|i| format!("{}.{}", i.section, i.option))
        .collect();
    assert_eq!(
        ignored,
        ["disk.fencing", "net.max-epoch-size", "options.cpu-mask"]
    );
    assert_eq!(
        fs::canonicalize(&r0.ignored[0].file).unwrap(),
        fs::canonicalize(global_common).unwrap()
    );
    assert_eq!(r0.ignored[0].line, 19);

    let alice = r0.this_host("alice").unwrap();
    assert_eq!(alice.device.as_deref(), Some(Path::new("/dev/nbd1")));
    assert_eq!(alice.minor, Some(1));
    assert_eq!(alice.nbd_listen, Some(addr("127.0.0.1:10809")));
    let bob = r0.peer_host("alice").unwrap();
    assert_eq!(bob.address, addr("[fd00::32]:7789"));
    assert_eq!(bob.device, None);
    assert_eq!(bob.minor, Some(1));
    assert_eq!(
        bob.meta_disk,
        MetaDisk::External {
            path: "/dev/sdc".into(),
            index: Some(2)
        }
    );
    assert_eq!(bob.nbd_listen, None);

    let r1 = c.resource("r1").unwrap();
    assert_eq!(r1.disk.resync_rate_bytes_per_s, 10 << 20);
    assert_eq!(r1.disk.al_extents, 257);
    assert_eq!(r1.net.verify_alg.as_deref(), Some("md5"));
    assert_eq!(
        r1.split_brain_dir.as_deref(),
        Some(Path::new("/var/lib/hadisk/split-brain"))
    );
    assert_eq!(r1.hosts.len(), 2);
    assert!(r1.hosts.iter().all(|h| h.floating));
    assert_eq!(r1.hosts[0].disk, PathBuf::from("/dev/vg/r1"));
    assert_eq!(r1.hosts[1].disk, PathBuf::from("/dev/vg/other"));
    assert_eq!(r1.hosts[0].device.as_deref(), Some(Path::new("/dev/drbd2")));
    assert_eq!(r1.hosts[1].node_id, Some(1));
    assert_eq!(r1.hosts[0].nbd_listen, Some(addr("0.0.0.0:10810")));
    let me = r1.host_by_address(&["10.9.9.2".parse().unwrap()]).unwrap();
    assert_eq!(me.address, addr("10.9.9.2:7790"));
    // floating hosts are not found by name.
    assert!(r1.this_host("10.9.9.1:7790").is_err());
    // common's ignored options are inherited too.
    let ignored: Vec<String> = r1
        .ignored
        .iter()
        .map(|i| format!("{}.{}", i.section, i.option))
        .collect();
    assert_eq!(
        ignored,
        ["disk.fencing", "net.max-epoch-size", "syncer.after"]
    );
}

/// A directory without drbd.conf: global_common.conf and every *.res.
#[test]
fn directory_of_res_files() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "global_common.conf", GLOBAL_COMMON);
    write(dir.path(), "r1.res", R1_RES);
    write(dir.path(), "r0.res", R0_RES);
    write(dir.path(), "notes.txt", "this is not a resource file {");
    let c = load(dir.path()).unwrap();
    check_user_guide(&c, &dir.path().join("global_common.conf"));
}

#[test]
fn seed_file_in_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "data.res", SEED_DATA_RES);
    let c = load(dir.path()).unwrap();
    assert_eq!(c.resource("data").unwrap().hosts.len(), 2);
}

#[test]
fn drbd83_style_file() {
    let c = parse(
        "common { syncer { rate 33M; } }
resource r8 {
  protocol B;
  handlers { local-io-error \"/bin/true\"; }
  disk { on-io-error pass_on; no-disk-barrier; no-md-flushes; }
  net { after-sb-0pri discard-least-changes; after-sb-1pri consensus; after-sb-2pri call-pri-lost-after-sb; }
  startup { become-primary-on both; }
  on a { device /dev/drbd1; disk /dev/hda1; address 10.0.0.1:7788; flexible-meta-disk internal; }
  on b { device /dev/drbd1; disk /dev/hda1; address 10.0.0.2:7788; meta-disk /dev/hdb1[0]; }
}",
    );
    let r = c.resource("r8").unwrap();
    assert_eq!(r.net.protocol, Protocol::B);
    assert_eq!(r.disk.resync_rate_bytes_per_s, 33 << 20);
    assert_eq!(r.disk.on_io_error, OnIoError::PassOn);
    assert!(!r.disk.md_flushes);
    assert_eq!(r.net.after_sb_0pri, AfterSb0Pri::DiscardLeastChanges);
    assert_eq!(r.net.after_sb_1pri, AfterSb1Pri::Consensus);
    assert_eq!(r.net.after_sb_2pri, AfterSb2Pri::CallPriLostAfterSb);
    assert_eq!(r.startup.become_primary_on.as_deref(), Some("both"));
    assert_eq!(
        r.hosts[1].meta_disk,
        MetaDisk::External {
            path: "/dev/hdb1".into(),
            index: Some(0)
        }
    );
    assert_eq!(r.ignored.len(), 1);
    assert_eq!(r.ignored[0].option, "no-disk-barrier");
}

#[test]
fn resync_rate_units() {
    let with_rate = |rate: &str| {
        let text =
            SEED_DATA_RES.replace("net {", &format!("disk {{ resync-rate {rate}; }} net {{"));
        parse(&text).resources[0].disk.resync_rate_bytes_per_s
    };
    assert_eq!(with_rate("100M"), 100 << 20);
    assert_eq!(with_rate("100m"), 100 << 20);
    assert_eq!(with_rate("1G"), 1 << 30);
    assert_eq!(with_rate("500K"), 500 << 10);
    assert_eq!(with_rate("500"), 500 << 10); // a plain number is KiB/s
    assert_eq!(with_rate("2048s"), 1 << 20); // sectors
}

#[test]
fn resync_controller_options() {
    let r = &parse(&SEED_DATA_RES.replace(
        "net {",
        "disk { c-plan-ahead 10; c-fill-target 10M; c-min-rate 4M; c-max-rate 1G; c-delay-target 10; } net {",
    ))
    .resources[0];
    assert_eq!(r.disk.c_plan_ahead_ms, 1_000);
    assert_eq!(r.disk.c_fill_target_bytes, 10 << 20);
    assert_eq!(r.disk.c_min_rate_bytes_per_s, 4 << 20);
    assert_eq!(r.disk.c_max_rate_bytes_per_s, 1 << 30);
    // Units as DRBD's: c-fill-target in sectors, the rates in KiB/s.
    let r = &parse(&SEED_DATA_RES.replace(
        "net {",
        "syncer { c-fill-target 200; c-min-rate 0; c-max-rate 500; } net {",
    ))
    .resources[0];
    assert_eq!(r.disk.c_fill_target_bytes, 200 * 512);
    assert_eq!(r.disk.c_min_rate_bytes_per_s, 0);
    assert_eq!(r.disk.c_max_rate_bytes_per_s, 500 << 10);
    // Defaults: DRBD's, except no c-max-rate cap.
    let d = &parse(SEED_DATA_RES).resources[0].disk;
    assert_eq!(
        (
            d.c_fill_target_bytes,
            d.c_min_rate_bytes_per_s,
            d.c_max_rate_bytes_per_s
        ),
        (50 << 10, 250 << 10, 0)
    );
}

#[test]
fn c_delay_target_is_reported_as_ignored() {
    let c = parse(&SEED_DATA_RES.replace("net {", "disk { c-delay-target 10; } net {"));
    let r = &c.resources[0];
    assert_eq!(r.ignored.len(), 1);
    assert_eq!(r.ignored[0].option, "c-delay-target");
}

#[test]
fn ipv6_without_family_and_comments_everywhere() {
    let c = parse(
        "resource v6 { # comment after brace
  on n1 { disk /d; address [fd00::1]:7789; } # trailing
  on n2 { disk \"/dev/disk/by-id/with space\"; address ipv6 [fd00::2]:7789; }
}",
    );
    let r = &c.resources[0];
    assert_eq!(r.hosts[0].address, addr("[fd00::1]:7789"));
    assert_eq!(r.hosts[1].disk, PathBuf::from("/dev/disk/by-id/with space"));
}

// ---------------------------------------------------------------------------
// Malformed files: exact messages and positions.

#[test]
fn missing_semicolon_between_lines() {
    let text = "resource data {\n  net { shared-secret sync_disk\n        protocol C; }\n}";
    assert_eq!(err(text), "t.res:2:32: missing `;` after `sync_disk`");
}

#[test]
fn missing_semicolon_before_brace() {
    let text = SEED_DATA_RES.replace("wfc-timeout 30; outdated", "wfc-timeout 30 outdated");
    // `wfc-timeout 30 outdated-wfc-timeout 20;` on one line: too many values.
    assert_eq!(
        err(&text),
        "t.res:2:28: unexpected `outdated-wfc-timeout`: too many values for `wfc-timeout` (usage: wfc-timeout SECONDS;)"
    );
    let text = SEED_DATA_RES.replace("degr-wfc-timeout 30; }", "degr-wfc-timeout 30 }");
    assert_eq!(err(&text), "t.res:2:74: missing `;` after `30` before `}`");
}

#[test]
fn unclosed_brace() {
    let text = SEED_DATA_RES.replace("meta-disk internal; }\n}", "meta-disk internal;\n}");
    assert_eq!(
        err(&text),
        "t.res:1:15: unclosed `{` of `resource data`: the matching `}` is missing"
    );
    assert_eq!(
        err("resource data {\n  net {\n"),
        "t.res:2:7: unclosed `{` of `net`: the matching `}` is missing"
    );
}

#[test]
fn unknown_keyword_with_suggestion() {
    let text = SEED_DATA_RES.replace("startup { wfc-timeout", "startup { wfc-timout");
    assert_eq!(
        err(&text),
        "t.res:2:13: unknown keyword `wfc-timout` in `startup`; did you mean `wfc-timeout`?"
    );
    let text = SEED_DATA_RES.replace("net { shared-secret", "net { shared-secert");
    assert_eq!(
        err(&text),
        "t.res:3:9: unknown keyword `shared-secert` in `net`; did you mean `shared-secret`?"
    );
    assert_eq!(
        err("resorce data { }"),
        "t.res:1:1: unknown keyword `resorce` at top level: expected resource, common, global or include; did you mean `resource`?"
    );
    let text = SEED_DATA_RES.replace(
        "meta-disk internal; }\n  on NAS2",
        "meta-disc internal; }\n  on NAS2",
    );
    assert_eq!(
        err(&text),
        "t.res:4:75: unknown keyword `meta-disc` in `on NAS1`; did you mean `meta-disk`?"
    );
    assert_eq!(
        err("resource r { frobnicate 1; }"),
        "t.res:1:14: unknown keyword `frobnicate` in `resource`"
    );
}

#[test]
fn bad_number() {
    let text = SEED_DATA_RES.replace("wfc-timeout 30;", "wfc-timeout thirty;");
    assert_eq!(
        err(&text),
        "t.res:2:25: `thirty` is not a number: `wfc-timeout` takes seconds, 0 = wait forever"
    );
    let text = SEED_DATA_RES.replace("net { shared-secret sync_disk; }", "net { timeout 700; }");
    assert_eq!(
        err(&text),
        "t.res:3:17: `700` is out of range for `timeout`: 1..600 (tenths of a second)"
    );
}

#[test]
fn bad_unit() {
    let text = SEED_DATA_RES.replace("net {", "disk { resync-rate 100X; } net {");
    assert_eq!(
        err(&text),
        "t.res:3:22: bad unit `X` in `100X` for `resync-rate`: use K, M or G (powers of 1024) or s (512-byte sectors); a plain number means KiB"
    );
    let text = SEED_DATA_RES.replace("wfc-timeout 30;", "wfc-timeout 30s;");
    assert_eq!(err(&text), "t.res:2:25: bad unit in `30s`: `wfc-timeout` takes a plain number (seconds, 0 = wait forever)");
    let text = SEED_DATA_RES.replace("net {", "disk { resync-rate 5G; } net {");
    assert_eq!(
        err(&text),
        "t.res:3:22: `5G` is out of range for `resync-rate`: 1K..4G"
    );
}

#[test]
fn bad_address() {
    let text = SEED_DATA_RES.replace("192.168.0.227:7789", "192.168.0.300:7789");
    assert_eq!(
        err(&text),
        "t.res:5:55: bad address `192.168.0.300:7789`: expected IP:PORT (host names are not resolved); usage: address [ipv4|ipv6] IP:PORT; e.g. 192.168.0.226:7789 or ipv6 [fd00::1]:7789"
    );
    let text = SEED_DATA_RES.replace("192.168.0.227:7789", "192.168.0.227");
    assert_eq!(
        err(&text),
        "t.res:5:55: bad address `192.168.0.227`: missing `:PORT`; usage: address [ipv4|ipv6] IP:PORT; e.g. 192.168.0.226:7789 or ipv6 [fd00::1]:7789"
    );
    let text = SEED_DATA_RES.replace(
        "address 192.168.0.227:7789",
        "address ipv6 192.168.0.227:7789",
    );
    assert_eq!(
        err(&text),
        "t.res:5:60: `192.168.0.227:7789` is an IPv4 address but the family says ipv6"
    );
    let text = SEED_DATA_RES.replace(
        "address 192.168.0.227:7789",
        "address sdp 192.168.0.227:7789",
    );
    assert_eq!(
        err(&text),
        "t.res:5:55: address family `sdp` is not supported by hadisk: use ipv4 or ipv6"
    );
}

#[test]
fn duplicate_host() {
    let text = SEED_DATA_RES.replace("on NAS2", "on NAS1");
    assert_eq!(
        err(&text),
        "t.res:5:6: host `NAS1` is defined twice in resource 'data' (first at line 4)"
    );
}

#[test]
fn missing_address() {
    let text = SEED_DATA_RES.replace(" address 192.168.0.227:7789;", "");
    assert_eq!(
        err(&text),
        "t.res:5:3: missing `address` in `on NAS2` of resource 'data'"
    );
    let text = SEED_DATA_RES.replace(
        " disk /dev/sdb; address 192.168.0.226",
        " address 192.168.0.226",
    );
    assert_eq!(
        err(&text),
        "t.res:4:3: missing `disk` in `on NAS1` of resource 'data'"
    );
}

#[test]
fn same_address_twice() {
    let text = SEED_DATA_RES.replace("192.168.0.227:7789", "192.168.0.226:7789");
    assert_eq!(
        err(&text),
        "t.res:5:47: both hosts of 'data' use the address 192.168.0.226:7789"
    );
}

#[test]
fn unterminated_string() {
    let text = SEED_DATA_RES.replace("shared-secret sync_disk;", "shared-secret \"sync_disk;");
    assert_eq!(
        err(&text),
        "t.res:3:23: unterminated string: the closing `\"` is missing on this line"
    );
}

#[test]
fn include_of_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(
        dir.path(),
        "drbd.conf",
        "global { usage-count no; }\ninclude \"drbd.d/missing.conf\";\n",
    );
    let e = load(&main).unwrap_err().to_string();
    let want = format!(
        "{}:2:9: cannot open include file '{}': no such file",
        main.display(),
        dir.path().join("drbd.d/missing.conf").display()
    );
    assert_eq!(e, want);
    // A pattern that matches nothing is fine (an empty drbd.d/).
    let main = write(dir.path(), "drbd.conf", "include \"drbd.d/*.res\";\n");
    assert!(load(&main).unwrap().resources.is_empty());
}

#[test]
fn error_in_included_file_names_that_file() {
    let dir = tempfile::tempdir().unwrap();
    let main = write(dir.path(), "drbd.conf", "include \"drbd.d/*.res\";\n");
    let bad = write(
        dir.path(),
        "drbd.d/bad.res",
        "resource bad {\n  net { protocol D; }\n}\n",
    );
    let e = load(&main).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}:2:18: unknown protocol `D`: expected A, B or C",
            bad.display()
        )
    );
}

#[test]
fn include_loop_is_read_once() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.conf", "include \"b.conf\";\n");
    write(
        dir.path(),
        "b.conf",
        &format!("include \"a.conf\";\n{SEED_DATA_RES}"),
    );
    assert_eq!(load(&a).unwrap().resources.len(), 1);
}

#[test]
fn protocol_d() {
    let text = SEED_DATA_RES.replace("net { shared-secret sync_disk; }", "net { protocol D; }");
    assert_eq!(
        err(&text),
        "t.res:3:18: unknown protocol `D`: expected A, B or C"
    );
}

#[test]
fn resource_with_one_host() {
    let text = SEED_DATA_RES.replace(
        "  on NAS2 { device /dev/drbd0; disk /dev/sdb; address 192.168.0.227:7789; meta-disk internal; }\n",
        "",
    );
    assert_eq!(
        err(&text),
        "t.res:1:1: resource 'data' defines one host (NAS1); hadisk needs two: add the peer's `on HOSTNAME { … }` section"
    );
}

#[test]
fn three_hosts() {
    let head = SEED_DATA_RES.strip_suffix("}\n").unwrap();
    let text = format!("{head}  on NAS3 {{ disk /d; address 10.0.0.3:7789; }}\n}}\n");
    assert_eq!(err(&text), "t.res:6:3: resource 'data' defines a third host `NAS3`: hadisk replicates between two nodes");
}

#[test]
fn bad_enum_value_with_suggestion() {
    let text = SEED_DATA_RES.replace(
        "net { shared-secret sync_disk; }",
        "net { after-sb-0pri discard-zero-change; }",
    );
    assert_eq!(
        err(&text),
        "t.res:3:23: bad value `discard-zero-change` for `after-sb-0pri`: expected one of disconnect, discard-younger-primary, discard-older-primary, discard-zero-changes, discard-least-changes, discard-local, discard-remote; did you mean `discard-zero-changes`?"
    );
}

#[test]
fn duplicate_resource() {
    let text = format!("{SEED_DATA_RES}{SEED_DATA_RES}");
    assert_eq!(
        err(&text),
        "t.res:7:1: resource 'data' is defined twice (first at t.res:1)"
    );
}

#[test]
fn on_in_common_and_stray_brace() {
    assert_eq!(
        err("common { on a { } }"),
        "t.res:1:10: `on` is not allowed in `common`: only startup, net, disk, handlers, options, syncer and protocol are"
    );
    assert_eq!(
        err("global { }\n}\n"),
        "t.res:2:1: unexpected `}`: no block is open here"
    );
    assert_eq!(
        err("\"resource\" data { }"),
        "t.res:1:1: expected a keyword, found string \"resource\""
    );
}

#[test]
fn missing_semicolon_at_end_of_file() {
    assert_eq!(
        err("global { }\ninclude \"x\""),
        "t.res:2:12: missing `;` after `x` at end of file"
    );
}

#[test]
fn bad_boolean_and_handler() {
    let text = SEED_DATA_RES.replace(
        "net { shared-secret sync_disk; }",
        "net { allow-two-primaries maybe; }",
    );
    assert_eq!(
        err(&text),
        "t.res:3:29: bad value `maybe` for `allow-two-primaries`: expected yes or no"
    );
    let text = SEED_DATA_RES.replace(
        "net { shared-secret sync_disk; }",
        "handlers { split-brian \"x\"; }",
    );
    assert_eq!(
        err(&text),
        "t.res:3:14: unknown handler `split-brian` in `handlers`; did you mean `split-brain`?"
    );
}

#[test]
fn io_error_names_the_path() {
    let e = load(Path::new("/nonexistent/hadisk.res")).unwrap_err();
    assert!(matches!(e, ConfigError::Io { .. }));
    assert!(
        e.to_string()
            .starts_with("cannot read /nonexistent/hadisk.res: "),
        "{e}"
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Arbitrary text never panics; an error always has a position.
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            if let Err(e) = parse_str(&text, Path::new("t.res")) {
                prop_assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
            }
        }

        /// Token soup of DRBD's own vocabulary gets deeper into the parser.
        #[test]
        fn drbd_token_soup_never_panics(tokens in proptest::collection::vec(prop_oneof![
            Just("resource"), Just("data"), Just("{"), Just("}"), Just(";"), Just("on"), Just("NAS1"),
            Just("NAS2"), Just("address"), Just("10.0.0.1:7789"), Just("[::1]:7789"), Just("ipv6"), Just("disk"),
            Just("/dev/sdb"), Just("net"), Just("protocol"), Just("C"), Just("common"), Just("global"),
            Just("volume"), Just("0"), Just("meta-disk"), Just("internal"), Just("[1]"), Just("device"),
            Just("minor"), Just("floating"), Just("resync-rate"), Just("100M"), Just("\"s\""), Just("#"),
            Just("\n"), Just("syncer"), Just("rate"), Just("startup"), Just("wfc-timeout"), Just("skip"),
        ], 0..60)) {
            let text = tokens.join(" ");
            if let Err(e) = parse_str(&text, Path::new("t.res")) {
                prop_assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
            }
        }
    }
}

/// The seed blog's own layout of `data.res` (its annotations `<- …`
/// removed): blank lines between statements and the no-break spaces
/// (U+00A0) a copy from the web page brings along.
const SEED_BLOG_LAYOUT: &str = concat!(
    "\u{a0}resource \u{a0} data \u{a0} {\n",
    "\n",
    "\u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} startup \u{a0} {\n",
    "\n",
    "\u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0}wfc-timeout 30;\n",
    "\n",
    "\u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0}outdated-wfc-timeout 20;\n",
    "\n",
    "\u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0}degr-wfc-timeout 30;\n",
    "\n",
    "\u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0}}\n",
    "\n",
    "\u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0}net {\n",
    "\n",
    "\u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0}shared-secret sync_disk;\n",
    "\n",
    "\u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0}}\n",
    "\n",
    "\u{a0}on NAS1 \u{a0} {\n",
    "\n",
    "\u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0}device /dev/drbd0;\n",
    "\n",
    "\u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0}disk /dev/sdb;\n",
    "\n",
    "\u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0}address 192.168.0.226:7789;\n",
    "\n",
    "\u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0}meta-disk internal;\n",
    "\n",
    "\u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0}}\n",
    "\n",
    "\u{a0}on NAS2 \u{a0} { \u{a0} \u{a0}\u{a0}\n",
    "\n",
    "\u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0}device /dev/drbd0;\n",
    "\n",
    "\u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0}disk /dev/sdb;\n",
    "\n",
    "\u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0}address 192.168.0.227:7789;\n",
    "\n",
    "\u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0}meta-disk internal;\n",
    "\n",
    "\u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0} \u{a0}}\n",
    "\n",
    "\u{a0} \u{a0}}\n",
    "\n",
);

#[test]
fn seed_blog_layout_with_no_break_spaces() {
    assert!(SEED_BLOG_LAYOUT.contains('\u{a0}'));
    let blog = parse(SEED_BLOG_LAYOUT);
    let seed = parse(SEED_DATA_RES);
    let (b, s) = (
        blog.resource("data").unwrap(),
        seed.resource("data").unwrap(),
    );
    assert_eq!(b.startup, s.startup);
    assert_eq!(b.net, s.net);
    assert_eq!(b.disk, s.disk);
    assert_eq!(b.hosts.len(), 2);
    for (bh, sh) in b.hosts.iter().zip(&s.hosts) {
        assert_eq!(
            (&bh.name, &bh.device, &bh.disk, bh.address, &bh.meta_disk),
            (&sh.name, &sh.device, &sh.disk, sh.address, &sh.meta_disk)
        );
    }
    assert_eq!(b.hosts[1].line, 31);
}

#[test]
fn blog_annotations_left_in_are_pointed_at() {
    let text = SEED_BLOG_LAYOUT.replacen(
        "device /dev/drbd0;",
        "device /dev/drbd0;    <- \u{b514}\u{c2a4}\u{d06c}",
        1,
    );
    assert_eq!(err(&text), "t.res:21:40: unknown keyword `<-` in `on NAS1`");
}

#[test]
fn split_brain_dir_default_path_and_off() {
    let res = |extra: &str| {
        format!(
            "resource r {{ {extra}\n on a {{ device /dev/nbd0; disk /d; address 10.0.0.1:7789; meta-disk internal; }}\n on b {{ device /dev/nbd0; disk /d; address 10.0.0.2:7789; meta-disk internal; }}\n}}\n"
        )
    };
    let c = parse(&res(""));
    let r = c.resource("r").unwrap();
    assert_eq!(r.split_brain_dir, None);
    assert!(!r.split_brain_save_off);
    assert_eq!(
        hadisk_config::drbd::DEFAULT_SPLIT_BRAIN_DIR,
        "/var/lib/hadisk/split-brain"
    );
    let c = parse(&res("split-brain-dir off;"));
    let r = c.resource("r").unwrap();
    assert_eq!(r.split_brain_dir, None);
    assert!(r.split_brain_save_off);
    assert_eq!(
        err(&res("split-brain-dir saved;")),
        "t.res:1:30: `split-brain-dir` must be an absolute path or `off`, not `saved`"
    );
}

/// A two-node resource `r` whose `net { }` section is `net`.
fn res(net: &str) -> String {
    format!(
        "resource r {{ net {{ {net} }}\n on a {{ device /dev/nbd0; disk /d; address 10.0.0.1:7789; meta-disk internal; }}\n on b {{ device /dev/nbd0; disk /d; address 10.0.0.2:7789; meta-disk internal; }}\n}}\n"
    )
}

#[test]
fn tcp_congestion_defaults_to_cubic_and_system_keeps_the_kernels() {
    let congestion = |net: &str| {
        parse(&res(net))
            .resource("r")
            .unwrap()
            .net
            .tcp_congestion
            .clone()
    };
    assert_eq!(congestion(""), Some("cubic".to_string()));
    assert_eq!(
        hadisk_config::drbd::DEFAULT_TCP_CONGESTION,
        "cubic",
        "README's table names the default"
    );
    assert_eq!(congestion("tcp-congestion reno;"), Some("reno".into()));
    assert_eq!(congestion("tcp-congestion bbr;"), Some("bbr".into()));
    assert_eq!(
        congestion("tcp-congestion highspeed_2;"),
        Some("highspeed_2".into())
    );
    assert_eq!(congestion("tcp-congestion system;"), None);
    // A name the kernel could never have: wrong characters, too long, none.
    assert_eq!(
        err(&res("tcp-congestion Cubic;")),
        "t.res:1:35: `tcp-congestion Cubic` is not a congestion control's name: at most 15 of a-z, 0-9, `_`, `-` (see /proc/sys/net/ipv4/tcp_available_congestion_control), or `system`"
    );
    assert!(err(&res("tcp-congestion abcdefghijklmnop;"))
        .contains("`tcp-congestion abcdefghijklmnop` is not a congestion control's name"));
    assert_eq!(
        err(&res("tcp-congestion;")),
        "t.res:1:34: missing value for `tcp-congestion` (usage: tcp-congestion NAME; (cubic, reno, …) or tcp-congestion system;)"
    );
    assert!(err(&res("tcp-congestion cubic reno;")).contains("unexpected `reno`"));
    // Not reported as an ignored DRBD option: hadisk acts on it.
    assert!(parse(&res("tcp-congestion reno;"))
        .ignored()
        .next()
        .is_none());
}

/// `sndbuf-size` / `rcvbuf-size` as DRBD reads them: bytes, or with K/M;
/// 0 (the default) is autotune; at most 10M; acted upon, not ignored.
#[test]
fn socket_buffer_sizes_are_bytes_up_to_10m_and_zero_autotunes() {
    let sizes = |net: &str| {
        let r = parse(&res(net));
        let net = &r.resource("r").unwrap().net;
        (net.sndbuf_bytes, net.rcvbuf_bytes)
    };
    assert_eq!(sizes(""), (0, 0));
    assert_eq!(
        sizes("sndbuf-size 512k; rcvbuf-size 1M;"),
        (512 << 10, 1 << 20)
    );
    assert_eq!(sizes("sndbuf-size 65536; rcvbuf-size 0;"), (65536, 0));
    assert_eq!(sizes("sndbuf-size 10M;"), (10 << 20, 0));
    assert_eq!(
        hadisk_config::drbd::SOCKET_BUFFER_MAX_BYTES,
        10 << 20,
        "DRBD's DRBD_SNDBUF_SIZE_MAX"
    );
    assert_eq!(
        err(&res("sndbuf-size 11M;")),
        "t.res:1:32: `11M` is out of range for `sndbuf-size`: 0..10M"
    );
    assert!(err(&res("rcvbuf-size 1X;")).contains("bad unit `X` in `1X` for `rcvbuf-size`"));
    assert!(err(&res("rcvbuf-size big;")).contains("`big` is not a number"));
    assert!(parse(&res("sndbuf-size 512k; rcvbuf-size 1M;"))
        .ignored()
        .next()
        .is_none());
}
