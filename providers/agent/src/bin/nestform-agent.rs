//! `nestform-agent`: the in-guest agent. Serves the virtio-serial port (or stdin/stdout) forever.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use nestform_agent::agent::{serve_ports, AgentConfig, DEFAULT_MAX_STREAMS};
use nestform_agent::{serve_session, Pipe, DEFAULT_PORT};

/// nestform's in-guest agent: answers the host over one virtio-serial port.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// A port to serve (repeatable: each is served at once, with sessions of its own).
    #[arg(long, default_value = DEFAULT_PORT)]
    port: Vec<PathBuf>,
    /// A unix socket that `relay` may connect to (repeatable); nothing else is allowed.
    #[arg(long = "relay-allow", value_name = "PATH")]
    relay_allow: Vec<PathBuf>,
    /// Streams served at once.
    #[arg(long, default_value_t = DEFAULT_MAX_STREAMS)]
    max_streams: usize,
    /// Serve one session on stdin/stdout instead of the port, then exit (for tests and pipes).
    #[arg(long, conflicts_with = "port")]
    stdio: bool,
}

fn main() {
    let args = Args::parse();
    let config = AgentConfig { relay_allow: args.relay_allow, max_streams: args.max_streams };
    if args.stdio {
        let transport = Pipe::new(io::stdin(), io::stdout());
        match serve_session(transport, &Arc::new(config)) {
            Ok(end) => {
                eprintln!("nestform-agent: session ended after {} streams: {}", end.streams, end.reason)
            }
            Err(e) => {
                eprintln!("nestform-agent: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let ports: Vec<String> = args.port.iter().map(|p| p.display().to_string()).collect();
    eprintln!("nestform-agent {}: serving `{}`", env!("CARGO_PKG_VERSION"), ports.join("`, `"));
    serve_ports(&args.port, config)
}
