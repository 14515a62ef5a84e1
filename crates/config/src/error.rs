//! The one error type of this crate.
//!
//! Every error a user can cause names the file and the place in it: DRBD
//! resource files as `FILE:LINE:COL: message` (the position of the token at
//! fault, 1-based, columns counted in characters), Heartbeat files as
//! `FILE:LINE: message`, as Heartbeat itself reports them.

use std::path::PathBuf;

/// Everything that can go wrong while reading hadisk's configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read (or a directory listed).
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },

    /// A DRBD resource file is malformed; `message` says what is wrong and,
    /// where it helps, what was probably meant.
    #[error("{}:{line}:{col}: {message}", file.display())]
    Parse {
        /// The file holding the fault (an included file, when it is there).
        file: PathBuf,
        /// 1-based line.
        line: u32,
        /// 1-based column, in characters.
        col: u32,
        /// What is wrong.
        message: String,
    },

    /// `resource(name)` asked for a resource no file defines.
    #[error("resource '{name}' not defined in your config; resources: {defined}")]
    UnknownResource {
        /// The name asked for.
        name: String,
        /// The defined resources, comma-separated ("none" when there are none).
        defined: String,
    },

    /// This node has no `on` section in the resource: DRBD's message, plus the
    /// hosts that are defined, so that a mismatched host name is obvious.
    #[error("'{resource}' not defined in your config (for this host '{host}'); hosts: {hosts}")]
    HostNotDefined {
        /// The resource.
        resource: String,
        /// The node name looked up (`--node`, or the host name).
        host: String,
        /// The `on` sections' names, comma-separated.
        hosts: String,
    },

    /// The resource has no host other than this node.
    #[error("'{resource}' has no peer for host '{host}'; hosts: {hosts}")]
    NoPeer {
        /// The resource.
        resource: String,
        /// The node name looked up.
        host: String,
        /// The `on` sections' names, comma-separated.
        hosts: String,
    },

    /// A Heartbeat file (`ha.cf`, `authkeys`, `haresources`) is malformed.
    #[error("{}:{line}: {message}", file.display())]
    HaParse {
        /// The file.
        file: PathBuf,
        /// 1-based line (the first line of a `\`-continued line).
        line: u32,
        /// What is wrong.
        message: String,
    },

    /// A Heartbeat file is unusable as a whole (e.g. `authkeys` readable by
    /// others, or without an `auth` line).
    #[error("{}: {message}", file.display())]
    HaFile {
        /// The file.
        file: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
}

impl ConfigError {
    /// A `Parse` error at a position.
    pub(crate) fn parse(
        file: &std::path::Path,
        line: u32,
        col: u32,
        message: impl Into<String>,
    ) -> Self {
        ConfigError::Parse {
            file: file.to_path_buf(),
            line,
            col,
            message: message.into(),
        }
    }

    /// A `HaParse` error at a line.
    pub(crate) fn ha(file: &std::path::Path, line: u32, message: impl Into<String>) -> Self {
        ConfigError::HaParse {
            file: file.to_path_buf(),
            line,
            message: message.into(),
        }
    }

    /// A `HaFile` error about a whole file.
    pub(crate) fn ha_file(file: &std::path::Path, message: impl Into<String>) -> Self {
        ConfigError::HaFile {
            file: file.to_path_buf(),
            message: message.into(),
        }
    }
}

/// Shorthand for this crate's results.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;
