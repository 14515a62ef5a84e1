//! Running external commands (`ip`, `mount`, `umount`, scripts) with a time
//! limit, turning every failure into one line that names the command, its
//! exit status and what it printed.

use std::ffi::OsStr;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// The most of a command's output kept for a message: enough for any error
/// line, bounded so a chatty script cannot fill the log.
pub const MAX_MESSAGE_CHARS: usize = 400;

/// What a command printed, when it succeeded.
#[derive(Debug, Clone, Default)]
pub struct Ran {
    /// Its standard output.
    pub stdout: String,
}

/// Runs `program args…` and waits at most `limit`. `Err` is a one-line
/// message saying what ran and how it failed; a command that overstays is
/// killed (kill_on_drop).
pub async fn run<S: AsRef<OsStr>>(
    program: &str,
    args: &[S],
    limit: Duration,
) -> Result<Ran, String> {
    let shown = show(program, args);
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    let out = match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(format!("`{shown}` failed: {e}")),
        Err(_) => {
            return Err(format!(
                "`{shown}` did not finish within {} s and was killed",
                limit.as_secs()
            ))
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(Ran { stdout });
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let said = one_line(if stderr.trim().is_empty() {
        &stdout
    } else {
        &stderr
    });
    let status = match out.status.code() {
        Some(c) => format!("exit {c}"),
        None => "killed by a signal".to_owned(),
    };
    Err(if said.is_empty() {
        format!("`{shown}` failed ({status})")
    } else {
        format!("`{shown}` failed ({status}): {said}")
    })
}

/// The command line as a user would type it (for messages).
pub fn show<S: AsRef<OsStr>>(program: &str, args: &[S]) -> String {
    let mut s = program.to_owned();
    for a in args {
        s.push(' ');
        s.push_str(&a.as_ref().to_string_lossy());
    }
    s
}

/// Output folded to one bounded line.
pub fn one_line(text: &str) -> String {
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    joined.chars().take(MAX_MESSAGE_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failure_names_the_command_and_what_it_said() {
        let err = run(
            "sh",
            &["-c", "echo oops >&2; exit 3"],
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert_eq!(err, "`sh -c echo oops >&2; exit 3` failed (exit 3): oops");
        let ok = run("sh", &["-c", "echo hi"], Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(ok.stdout, "hi\n");
        let err = run(
            "/nonexistent-program",
            &[] as &[&str],
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert!(
            err.starts_with("cannot run `/nonexistent-program`: "),
            "{err}"
        );
        let err = run("sleep", &["5"], Duration::from_millis(100))
            .await
            .unwrap_err();
        assert_eq!(err, "`sleep 5` did not finish within 0 s and was killed");
    }
}
