//! `ha.cf` as a whole: the pair, the heartbeat paths, and the times'
//! relations (Heartbeat's rules: errors for what cannot work, warnings for
//! what Heartbeat warns about).

use std::path::Path;

use super::directives::{Builder, Given};
use super::{
    AutoFailback, HaCf, HaWarning, DEFAULT_DEADTIME_MS, DEFAULT_KEEPALIVE_MS, DEFAULT_UDPPORT,
    MAX_NODE_NAME_BYTES, MAX_PATHS,
};
use crate::error::{ConfigError, Result};

/// The resolved times, and the warnings about them.
struct Times {
    keepalive_ms: u64,
    deadtime_ms: u64,
    warntime_ms: Option<u64>,
    initdead_ms: u64,
}

impl Builder {
    /// Applies the whole-file rules and builds the [`HaCf`].
    pub(super) fn finish(self, file: &Path) -> Result<HaCf> {
        let nodes = self.check_pair(file)?;
        self.check_paths(file)?;
        let mut warnings = Vec::new();
        let t = self.check_times(file, &mut warnings)?;
        let auto_failback = match self.auto_failback {
            Some((v, _)) => v,
            None => {
                warnings.push(HaWarning {
                    file: file.to_path_buf(),
                    line: None,
                    message: "auto_failback not set; defaulting to legacy (behaves as on)".into(),
                });
                AutoFailback::Legacy
            }
        };
        Ok(HaCf {
            keepalive_ms: t.keepalive_ms,
            deadtime_ms: t.deadtime_ms,
            warntime_ms: t.warntime_ms,
            initdead_ms: t.initdead_ms,
            udpport: self.udpport.map_or(DEFAULT_UDPPORT, |(v, _)| v),
            bcast: self.bcast,
            ucast: self.ucast,
            mcast: self.mcast,
            auto_failback,
            nodes,
            ping: self.ping,
            logfile: self.logfile.map(|(v, _)| v),
            debugfile: self.debugfile.map(|(v, _)| v),
            logfacility: self.logfacility.map(|(v, _)| v),
            ignored: self.ignored,
            warnings,
        })
    }

    /// Exactly two nodes: the agent runs a pair.
    fn check_pair(&self, file: &Path) -> Result<Vec<String>> {
        let nodes: Vec<String> = self.nodes.iter().map(|(n, _)| n.clone()).collect();
        if nodes.len() == 2 {
            return Ok(nodes);
        }
        let listed = if nodes.is_empty() {
            "no node".to_owned()
        } else {
            let plural = if nodes.len() == 1 { "" } else { "s" };
            format!("{} node{plural} ({})", nodes.len(), nodes.join(", "))
        };
        Err(ConfigError::ha_file(
            file,
            format!("names {listed}; hadisk's agent runs a pair: list both nodes with `node NAME` lines"),
        ))
    }

    /// At least one path hadisk can use, and not unboundedly many.
    fn check_paths(&self, file: &Path) -> Result<()> {
        if self.bcast.is_empty() && self.ucast.is_empty() {
            return Err(ConfigError::ha_file(
                file,
                "has no heartbeat path; add `ucast IFACE PEER-IP` or `bcast IFACE` (mcast is not supported)",
            ));
        }
        if self.bcast.len() + self.ucast.len() > MAX_PATHS {
            return Err(ConfigError::ha_file(
                file,
                format!(
                    "has more than {MAX_PATHS} heartbeat paths (ucast lines and bcast interfaces)"
                ),
            ));
        }
        Ok(())
    }

    /// Heartbeat's rules between keepalive, deadtime, warntime and
    /// initdead. An error names the line of the directive at fault (the
    /// first given of those involved), or the file when all are defaults.
    fn check_times(&self, file: &Path, warnings: &mut Vec<HaWarning>) -> Result<Times> {
        let keepalive_ms = self.keepalive.map_or(DEFAULT_KEEPALIVE_MS, |(v, _)| v);
        let deadtime_ms = self.deadtime.map_or(DEFAULT_DEADTIME_MS, |(v, _)| v);
        let at = |given: &[Option<u32>], m: String| match given.iter().flatten().next() {
            Some(line) => ConfigError::ha(file, *line, m),
            None => ConfigError::ha_file(file, m),
        };
        let line_of = |g: &Given<u64>| g.as_ref().map(|(_, l)| *l);
        let mut warn = |line, message| {
            warnings.push(HaWarning {
                file: file.to_path_buf(),
                line,
                message,
            });
        };
        if deadtime_ms <= 2 * keepalive_ms {
            return Err(at(
                &[line_of(&self.deadtime), line_of(&self.keepalive)],
                format!(
                    "deadtime ({deadtime_ms} ms) must be more than twice keepalive ({keepalive_ms} ms), or one lost heartbeat declares the peer dead"
                ),
            ));
        }
        let warntime_ms = self.warntime.map(|(v, _)| v);
        if let Some(w) = warntime_ms {
            if w >= deadtime_ms {
                return Err(at(
                    &[line_of(&self.warntime)],
                    format!("warntime ({w} ms) must be less than deadtime ({deadtime_ms} ms)"),
                ));
            }
            if w <= keepalive_ms {
                warn(
                    line_of(&self.warntime),
                    format!("warntime ({w} ms) is not more than keepalive ({keepalive_ms} ms): every heartbeat will look late"),
                );
            }
        }
        let initdead_ms = self.initdead.map_or(2 * deadtime_ms, |(v, _)| v);
        if initdead_ms < deadtime_ms {
            return Err(at(
                &[line_of(&self.initdead)],
                format!("initdead ({initdead_ms} ms) must be at least deadtime ({deadtime_ms} ms)"),
            ));
        }
        if initdead_ms < 2 * deadtime_ms {
            warn(
                line_of(&self.initdead),
                format!("initdead ({initdead_ms} ms) is less than twice deadtime ({deadtime_ms} ms); Heartbeat recommends at least twice, for slow network start-up"),
            );
        }
        Ok(Times {
            keepalive_ms,
            deadtime_ms,
            warntime_ms,
            initdead_ms,
        })
    }
}

/// Checks a node name: it travels in heartbeats and names the node in
/// `haresources`, so it is bounded and printable.
pub(crate) fn check_node_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_NODE_NAME_BYTES {
        return Err(format!(
            "node name '{name}' is longer than {MAX_NODE_NAME_BYTES} bytes (Linux's host-name limit)"
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "node name '{name}' may hold only letters, digits, '-', '_' and '.' (it is the host name, `uname -n`)"
        ));
    }
    Ok(())
}
