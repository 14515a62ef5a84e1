//! From the statement tree to the typed model: keyword tables, values,
//! `common` inheritance and the checks that make the model's invariants hold.
//!
//! `common { }` is applied to every resource before the resource's own
//! statements, statement by statement, so a value the resource sets wins and
//! one it leaves alone is inherited. Within a section a later statement
//! overrides an earlier one. Resource-level `device`, `disk`, `meta-disk` and
//! `volume` are defaults for the hosts (DRBD 8.4 allows them there).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::model::{
    AfterSb0Pri, AfterSb1Pri, AfterSb2Pri, Config, Disk, Global, Host, Ignored, MetaDisk, Net,
    OnIoError, Protocol, Resource, Startup, SOCKET_BUFFER_MAX_BYTES,
};
use super::options as opt;
use super::syntax::{Pos, Stmt, Value};
use super::values::{
    address, address_in, boolean, did_you_mean, keyword, one, plain_number, size_bytes, values,
};
use crate::error::Result;

/// DRBD's longest `shared-secret` (SHARED_SECRET_MAX in drbd.h).
pub const SHARED_SECRET_MAX_CHARS: usize = 64;

/// DRBD 9's highest `node-id` (DRBD_NODE_ID_MAX - 1): ids are bit positions
/// in 32-bit masks.
pub const NODE_ID_MAX: u64 = 31;

fn ignored(section: &str, s: &Stmt) -> Ignored {
    Ignored {
        section: section.to_owned(),
        option: s.key.clone(),
        file: (*s.pos.file).clone(),
        line: s.pos.line,
    }
}

/// Records `s` as ignored if `section` knows it, else the unknown-keyword error.
fn ignore_or_unknown(
    section: &str,
    s: &Stmt,
    implemented: &[&str],
    known_ignored: &[&str],
    out: &mut Vec<Ignored>,
) -> Result<()> {
    if known_ignored.contains(&s.key.as_str()) {
        out.push(ignored(section, s));
        return Ok(());
    }
    let all = implemented.iter().chain(known_ignored).copied();
    Err(s.pos.error(format!(
        "unknown keyword `{}` in `{section}`{}",
        s.key,
        did_you_mean(&s.key, all)
    )))
}

fn block<'s>(s: &'s Stmt, usage: &str) -> Result<&'s [Stmt]> {
    s.block.as_deref().ok_or_else(|| {
        s.key_end()
            .error(format!("`{}` needs a `{{ … }}` block: {usage}", s.key))
    })
}

/// Builds the configuration from the statements of every file read.
pub(crate) fn build(stmts: &[Stmt]) -> Result<Config> {
    let mut global = Global::default();
    let mut seen_global: Option<&Stmt> = None;
    let mut common: Option<&Stmt> = None;
    let mut resources: Vec<&Stmt> = Vec::new();
    for s in stmts {
        match s.key.as_str() {
            "global" | "common" => {
                let first = if s.key == "global" { &mut seen_global } else { &mut common };
                if let Some(f) = first {
                    return Err(s.pos.error(format!(
                        "second `{}` section (the first is at {}:{})",
                        s.key,
                        f.pos.file.display(),
                        f.pos.line
                    )));
                }
                if let Some(v) = s.values.first() {
                    return Err(v.pos.error(format!("unexpected `{}`: {} {{ … }} takes no name", v.text, s.key)));
                }
                let body = block(s, &format!("{} {{ … }}", s.key))?;
                if s.key == "global" {
                    for o in body {
                        ignore_or_unknown("global", o, &[], opt::GLOBAL_IGNORED, &mut global.ignored)?;
                    }
                }
                *first = Some(s);
            }
            "resource" => resources.push(s),
            "skip" => {}
            other => {
                return Err(s.pos.error(format!(
                    "unknown keyword `{other}` at top level: expected resource, common, global or include{}",
                    did_you_mean(other, opt::TOP_LEVEL.iter().copied())
                )))
            }
        }
    }
    // `common` is checked once on its own, so that its errors surface even
    // when no resource uses it yet.
    if let Some(c) = common {
        let mut d = new_draft("common", &c.pos);
        for s in c.block.as_deref().unwrap_or_default() {
            common_stmt(&mut d, s)?;
        }
    }
    let mut out: Vec<Resource> = Vec::new();
    for r in resources {
        let res = build_resource(r, common)?;
        if let Some(first) = out.iter().find(|o| o.name == res.name) {
            return Err(r.pos.error(format!(
                "resource '{}' is defined twice (first at {}:{})",
                res.name,
                first.file.display(),
                first.line
            )));
        }
        out.push(res);
    }
    Ok(Config {
        global,
        resources: out,
    })
}

