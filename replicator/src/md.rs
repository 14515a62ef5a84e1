//! The offline metadata commands, `create-md RES [--force]` and
//! `dump-md RES [--json]` (DESIGN.md §1.1). They run in-process, without
//! the daemon: the resource file names this node's `disk`, the metadata
//! crate does the format.
//!
//! create-md refuses, each with a message saying what to do:
//! - a disk too small for the metadata plus 1 MiB of data;
//! - existing hadisk metadata (valid or damaged), unless `--force`;
//! - a recognisable filesystem (ext2/3/4, xfs) that extends into the area
//!   the metadata would overwrite, unless `--force` (DRBD silently
//!   destroys its tail). A filesystem that ends below the usable size is
//!   kept and reported.
//!
//! With `--force` on a terminal, create-md names what it will overwrite and
//! asks for `yes` first, as drbdadm does; `--yes` (or a non-terminal stdin,
//! as in scripts) skips the question and prints a note instead.
//!
//! `dump-md --json` prints one object: the fields of
//! [`hadisk_metadata::MetadataDump`] (documented in `metadata/src/dump.rs`)
//! plus `resource`, `node` and `disk` (the backing disk's path).

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Result};
use hadisk_config::drbd::MetaDisk;
use hadisk_config::Host;
use hadisk_metadata::{
    detect_filesystem, detect_metadata, layout::Layout, node_name_hash, Metadata, MetadataDump,
};
use hadisk_storage::{BlockDevice, FileDevice};

use crate::cli::GlobalOpts;

/// This node's `on` section of `resource`, and the resource's al-extents.
fn this_host(g: &GlobalOpts, resource: &str) -> Result<(Host, u32, String)> {
    let config = hadisk_config::load(&g.config)
        .map_err(|e| anyhow::anyhow!("reading the configuration {}: {e}", g.config.display()))?;
    let res = config.resource(resource)?;
    let node = crate::node_name(g)?;
    let host = res.this_host(&node)?.clone();
    if let MetaDisk::External { path, .. } = &host.meta_disk {
        bail!(
            "'{resource}' on '{}' uses an external meta-disk ({}); hadisk supports only \
             `meta-disk internal;` — change the resource file",
            host.name,
            path.display()
        );
    }
    Ok((host, res.disk.al_extents, node))
}

use crate::emit;

/// `println!` through [`emit`].
macro_rules! outln {
    ($($arg:tt)*) => {
        emit(&format!("{}\n", format_args!($($arg)*)))?
    };
}

/// One line: the error's own message, which already names its cause (the
/// typed errors print their `source` in their message), without anyhow
/// repeating the source chain after it.
fn flat(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1u64 << 20) as f64)
}

/// `hadisk create-md RES [--force]`.
pub fn create_md(g: &GlobalOpts, resource: &str, force: bool, yes: bool) -> Result<()> {
    let (host, al_extents, node) = this_host(g, resource)?;
    let path = host.disk.as_path();
    let device: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(path, false).map_err(flat)?);
    let layout = Layout::compute(device.size_bytes(), al_extents).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e}; use a larger disk for '{resource}' (or a smaller al-extents)",
            path.display()
        )
    })?;
    let mut warnings = Vec::new();
    check_existing_metadata(&*device, path, resource, force, &mut warnings)?;
    check_filesystem(&*device, path, resource, &layout, force, &mut warnings)?;
    let asked = !warnings.is_empty() && std::io::stdin().is_terminal() && !yes;
    if asked {
        confirm(&warnings)?;
    }
    let md = Metadata::create(device, al_extents, node_name_hash(&node)).map_err(|e| {
        anyhow::anyhow!("writing metadata on {}: {e}; the metadata may be incomplete: fix the disk and run create-md again (with --force)", path.display())
    })?;
    for warning in warnings.iter().filter(|_| !asked) {
        outln!("note: {warning} (overwritten: --force)");
    }
    let l = md.layout();
    outln!(
        "created hadisk metadata for '{resource}' on {} (node {})",
        path.display(),
        host.name
    );
    outln!(
        "usable size: {} bytes ({}); metadata: {} bytes at the end of the disk; al-extents {}",
        l.usable_size_bytes,
        mib(l.usable_size_bytes),
        l.metadata_bytes(),
        l.al_extents
    );
    Ok(())
}

