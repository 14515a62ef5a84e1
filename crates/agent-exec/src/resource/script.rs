//! Script resources: `NAME[::ARG…]` runs `HA_DIR/resource.d/NAME`, else
//! `/etc/init.d/NAME`, as `SCRIPT ARG… start|stop|status` (Heartbeat's
//! calling convention). Exit 0 is success; for `status`, exit 0 means
//! running (LSB).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cmd;

/// How long a script may take for one action (an NFS server's stop can
/// take a while; a hung one must not hold the group forever).
pub const SCRIPT_LIMIT: Duration = Duration::from_secs(120);
/// Where scripts are looked up after `HA_DIR/resource.d`.
pub const INIT_D: &str = "/etc/init.d";
/// The start of the message when no script exists.
pub const NOT_FOUND: &str = "no script";

/// The action passed to a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `start`.
    Start,
    /// `stop`.
    Stop,
    /// `status`.
    Status,
}

impl Action {
    fn word(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Status => "status",
        }
    }
}

/// The script for `name`: `ha_dir/resource.d/name`, else `/etc/init.d/name`.
pub fn find(ha_dir: &Path, name: &str) -> Result<PathBuf, String> {
    let local = ha_dir.join("resource.d").join(name);
    if local.is_file() {
        return Ok(local);
    }
    let init = Path::new(INIT_D).join(name);
    if init.is_file() {
        return Ok(init);
    }
    Err(format!(
        "{NOT_FOUND} '{name}' in {} or {INIT_D}; install it there (executable, taking start|stop|status)",
        ha_dir.join("resource.d").display()
    ))
}

/// Runs the script for `name` with `args` and `action`.
pub async fn call(
    ha_dir: &Path,
    name: &str,
    args: &[String],
    action: Action,
) -> Result<(), String> {
    let script = find(ha_dir, name)?;
    let mut argv: Vec<&str> = args.iter().map(String::as_str).collect();
    argv.push(action.word());
    cmd::run(&script.to_string_lossy(), &argv, SCRIPT_LIMIT)
        .await
        .map(|_| ())
}