/// Device, disk and metadata of a host or of a resource-level default.
#[derive(Debug, Default, Clone)]
struct Volume {
    device: Option<PathBuf>,
    minor: Option<u32>,
    disk: Option<PathBuf>,
    meta_disk: Option<MetaDisk>,
    /// Where a `volume` block was seen: hadisk has one volume per resource.
    volume_at: Option<Pos>,
}

#[derive(Debug)]
struct HostDraft {
    name: String,
    floating: bool,
    pos: Pos,
    vol: Volume,
    address: Option<(std::net::SocketAddr, Pos)>,
    node_id: Option<u32>,
    nbd_listen: Option<std::net::SocketAddr>,
}

#[derive(Debug)]
struct Draft {
    res: Resource,
    pos: Pos,
    defaults: Volume,
    hosts: Vec<HostDraft>,
}

fn build_resource(r: &Stmt, common: Option<&Stmt>) -> Result<Resource> {
    let usage = "resource NAME { … }";
    let body = block(r, usage)?;
    let name = match r.values.as_slice() {
        [n] => n,
        [] => {
            return Err(r
                .key_end()
                .error(format!("`resource` needs a name: {usage}")))
        }
        [_, extra, ..] => {
            return Err(extra
                .pos
                .error(format!("unexpected `{}`: {usage}", extra.text)))
        }
    };
    if name.text.contains('/') || name.text.is_empty() {
        return Err(name.pos.error(format!(
            "bad resource name `{}`: it must be non-empty and contain no `/`",
            name.text
        )));
    }
    let mut d = new_draft(&name.text, &r.pos);
    if let Some(c) = common {
        for s in c.block.as_deref().unwrap_or_default() {
            common_stmt(&mut d, s)?;
        }
    }
    for s in body {
        resource_stmt(&mut d, s)?;
    }
    finish(d)
}

fn new_draft(name: &str, pos: &Pos) -> Draft {
    Draft {
        res: Resource {
            name: name.to_owned(),
            file: (*pos.file).clone(),
            line: pos.line,
            startup: Startup::default(),
            net: Net::default(),
            disk: Disk::default(),
            handlers: BTreeMap::new(),
            hosts: Vec::new(),
            nbd_listen: None,
            split_brain_dir: None,
            split_brain_save_off: false,
            ignored: Vec::new(),
        },
        pos: pos.clone(),
        defaults: Volume::default(),
        hosts: Vec::new(),
    }
}

/// A statement of `common { }`: sections and `protocol` only.
fn common_stmt(d: &mut Draft, s: &Stmt) -> Result<()> {
    let is_section = s.block.is_some()
        && matches!(
            s.key.as_str(),
            "disk" | "net" | "startup" | "handlers" | "options" | "syncer"
        );
    if is_section || matches!(s.key.as_str(), "protocol" | "skip") {
        return resource_stmt(d, s);
    }
    let allowed = [
        "startup", "net", "disk", "handlers", "options", "syncer", "protocol",
    ];
    Err(s.pos.error(format!(
        "`{}` is not allowed in `common`: only startup, net, disk, handlers, options, syncer and protocol are{}",
        s.key,
        if allowed.contains(&s.key.as_str()) { String::new() } else { did_you_mean(&s.key, allowed) }
    )))
}

