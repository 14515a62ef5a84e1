//! The agent's three files, read from one directory (`--ha-dir`) and checked
//! against each other before anything starts.
//!
//! Invariants of a loaded [`HaFiles`]: `authkeys` is a regular file of mode
//! 600 (or stricter) with an active key; every group's node is one of the
//! pair; this node is one of the pair.

use std::path::{Path, PathBuf};

use hadisk_config::ha::{load_authkeys, load_hacf, load_haresources, Authkeys, HaCf, Haresources};
use hadisk_config::ConfigError;

/// Why the agent's files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// A file is missing, unreadable or wrong (the message has file:line).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// authkeys names an active key it does not define.
    #[error("{file}: `auth {active}` names a key that is not defined; add a line `{active} sha1 SECRET`")]
    NoActiveKey {
        /// The authkeys file.
        file: PathBuf,
        /// The index `auth` names.
        active: u8,
    },
    /// This node is not one of ha.cf's pair.
    #[error("{file}: this node '{me}' is not a `node` (nodes: {nodes}); set --node or the host name to one of them")]
    NotInPair {
        /// ha.cf.
        file: PathBuf,
        /// This node's name.
        me: String,
        /// ha.cf's nodes.
        nodes: String,
    },
}

/// `ha.cf`, `authkeys` and `haresources` of one directory.
#[derive(Debug, Clone)]
pub struct HaFiles {
    /// The directory (scripts are looked up in its `resource.d`).
    pub dir: PathBuf,
    /// ha.cf.
    pub hacf: HaCf,
    /// authkeys.
    pub authkeys: Authkeys,
    /// haresources.
    pub haresources: Haresources,
}

impl HaFiles {
    /// Loads and checks the files of `dir` for node `me`. crc keys are
    /// refused (they have no secret): heartbeats would be forgeable.
    pub fn load(dir: &Path, me: &str) -> Result<Self, FilesError> {
        let hacf_path = dir.join("ha.cf");
        let hacf = load_hacf(&hacf_path)?;
        let keys_path = dir.join("authkeys");
        let authkeys = load_authkeys(&keys_path, false)?;
        if authkeys.active_key().is_none() {
            return Err(FilesError::NoActiveKey {
                file: keys_path,
                active: authkeys.active,
            });
        }
        let res_path = dir.join("haresources");
        let haresources = load_haresources(&res_path)?;
        haresources.check_nodes(&hacf, &res_path)?;
        if !hacf.has_node(me) {
            return Err(FilesError::NotInPair {
                file: hacf_path,
                me: me.to_owned(),
                nodes: hacf.nodes.join(", "),
            });
        }
        Ok(HaFiles {
            dir: dir.to_path_buf(),
            hacf,
            authkeys,
            haresources,
        })
    }
}
