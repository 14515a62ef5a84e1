//! DRBD resource files (`drbd.conf`, `global_common.conf`, `*.res`): DRBD
//! 8.3/8.4/9 grammar into hadisk's typed [`Config`].
//!
//! Entry points: [`load`] for a path as `--config` gives it, [`parse_str`]
//! for text. `syntax` turns text into a statement tree (with `include`
//! resolved), `build` turns the tree into the model, checking every keyword
//! against the tables in [`options`].

mod build;
pub mod model;
pub mod options;
mod syntax;
mod values;

use std::path::Path;

pub use build::{NODE_ID_MAX, SHARED_SECRET_MAX_CHARS};
pub use model::{
    AfterSb0Pri, AfterSb1Pri, AfterSb2Pri, Config, Disk, Global, Host, Ignored, MetaDisk, Net,
    OnIoError, Protocol, Resource, Startup, DEFAULT_SPLIT_BRAIN_DIR, DEFAULT_TCP_CONGESTION,
    SOCKET_BUFFER_MAX_BYTES,
};
pub(crate) use syntax::read_limited;
pub use syntax::{MAX_BLOCK_DEPTH, MAX_FILE_BYTES, MAX_INCLUDE_DEPTH};

use crate::error::{ConfigError, Result};

/// Reads the configuration at `path`.
///
/// A file is read with everything it includes. A directory is read as
/// drbdadm's `/etc` would be: its `drbd.conf` when there is one (which
/// normally includes the rest); otherwise its `global_common.conf` (if any)
/// and then its `*.res` files in name order. A file reached twice (listed
/// and included) is read once.
pub fn load(path: &Path) -> Result<Config> {
    let mut loader = syntax::Loader::default();
    let mut stmts = Vec::new();
    if path.is_dir() {
        let main = path.join("drbd.conf");
        if main.is_file() {
            stmts = loader.load(&main, 0)?;
        } else {
            let gc = path.join("global_common.conf");
            if gc.is_file() {
                stmts.append(&mut loader.load(&gc, 0)?);
            }
            for f in res_files(path)? {
                stmts.append(&mut loader.load(&f, 0)?);
            }
        }
    } else {
        stmts = loader.load(path, 0)?;
    }
    build::build(&stmts)
}

/// The `*.res` files of a directory, sorted by name.
fn res_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let io = |source| ConfigError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let p = entry.map_err(io)?.path();
        if p.extension().is_some_and(|e| e == "res") && p.is_file() {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Parses `text` as if it were the file `file` (named in errors; its
/// `include`s are resolved relative to its directory).
pub fn parse_str(text: &str, file: &Path) -> Result<Config> {
    let stmts = syntax::parse_text(text, file)?;
    let stmts = syntax::Loader::default().resolve(stmts, file, 0)?;
    build::build(&stmts)
}