fn check_existing_metadata(
    device: &dyn BlockDevice,
    path: &Path,
    resource: &str,
    force: bool,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let found = match detect_metadata(device) {
        Ok(None) => return Ok(()),
        Ok(Some(sb)) => format!(
            "{} already holds hadisk metadata (usable size {} bytes, current UUID {:016X}, flags {})",
            path.display(),
            sb.layout.usable_size_bytes,
            sb.uuids.current,
            sb.flags
        ),
        Err(e) => format!("{} holds damaged hadisk metadata ({e})", path.display()),
    };
    if !force {
        bail!(
            "{found}; creating new metadata erases its generation UUIDs and dirty bitmap \
             (the peer will need a full sync). If that is what you want, run \
             `hadisk create-md {resource} --force`"
        );
    }
    warnings.push(found);
    Ok(())
}

fn check_filesystem(
    device: &dyn BlockDevice,
    path: &Path,
    resource: &str,
    layout: &Layout,
    force: bool,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let Some(fs) =
        detect_filesystem(device).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
    else {
        return Ok(());
    };
    let label = if fs.label.is_empty() {
        String::new()
    } else {
        format!(" labelled '{}'", fs.label)
    };
    if fs.size_bytes <= layout.usable_size_bytes {
        outln!(
            "{} holds an {} filesystem{label} of {} bytes; it ends below the usable size of {} \
             bytes and is kept",
            path.display(),
            fs.kind,
            fs.size_bytes,
            layout.usable_size_bytes
        );
        return Ok(());
    }
    let found = format!(
        "{} holds an {} filesystem{label} of {} bytes, whose last {} bytes the metadata would \
         overwrite",
        path.display(),
        fs.kind,
        fs.size_bytes,
        fs.size_bytes - layout.usable_size_bytes
    );
    if !force {
        let usable_kib = layout.usable_size_bytes / 1024;
        bail!(
            "{found} (the usable size is {} bytes); shrink the filesystem to at most {usable_kib} \
             KiB first (ext2/3/4: `resize2fs {} {usable_kib}K`; xfs cannot shrink: copy the data \
             elsewhere), or run `hadisk create-md {resource} --force` to destroy it",
            layout.usable_size_bytes,
            path.display()
        );
    }
    warnings.push(found);
    Ok(())
}

/// With --force on a terminal (and no --yes), as drbdadm asks.
fn confirm(warnings: &[String]) -> Result<()> {
    let mut out = std::io::stdout();
    for warning in warnings {
        writeln!(out, "{warning}.")?;
    }
    write!(out, "Do you want to overwrite it? Type 'yes' to continue: ")?;
    out.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != "yes" {
        bail!("nothing written: answer 'yes' to overwrite, or pass --yes");
    }
    Ok(())
}

/// `hadisk dump-md RES [--json]`.
pub fn dump_md(g: &GlobalOpts, resource: &str, json: bool) -> Result<()> {
    let (host, _, node) = this_host(g, resource)?;
    let path = host.disk.as_path();
    let device: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(path, true).map_err(flat)?);
    let md = Metadata::open(device)
        .map_err(|e| anyhow::anyhow!("'{resource}': {}: {e}", path.display()))?;
    let dump = MetadataDump::of(&md).map_err(flat)?;
    if json {
        let mut value = serde_json::to_value(&dump)?;
        if let Some(object) = value.as_object_mut() {
            object.insert("resource".into(), resource.into());
            object.insert("node".into(), host.name.clone().into());
            object.insert("disk".into(), path.display().to_string().into());
        }
        outln!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        outln!(
            "resource '{resource}', node {} ({node}), disk {}",
            host.name,
            path.display()
        );
        emit(&dump.render_text())?;
    }
    Ok(())
}
