//! Online verify with injected corruption (FAULTS.md, "Verify"): once the
//! pair has settled in the quiescence phase (in sync, idle, no client
//! writes), 1–3 random 4 KiB blocks of the Secondary's image are changed
//! below the core (as bit rot or a stray `dd` would), a random node runs
//! `verify`, and the operator disconnects and reconnects the Secondary.
//! Checkers:
//! * the verify ends (Established on both nodes) and covered the device;
//! * both nodes report exactly the corrupted blocks as found out of sync,
//!   and their bitmaps hold exactly those blocks;
//! * after the resync the usual end checks hold (identical disks, every
//!   acknowledged write present): the corruption was repaired.

use hadisk_core::{AdminOp, Replication};

use super::World;
use crate::disk::SECTOR;

const BLOCK: u64 = 4096;

/// Where a seed's verify scenario is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) enum VerifyPhase {
    /// Not this seed.
    #[default]
    Off,
    /// Waiting for the pair to settle.
    Pending,
    /// `verify` runs on `node`; `blocks` were corrupted.
    Running {
        node: usize,
        blocks: Vec<u64>,
    },
    /// Disconnected and reconnecting: the resync repairs the blocks.
    Repairing,
    Done,
}

impl World {
    /// One step of the scenario from `try_finish`; `true` while it keeps
    /// the run from finishing. `settled`: the pair is in sync and idle.
    pub(super) fn verify_step(&mut self, settled: bool, primary: usize) -> Result<bool, String> {
        match std::mem::take(&mut self.verify) {
            VerifyPhase::Off => Ok(false),
            VerifyPhase::Done => {
                self.verify = VerifyPhase::Done;
                Ok(false)
            }
            VerifyPhase::Pending if !settled => {
                self.verify = VerifyPhase::Pending;
                Ok(true)
            }
            VerifyPhase::Pending => {
                let blocks = self.corrupt(1 - primary);
                let node = self.rng.range(0, 1) as usize;
                self.log(format!(
                    "operator: {} runs verify after corrupting blocks {blocks:?} of {}",
                    self.nodes[node].name,
                    self.nodes[1 - primary].name
                ));
                self.stats.verifies += 1;
                self.verify = VerifyPhase::Running { node, blocks };
                self.admin(node, AdminOp::Verify)?;
                Ok(true)
            }
            VerifyPhase::Running { node, blocks } => {
                if !self.verify_finished(node) {
                    self.verify = VerifyPhase::Running { node, blocks };
                    return Ok(true);
                }
                self.check_verify(&blocks)?;
                let secondary = 1 - primary;
                self.log("operator: disconnect and connect to resync what verify found".into());
                self.verify = VerifyPhase::Repairing;
                self.admin(secondary, AdminOp::Disconnect)?;
                let d = self.rng.range(1, 50);
                self.at(d, super::Ev::Reconnect { node: secondary });
                Ok(true)
            }
            VerifyPhase::Repairing => {
                self.verify = if settled {
                    VerifyPhase::Done
                } else {
                    VerifyPhase::Repairing
                };
                Ok(!settled)
            }
        }
    }

    /// Changes the first sector of 1–3 random blocks of node `i`'s image
    /// (live and durable) to a tag no write has; returns the blocks.
    fn corrupt(&mut self, i: usize) -> Vec<u64> {
        let blocks_total = self.opts.size_bytes / BLOCK;
        let n = self.rng.range(1, 3);
        let mut blocks: Vec<u64> = (0..n)
            .map(|_| self.rng.range(0, blocks_total - 1))
            .collect();
        blocks.sort_unstable();
        blocks.dedup();
        let disk = &mut self.nodes[i].disk;
        for &b in &blocks {
            let s = (b * BLOCK / SECTOR) as usize;
            let bogus = u64::MAX - b;
            disk.live[s] = bogus;
            disk.durable[s] = bogus;
        }
        blocks
    }

    /// Both nodes are back to Established and `node`'s verify is over.
    fn verify_finished(&self, node: usize) -> bool {
        let established = self.nodes.iter().all(|n| {
            n.core
                .as_ref()
                .is_some_and(|c| c.replication() == Replication::Established)
        });
        let over = self.nodes[node]
            .core
            .as_ref()
            .and_then(|c| c.verify_report())
            .is_some_and(|v| !v.running);
        established && over && self.nodes.iter().all(|n| n.admin.is_none())
    }

    fn check_verify(&self, blocks: &[u64]) -> Result<(), String> {
        let expected = blocks.len() as u64 * BLOCK;
        for n in &self.nodes {
            let Some(c) = n.core.as_ref() else {
                return Err(format!("node {} stopped during the verify", n.name));
            };
            let v = c.verify_report();
            let found = v.as_ref().map_or(0, |v| v.out_of_sync_bytes);
            if !v.as_ref().is_some_and(|v| v.complete) || found != expected {
                return Err(format!(
                    "node {}: verify found {found} bytes out of sync ({v:?}), the corrupted blocks {blocks:?} are {expected}",
                    n.name
                ));
            }
            let marked: Vec<u64> = c
                .bitmap()
                .dirty_runs()
                .flat_map(|r| r.collect::<Vec<_>>())
                .collect();
            if marked != blocks {
                return Err(format!(
                    "node {}: after verify the bitmap marks blocks {marked:?}, the corrupted ones are {blocks:?}",
                    n.name
                ));
            }
        }
        Ok(())
    }
}