fn resource_stmt(d: &mut Draft, s: &Stmt) -> Result<()> {
    let sec = |name: &str| format!("{name} {{ … }}");
    match s.key.as_str() {
        "startup" => block(s, &sec("startup"))?
            .iter()
            .try_for_each(|o| startup_option(d, o)),
        "net" => block(s, &sec("net"))?
            .iter()
            .try_for_each(|o| net_option(d, o)),
        "disk" if s.block.is_some() => block(s, &sec("disk"))?
            .iter()
            .try_for_each(|o| disk_option(d, o)),
        "syncer" => block(s, &sec("syncer"))?
            .iter()
            .try_for_each(|o| syncer_option(d, o)),
        "handlers" => block(s, &sec("handlers"))?
            .iter()
            .try_for_each(|o| handler(d, o)),
        "options" => block(s, &sec("options"))?.iter().try_for_each(|o| {
            ignore_or_unknown("options", o, &[], opt::OPTIONS_IGNORED, &mut d.res.ignored)
        }),
        "protocol" => net_option(d, s),
        "on" | "floating" => host(d, s),
        "device" | "disk" | "meta-disk" | "flexible-meta-disk" | "volume" => {
            let mut vol = std::mem::take(&mut d.defaults);
            let r = volume_stmt(&mut vol, s);
            d.defaults = vol;
            r
        }
        "nbd-listen" => {
            d.res.nbd_listen = Some(address(s)?);
            Ok(())
        }
        "split-brain-dir" => {
            let v = one(s, "split-brain-dir /ABSOLUTE/PATH;")?;
            if v.text == "off" {
                d.res.split_brain_dir = None;
                d.res.split_brain_save_off = true;
                return Ok(());
            }
            if !v.text.starts_with('/') {
                return Err(v.pos.error(format!(
                    "`split-brain-dir` must be an absolute path or `off`, not `{}`",
                    v.text
                )));
            }
            d.res.split_brain_dir = Some(PathBuf::from(&v.text));
            Ok(())
        }
        "stacked-on-top-of" => Err(s
            .pos
            .error("stacked resources (`stacked-on-top-of`) are not supported by hadisk")),
        "skip" => Ok(()),
        _ => ignore_or_unknown(
            "resource",
            s,
            opt::RESOURCE_KEYWORDS,
            opt::RESOURCE_IGNORED,
            &mut d.res.ignored,
        ),
    }
}

fn startup_option(d: &mut Draft, s: &Stmt) -> Result<()> {
    let st = &mut d.res.startup;
    let secs = |s: &Stmt| -> Result<u32> {
        let v = one(s, &format!("{} SECONDS;", s.key))?;
        Ok(plain_number(v, &s.key, 0, 300_000, "seconds, 0 = wait forever")? as u32)
    };
    match s.key.as_str() {
        "wfc-timeout" => st.wfc_timeout_s = secs(s)?,
        "degr-wfc-timeout" => st.degr_wfc_timeout_s = secs(s)?,
        "outdated-wfc-timeout" => st.outdated_wfc_timeout_s = secs(s)?,
        "become-primary-on" => {
            st.become_primary_on = Some(one(s, "become-primary-on HOST|both;")?.text.clone())
        }
        _ => {
            return ignore_or_unknown(
                "startup",
                s,
                opt::STARTUP_IMPLEMENTED,
                opt::STARTUP_IGNORED,
                &mut d.res.ignored,
            )
        }
    }
    Ok(())
}

/// A time in DRBD's `unit_ms` units (100 for tenths, 1000 for seconds),
/// converted to milliseconds.
fn time_ms(s: &Stmt, min: u64, max: u64, unit_ms: u64) -> Result<u64> {
    let what = if unit_ms == 100 {
        "tenths of a second"
    } else {
        "seconds"
    };
    let v = one(s, &format!("{} N; ({what})", s.key))?;
    Ok(plain_number(v, &s.key, min, max, what)? * unit_ms)
}

fn string_value(s: &Stmt) -> Result<String> {
    Ok(one(s, &format!("{} VALUE;", s.key))?.text.clone())
}

