//! Control messages carried as JSON in `Hello`, `Welcome`, `Open` and `Control` frames.
//!
//! Bytes (stdin, stdout, file content, relayed bytes) never go through JSON: they travel in `Data` and
//! `ErrData` frames. JSON is only for the few small messages that open, describe and end a stream.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Protocol version this build speaks. Both sides refuse a peer that speaks another one.
pub const PROTOCOL_VERSION: u32 = 1;

/// Capabilities this agent build announces in its [`Welcome`]. `keepalive`: a running `exec` stream
/// carries an empty `Credit` at least every [`KEEPALIVE_INTERVAL`], so a client may give up on one
/// silent for longer (an agent without it stays silent while its program does).
pub const CAPABILITIES: &[&str] = &["facts", "exec", "file_put", "file_get", "relay", "keepalive"];

/// How often an agent that announces `keepalive` sends one on a running exec that sent nothing else.
pub const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// First message of a connection, from the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version the client speaks.
    pub protocol: u32,
    /// Random value the agent echoes, so the client knows the reply answers this hello and not an
    /// earlier session's.
    pub nonce: u64,
    /// Client software version, for the agent's log.
    pub client_version: String,
}

/// The agent's answer to a [`Hello`] it accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// Protocol version the agent speaks. It stays the first field in every version: clients find the
    /// welcome by how its frame begins ([`crate::frame::WELCOME_MARK`]).
    pub protocol: u32,
    /// The nonce from the hello.
    pub nonce: u64,
    /// Agent software version.
    pub agent_version: String,
    /// Operations this agent serves.
    pub capabilities: Vec<String>,
}

/// What a client asks for when it opens a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Describe the guest.
    Facts,
    /// Run a program.
    Exec(ExecSpec),
    /// Receive a file: `Data` frames then a [`ClientMessage::Trailer`].
    FilePut {
        /// Destination path in the guest.
        path: String,
        /// Permission bits of the new file.
        mode: u32,
    },
    /// Send a file: [`AgentMessage::FileMeta`], `Data` frames, then [`AgentMessage::Trailer`].
    FileGet {
        /// Source path in the guest.
        path: String,
    },
    /// Connect to an allowed local unix socket and relay bytes both ways.
    Relay {
        /// Socket path; must be on the agent's allowlist.
        path: String,
        /// Refuse the relay while another relay of this agent (of any session) holds `path`: for a
        /// socket whose server takes one client at a time (QEMU's chardev behind a guest's agent
        /// channel), where a second client would wait unanswered in the listen queue. Agents older
        /// than this field ignore it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        exclusive: bool,
    },
}

/// The program an `exec` stream runs. Stdin, if any, follows as `Data` frames and an `Eof`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    /// Program and arguments; `argv[0]` is looked up in `PATH`.
    pub argv: Vec<String>,
    /// Variables added to (or replacing those in) the agent's environment.
    pub env: Vec<(String, String)>,
    /// Start from an empty environment instead of the agent's.
    pub clear_env: bool,
    /// Working directory; the agent's own when absent.
    pub cwd: Option<String>,
    /// Whether the client sends stdin; when false the program's stdin is `/dev/null`.
    pub stdin: bool,
    /// Milliseconds after which the agent kills the program's whole process group.
    pub timeout_ms: Option<u64>,
}

/// How a program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code, when the program exited.
    pub code: Option<i32>,
    /// Signal number, when a signal ended it.
    pub signal: Option<i32>,
    /// The agent killed it because its timeout ran out.
    pub timed_out: bool,
    /// Microseconds from its start to its exit on the guest's monotonic clock: what a measurement
    /// reports, free of the channel's round trip. Absent from an agent that does not measure it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_us: Option<u64>,
    /// The agent answered without waiting for everything after a timeout's kill: the output may be
    /// cut, and `code`/`signal` are absent when the program had not been reaped yet. Absent (false)
    /// from an agent that always waits, so older peers read and write the same JSON as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub incomplete: bool,
}

impl ExitStatus {
    /// Exited with code 0 and was not killed.
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }
}

/// Size, mode and checksum of a transferred file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// Bytes.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// CRC-32 (IEEE) of the content.
    pub crc32: u32,
}

/// Control messages from the agent inside a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMessage {
    /// Answer to [`Request::Facts`].
    Facts(Facts),
    /// The program ended (`exec`).
    Exit(ExitStatus),
    /// A file is about to follow (`file_get`).
    FileMeta {
        /// Size at open time.
        size: u64,
        /// Permission bits.
        mode: u32,
    },
    /// All content was sent (`file_get`), or received and renamed into place (`file_put`).
    Trailer {
        /// Bytes.
        size: u64,
        /// CRC-32 (IEEE) of the bytes.
        crc32: u32,
    },
    /// The relay is connected; bytes may flow.
    Connected,
}

/// Control messages from the client inside a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// All content was sent (`file_put`); the agent checks it before renaming.
    Trailer {
        /// Bytes.
        size: u64,
        /// CRC-32 (IEEE) of the bytes.
        crc32: u32,
    },
}

/// What the agent reports about its guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    /// Host name.
    pub hostname: String,
    /// Kernel release (`uname -r`).
    pub kernel_release: String,
    /// CPUs this agent may run on.
    pub cpu_count: u32,
    /// Total memory in bytes (`MemTotal`).
    pub memory_bytes: u64,
    /// Nesting level from `nestform.level=N` on the kernel command line, else 0.
    pub nesting_level: u32,
    /// `/dev/kvm` exists.
    pub kvm_present: bool,
    /// `/dev/kvm` could be opened for reading and writing.
    pub kvm_openable: bool,
    /// The loaded KVM vendor module and its `nested` parameter, when one is loaded.
    pub kvm_nested: Option<KvmNested>,
    /// Addresses of the guest's interfaces.
    pub addresses: Vec<NetAddress>,
}

/// A KVM vendor module and whether it allows nested guests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvmNested {
    /// Module name, e.g. `kvm_amd`.
    pub module: String,
    /// The `nested` parameter is `Y` or `1`.
    pub enabled: bool,
}

/// One address of one interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetAddress {
    /// Interface name.
    pub interface: String,
    /// Address.
    pub address: IpAddr,
    /// Prefix length of the subnet.
    pub prefix_len: u8,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_json_is_tagged_by_op() {
        let json = serde_json::to_value(Request::Relay { path: "/s".into(), exclusive: false }).unwrap();
        assert_eq!(json, serde_json::json!({"op": "relay", "path": "/s"}));
        let exec: Request =
            serde_json::from_str(r#"{"op":"exec","argv":["true"],"env":[],"clear_env":false,"cwd":null,"stdin":false,"timeout_ms":null}"#)
                .unwrap();
        assert!(matches!(exec, Request::Exec(spec) if spec.argv == ["true"]));
    }

    #[test]
    fn exit_status_success_needs_code_zero_and_no_timeout() {
        let ok =
            ExitStatus { code: Some(0), signal: None, timed_out: false, elapsed_us: None, incomplete: false };
        assert!(ok.success());
        assert!(!ExitStatus { code: Some(1), ..ok }.success());
        assert!(
            !ExitStatus { code: None, signal: Some(9), timed_out: true, elapsed_us: Some(3), ..ok }.success()
        );
    }
}
