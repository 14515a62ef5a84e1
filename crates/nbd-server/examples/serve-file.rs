//! Serves one file (or block device) over NBD on a Unix socket until SIGINT/SIGTERM.
//!
//! Usage: serve-file FILE SOCKET [--name NAME] [--read-only] [--inline|--blocking]
//!                   [--tcp ADDR:PORT] [--workers N]
//! The export is named `NAME` (default `data`) and is also the default export.
#![allow(clippy::print_stderr)]

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use hadisk_nbd_server::{ExportInfo, ExportRegistry, IoMode, LocalVolume, Server, Volume};
use hadisk_storage::FileDevice;

struct OneExport {
    name: String,
    volume: Arc<dyn Volume>,
}

impl ExportRegistry for OneExport {
    fn list(&self) -> Vec<ExportInfo> {
        vec![ExportInfo {
            name: self.name.clone(),
            description: "served by serve-file".to_owned(),
        }]
    }
    fn open(&self, name: &str) -> Result<Arc<dyn Volume>, String> {
        if name.is_empty() || name == self.name {
            Ok(Arc::clone(&self.volume))
        } else {
            Err(format!(
                "no export named {name:?} (this server has {:?})",
                self.name
            ))
        }
    }
}

struct Options {
    file: String,
    socket: String,
    name: String,
    read_only: bool,
    mode: IoMode,
    tcp: Option<SocketAddr>,
    workers: usize,
}

fn parse() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut positional = Vec::new();
    let mut options = Options {
        file: String::new(),
        socket: String::new(),
        name: "data".to_owned(),
        read_only: false,
        mode: IoMode::default(),
        tcp: None,
        workers: 2,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--name" => options.name = args.next().ok_or("--name needs a value")?,
            "--read-only" => options.read_only = true,
            "--inline" => options.mode = IoMode::Inline,
            "--blocking" => options.mode = IoMode::Blocking,
            "--tcp" => {
                let addr = args.next().ok_or("--tcp needs ADDR:PORT")?;
                options.tcp = Some(addr.parse().map_err(|e| format!("--tcp {addr}: {e}"))?);
            }
            "--workers" => {
                let n = args.next().ok_or("--workers needs a number")?;
                options.workers = n.parse().map_err(|e| format!("--workers {n}: {e}"))?;
            }
            other if other.starts_with("--") => return Err(format!("unknown option {other}")),
            other => positional.push(other.to_owned()),
        }
    }
    let [file, socket] = <[String; 2]>::try_from(positional)
        .map_err(|_| "usage: serve-file FILE SOCKET [--name NAME] [--read-only] [--inline|--blocking] [--tcp ADDR:PORT] [--workers N]")?;
    options.file = file;
    options.socket = socket;
    Ok(options)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let options = match parse() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("serve-file: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.workers.max(1))
        .enable_all()
        .build();
    let result = match runtime {
        Ok(runtime) => runtime.block_on(run(options)),
        Err(e) => Err(format!("cannot start the runtime: {e}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("serve-file: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(options: Options) -> Result<(), String> {
    let device = FileDevice::open(&options.file, options.read_only).map_err(|e| e.to_string())?;
    let volume = LocalVolume::whole(Arc::new(device), options.read_only, options.mode);
    let registry = OneExport {
        name: options.name,
        volume: Arc::new(volume),
    };
    let server = Server::new(Arc::new(registry));
    server
        .listen_unix(&options.socket)
        .map_err(|e| e.to_string())?;
    if let Some(addr) = options.tcp {
        let bound = server.listen_tcp(addr).await.map_err(|e| e.to_string())?;
        eprintln!("serve-file: listening on {bound}");
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot catch SIGTERM: {e}"))?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    server.shutdown().await;
    Ok(())
}