fn net_option(d: &mut Draft, s: &Stmt) -> Result<()> {
    let net = &mut d.res.net;
    match s.key.as_str() {
        "protocol" => {
            let v = one(s, "protocol A|B|C;")?;
            net.protocol = Protocol::from_name(&v.text).ok_or_else(|| {
                v.pos
                    .error(format!("unknown protocol `{}`: expected A, B or C", v.text))
            })?;
        }
        "shared-secret" => {
            let v = string_value(s)?;
            if v.chars().count() > SHARED_SECRET_MAX_CHARS {
                return Err(s.values[0].pos.error(format!(
                    "`shared-secret` is longer than {SHARED_SECRET_MAX_CHARS} characters (DRBD's limit)"
                )));
            }
            net.shared_secret = Some(v);
        }
        "cram-hmac-alg" => net.cram_hmac_alg = Some(string_value(s)?),
        "csums-alg" => net.csums_alg = Some(string_value(s)?),
        "verify-alg" => net.verify_alg = Some(string_value(s)?),
        "after-sb-0pri" => net.after_sb_0pri = keyword(s, AfterSb0Pri::ALL)?,
        "after-sb-1pri" => net.after_sb_1pri = keyword(s, AfterSb1Pri::ALL)?,
        "after-sb-2pri" => net.after_sb_2pri = keyword(s, AfterSb2Pri::ALL)?,
        "timeout" => net.timeout_ms = time_ms(s, 1, 600, 100)?,
        "ping-timeout" => net.ping_timeout_ms = time_ms(s, 1, 300, 100)?,
        "ping-int" => net.ping_int_ms = time_ms(s, 1, 120, 1000)?,
        "connect-int" => net.connect_int_ms = time_ms(s, 1, 120, 1000)?,
        "max-buffers" => {
            let v = one(s, "max-buffers N;")?;
            net.max_buffers = plain_number(v, "max-buffers", 32, 131_072, "pages")? as u32;
        }
        "allow-two-primaries" => net.allow_two_primaries = boolean(s)?,
        "tcp-congestion" => net.tcp_congestion = tcp_congestion(s)?,
        "sndbuf-size" => net.sndbuf_bytes = socket_buffer(s)?,
        "rcvbuf-size" => net.rcvbuf_bytes = socket_buffer(s)?,
        _ => {
            return ignore_or_unknown(
                "net",
                s,
                opt::NET_IMPLEMENTED,
                opt::NET_IGNORED,
                &mut d.res.ignored,
            )
        }
    }
    Ok(())
}

/// The kernel's limit on a congestion control's name (`TCP_CA_NAME_MAX`
/// is 16 bytes with the terminating NUL).
const TCP_CA_NAME_MAX_CHARS: usize = 15;

/// `tcp-congestion NAME;` or `tcp-congestion system;` (`None`). Whether the
/// kernel has NAME is known only when the link sets it; the daemon then logs
/// a refusal and keeps the default, so a typo here is caught by shape only.
fn tcp_congestion(s: &Stmt) -> Result<Option<String>> {
    let v = one(
        s,
        "tcp-congestion NAME; (cubic, reno, …) or tcp-congestion system;",
    )?;
    if v.text == "system" {
        return Ok(None);
    }
    let shaped = !v.text.is_empty()
        && v.text.len() <= TCP_CA_NAME_MAX_CHARS
        && v.text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !shaped {
        return Err(v.pos.error(format!(
            "`tcp-congestion {}` is not a congestion control's name: at most {TCP_CA_NAME_MAX_CHARS} of a-z, 0-9, `_`, `-` (see /proc/sys/net/ipv4/tcp_available_congestion_control), or `system`",
            v.text
        )));
    }
    Ok(Some(v.text.clone()))
}

/// `sndbuf-size` / `rcvbuf-size`: bytes (a plain number) or K, M, G, up
/// to DRBD's 10M; 0 means autotune.
fn socket_buffer(s: &Stmt) -> Result<u64> {
    let v = one(
        s,
        &format!("{} SIZE; (bytes, or with K or M; 0 = autotune)", s.key),
    )?;
    size_bytes(v, &s.key, 1, 0, SOCKET_BUFFER_MAX_BYTES)
}

/// DRBD's resync-rate range: 1 KiB/s to 4 GiB/s (drbd_limits.h).
const RESYNC_RATE_MIN_BYTES_PER_S: u64 = 1 << 10;
/// See [`RESYNC_RATE_MIN_BYTES_PER_S`].
const RESYNC_RATE_MAX_BYTES_PER_S: u64 = 4 << 30;

fn resync_rate(s: &Stmt) -> Result<u64> {
    let v = one(
        s,
        &format!(
            "{} RATE; (K, M, G per second; a plain number means KiB/s)",
            s.key
        ),
    )?;
    size_bytes(
        v,
        &s.key,
        1024,
        RESYNC_RATE_MIN_BYTES_PER_S,
        RESYNC_RATE_MAX_BYTES_PER_S,
    )
}

/// DRBD's `c-fill-target` limit: 1 GiB (drbd_limits.h, in sectors).
const C_FILL_TARGET_MAX_BYTES: u64 = 1 << 30;

