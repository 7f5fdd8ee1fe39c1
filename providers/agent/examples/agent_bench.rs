//! Prints the agent's round trip for `exec true` and its file transfer throughput over a local channel.
//!
//! `cargo run -p nestform-agent --example agent_bench` serves the agent in-process on a `UnixStream`
//! pair; `-- --agent-bin PATH` runs a built agent binary as a child on stdin/stdout instead (e.g. the
//! static build). The numbers measure the protocol and the agent, not a virtio-serial port.

use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nestform_agent::{serve_session, AgentClient, AgentConfig, ExecRequest, Pipe};

const EXECS: usize = 200;
const FILE_MIB: usize = 64;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let agent_bin = args.iter().position(|a| a == "--agent-bin").and_then(|i| args.get(i + 1));
    let mut agent_child = None;
    let (client, how) = match agent_bin {
        Some(bin) => {
            let mut child = Command::new(bin)
                .arg("--stdio")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("starting the agent binary");
            let transport = Pipe::new(child.stdout.take().unwrap(), child.stdin.take().unwrap());
            agent_child = Some(child);
            (
                AgentClient::handshake(transport).expect("handshake"),
                format!("agent binary `{bin}` over pipes"),
            )
        }
        None => {
            let (ours, theirs) = UnixStream::pair().expect("socket pair");
            thread::spawn(move || serve_session(theirs, &Arc::new(AgentConfig::default())));
            (
                AgentClient::handshake(ours).expect("handshake"),
                "in-process agent over a UnixStream pair".into(),
            )
        }
    };
    println!("nestform-agent bench: {how}");

    let mut rounds: Vec<Duration> = (0..EXECS)
        .map(|_| {
            let started = Instant::now();
            let result = client.exec(ExecRequest::new(["true"])).expect("exec true");
            assert!(result.status.success());
            started.elapsed()
        })
        .collect();
    rounds.sort();
    let mean = rounds.iter().sum::<Duration>() / EXECS as u32;
    println!(
        "exec true round trip over {EXECS} runs: mean {:.2} ms, median {:.2} ms, p95 {:.2} ms",
        ms(mean),
        ms(rounds[EXECS / 2]),
        ms(rounds[EXECS * 95 / 100])
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let remote = dir.path().join("bench.bin");
    let remote = remote.to_str().unwrap();
    let content: Vec<u8> = (0..FILE_MIB << 20).map(|i| (i * 31 % 251) as u8).collect();
    let started = Instant::now();
    client.put_file(remote, &mut content.as_slice(), 0o644).expect("put");
    let put = started.elapsed();
    let mut back = Vec::with_capacity(content.len());
    let started = Instant::now();
    client.get_file(remote, &mut back).expect("get");
    let get = started.elapsed();
    assert!(back == content, "the file came back different");
    println!(
        "file put {FILE_MIB} MiB: {:.0} MiB/s ({:.2} s)",
        FILE_MIB as f64 / put.as_secs_f64(),
        put.as_secs_f64()
    );
    println!(
        "file get {FILE_MIB} MiB: {:.0} MiB/s ({:.2} s)",
        FILE_MIB as f64 / get.as_secs_f64(),
        get.as_secs_f64()
    );
    drop(client);
    if let Some(mut child) = agent_child {
        let _ = child.wait();
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