/// `c-fill-target`, `c-min-rate`, `c-max-rate` (DRBD's units and limits).
fn controller_option(disk: &mut Disk, s: &Stmt) -> Result<()> {
    let v = one(s, &format!("{} VALUE;", s.key))?;
    match s.key.as_str() {
        "c-fill-target" => {
            disk.c_fill_target_bytes = size_bytes(v, &s.key, 512, 0, C_FILL_TARGET_MAX_BYTES)?
        }
        "c-min-rate" => {
            disk.c_min_rate_bytes_per_s =
                size_bytes(v, &s.key, 1024, 0, RESYNC_RATE_MAX_BYTES_PER_S)?
        }
        _ => {
            disk.c_max_rate_bytes_per_s = size_bytes(
                v,
                &s.key,
                1024,
                RESYNC_RATE_MIN_BYTES_PER_S,
                RESYNC_RATE_MAX_BYTES_PER_S,
            )?
        }
    }
    Ok(())
}

fn al_extents(s: &Stmt) -> Result<u32> {
    let v = one(s, "al-extents N;")?;
    Ok(plain_number(v, "al-extents", 67, 65_534, "4 MiB extents")? as u32)
}

fn disk_option(d: &mut Draft, s: &Stmt) -> Result<()> {
    let disk = &mut d.res.disk;
    match s.key.as_str() {
        "on-io-error" => disk.on_io_error = keyword(s, OnIoError::ALL)?,
        "resync-rate" => disk.resync_rate_bytes_per_s = resync_rate(s)?,
        "c-plan-ahead" => disk.c_plan_ahead_ms = time_ms(s, 0, 300, 100)?,
        "c-fill-target" | "c-min-rate" | "c-max-rate" => controller_option(disk, s)?,
        "al-extents" => disk.al_extents = al_extents(s)?,
        "disk-flushes" => disk.disk_flushes = boolean(s)?,
        "md-flushes" => disk.md_flushes = boolean(s)?,
        "no-disk-flushes" | "no-md-flushes" => {
            values(s, 0, 0, &format!("{};", s.key))?;
            if s.key == "no-disk-flushes" {
                disk.disk_flushes = false;
            } else {
                disk.md_flushes = false;
            }
        }
        _ => {
            return ignore_or_unknown(
                "disk",
                s,
                opt::DISK_IMPLEMENTED,
                opt::DISK_IGNORED,
                &mut d.res.ignored,
            )
        }
    }
    Ok(())
}

fn syncer_option(d: &mut Draft, s: &Stmt) -> Result<()> {
    match s.key.as_str() {
        "rate" => d.res.disk.resync_rate_bytes_per_s = resync_rate(s)?,
        "al-extents" => d.res.disk.al_extents = al_extents(s)?,
        "c-plan-ahead" => d.res.disk.c_plan_ahead_ms = time_ms(s, 0, 300, 100)?,
        "c-fill-target" | "c-min-rate" | "c-max-rate" => controller_option(&mut d.res.disk, s)?,
        "verify-alg" => d.res.net.verify_alg = Some(string_value(s)?),
        "csums-alg" => d.res.net.csums_alg = Some(string_value(s)?),
        _ => {
            return ignore_or_unknown(
                "syncer",
                s,
                opt::SYNCER_IMPLEMENTED,
                opt::SYNCER_IGNORED,
                &mut d.res.ignored,
            )
        }
    }
    Ok(())
}

fn handler(d: &mut Draft, s: &Stmt) -> Result<()> {
    if !opt::HANDLERS.contains(&s.key.as_str()) {
        return Err(s.pos.error(format!(
            "unknown handler `{}` in `handlers`{}",
            s.key,
            did_you_mean(&s.key, opt::HANDLERS.iter().copied())
        )));
    }
    let cmd = one(s, &format!("{} \"COMMAND\";", s.key))?;
    d.res.handlers.insert(s.key.clone(), cmd.text.clone());
    Ok(())
}

/// `device`, `disk`, `meta-disk`, `flexible-meta-disk`, `volume` into `vol`.
fn volume_stmt(vol: &mut Volume, s: &Stmt) -> Result<()> {
    match s.key.as_str() {
        "device" => device(vol, s),
        "disk" => {
            let v = one(s, "disk /dev/BACKING;")?;
            if v.text == "none" {
                return Err(v
                    .pos
                    .error("diskless nodes (`disk none`) are not supported by hadisk"));
            }
            vol.disk = Some(PathBuf::from(&v.text));
            Ok(())
        }
        "meta-disk" | "flexible-meta-disk" => {
            vol.meta_disk = Some(meta_disk(s)?);
            Ok(())
        }
        _ => volume_block(vol, s),
    }
}

fn volume_block(vol: &mut Volume, s: &Stmt) -> Result<()> {
    let body = block(s, "volume N { device …; disk …; meta-disk …; }")?;
    let n = one_head(s, "volume N { … }")?;
    plain_number(n, "volume", 0, 65_535, "a volume number")?;
    if let Some(first) = &vol.volume_at {
        return Err(s.pos.error(format!(
            "a second `volume` (the first is at line {}): hadisk replicates one volume per resource; use one resource per volume",
            first.line
        )));
    }
    vol.volume_at = Some(s.pos.clone());
    for o in body {
        if !opt::VOLUME_KEYWORDS.contains(&o.key.as_str()) {
            return Err(o.pos.error(format!(
                "unknown keyword `{}` in `volume`{}",
                o.key,
                did_you_mean(&o.key, opt::VOLUME_KEYWORDS.iter().copied())
            )));
        }
        volume_stmt(vol, o)?;
    }
    Ok(())
}

/// The single value before a block (`on NAME {`, `volume N {`).
fn one_head<'s>(s: &'s Stmt, usage: &str) -> Result<&'s Value> {
    match s.values.as_slice() {
        [v] => Ok(v),
        [] => Err(s
            .key_end()
            .error(format!("`{}` needs a name: {usage}", s.key))),
        [_, extra, ..] => Err(extra
            .pos
            .error(format!("unexpected `{}`: {usage}", extra.text))),
    }
}

fn device(vol: &mut Volume, s: &Stmt) -> Result<()> {
    let usage = "device /dev/NAME [minor N]; or device minor N;";
    let vals = values(s, 1, 3, usage)?;
    let minor_at = |i: usize| -> Result<Option<u32>> {
        match (vals.get(i), vals.get(i + 1)) {
            (None, _) => Ok(None),
            (Some(m), Some(n)) if m.text == "minor" && vals.len() == i + 2 => Ok(Some(
                plain_number(n, "minor", 0, (1 << 20) - 1, "a device minor number")? as u32,
            )),
            (Some(m), _) => Err(m.pos.error(format!(
                "unexpected `{}` in `device` (usage: {usage})",
                m.text
            ))),
        }
    };
    if vals[0].text == "minor" {
        vol.device = None;
        vol.minor = minor_at(0)?;
    } else {
        vol.device = Some(PathBuf::from(&vals[0].text));
        vol.minor = minor_at(1)?;
    }
    Ok(())
}

fn meta_disk(s: &Stmt) -> Result<MetaDisk> {
    let usage = format!("{} internal; or {} /dev/DEVICE [[INDEX]];", s.key, s.key);
    let vals = values(s, 1, 2, &usage)?;
    let index_of = |v: &Value| -> Result<u32> {
        let inner = v
            .text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(&v.text);
        let digits = Value {
            text: inner.to_owned(),
            ..v.clone()
        };
        Ok(plain_number(&digits, &s.key, 0, 255, "a metadata index")? as u32)
    };
    match vals {
        [v] if v.text == "internal" => Ok(MetaDisk::Internal),
        [v] => match v.text.find('[') {
            Some(i) if v.text.ends_with(']') => {
                let idx = Value {
                    text: v.text[i..].to_owned(),
                    ..v.clone()
                };
                Ok(MetaDisk::External {
                    path: PathBuf::from(&v.text[..i]),
                    index: Some(index_of(&idx)?),
                })
            }
            _ => Ok(MetaDisk::External {
                path: PathBuf::from(&v.text),
                index: None,
            }),
        },
        [p, i] if p.text != "internal" => Ok(MetaDisk::External {
            path: PathBuf::from(&p.text),
            index: Some(index_of(i)?),
        }),
        [_, extra] => Err(extra.pos.error(format!(
            "unexpected `{}` after `internal` (usage: {usage})",
            extra.text
        ))),
        _ => Err(s
            .pos
            .error(format!("missing value for `{}` (usage: {usage})", s.key))),
    }
}

fn host(d: &mut Draft, s: &Stmt) -> Result<()> {
    let floating = s.key == "floating";
    let usage = if floating {
        "floating [ipv4|ipv6] IP:PORT { … }"
    } else {
        "on HOSTNAME { … }"
    };
    let body = block(s, usage)?;
    let mut h = HostDraft {
        name: String::new(),
        floating,
        pos: s.pos.clone(),
        vol: Volume::default(),
        address: None,
        node_id: None,
        nbd_listen: None,
    };
    if floating {
        let addr = address_in(s, &s.values, usage)?;
        h.name = s
            .values
            .iter()
            .map(|v| v.text.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        h.address = Some((addr, s.pos.clone()));
    } else {
        let name = one_head(s, usage)?;
        if let Some(first) = d.hosts.iter().find(|o| o.name == name.text) {
            return Err(name.pos.error(format!(
                "host `{}` is defined twice in resource '{}' (first at line {})",
                name.text, d.res.name, first.pos.line
            )));
        }
        h.name = name.text.clone();
    }
    for o in body {
        host_stmt(d, &mut h, o)?;
    }
    d.hosts.push(h);
    Ok(())
}

fn host_stmt(d: &mut Draft, h: &mut HostDraft, o: &Stmt) -> Result<()> {
    match o.key.as_str() {
        "address" => {
            if h.floating {
                return Err(o
                    .pos
                    .error("a `floating` section has its address in its head; remove `address`"));
            }
            h.address = Some((address(o)?, o.pos.clone()));
        }
        "node-id" => {
            let v = one(o, "node-id N;")?;
            h.node_id = Some(plain_number(v, "node-id", 0, NODE_ID_MAX, "a node id")? as u32);
        }
        "nbd-listen" => h.nbd_listen = Some(address(o)?),
        "proxy" => d.res.ignored.push(ignored("on", o)),
        k if opt::VOLUME_KEYWORDS.contains(&k) || k == "volume" => volume_stmt(&mut h.vol, o)?,
        k => {
            let section = if h.floating { "floating" } else { "on" };
            return Err(o.pos.error(format!(
                "unknown keyword `{k}` in `{section} {}`{}",
                h.name,
                did_you_mean(k, opt::HOST_KEYWORDS.iter().copied())
            )));
        }
    }
    Ok(())
}

fn finish(d: Draft) -> Result<Resource> {
    let Draft {
        mut res,
        pos,
        defaults,
        hosts,
    } = d;
    let names = || {
        hosts
            .iter()
            .map(|h| h.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match hosts.len() {
        0 => return Err(pos.error(format!(
            "resource '{}' defines no hosts; hadisk needs two `on HOSTNAME {{ … }}` sections",
            res.name
        ))),
        1 => return Err(pos.error(format!(
            "resource '{}' defines one host ({}); hadisk needs two: add the peer's `on HOSTNAME {{ … }}` section",
            res.name,
            names()
        ))),
        _ => {}
    }
    if let Some(third) = hosts.get(2) {
        return Err(third.pos.error(format!(
            "resource '{}' defines a third host `{}`: hadisk replicates between two nodes",
            res.name, third.name
        )));
    }
    for h in &hosts {
        res.hosts.push(finish_host(&res, h, &defaults)?);
    }
    if let ([a, b], Some((_, at))) = (
        res.hosts.as_slice(),
        hosts.get(1).and_then(|h| h.address.as_ref()),
    ) {
        if a.address == b.address {
            return Err(at.error(format!(
                "both hosts of '{}' use the address {}",
                res.name, a.address
            )));
        }
    }
    Ok(res)
}

fn finish_host(res: &Resource, h: &HostDraft, defaults: &Volume) -> Result<Host> {
    let section = format!("{} {}", if h.floating { "floating" } else { "on" }, h.name);
    let missing = |what: &str| {
        h.pos.error(format!(
            "missing `{what}` in `{section}` of resource '{}'",
            res.name
        ))
    };
    let disk = h
        .vol
        .disk
        .clone()
        .or_else(|| defaults.disk.clone())
        .ok_or_else(|| missing("disk"))?;
    let (address, _) = h.address.clone().ok_or_else(|| missing("address"))?;
    let (device, minor) = if h.vol.device.is_some() || h.vol.minor.is_some() {
        (h.vol.device.clone(), h.vol.minor)
    } else {
        (defaults.device.clone(), defaults.minor)
    };
    Ok(Host {
        name: h.name.clone(),
        floating: h.floating,
        device,
        minor,
        disk,
        address,
        meta_disk: h
            .vol
            .meta_disk
            .clone()
            .or_else(|| defaults.meta_disk.clone())
            .unwrap_or_default(),
        node_id: h.node_id,
        nbd_listen: h.nbd_listen.or(res.nbd_listen),
        line: h.pos.line,
    })
}
