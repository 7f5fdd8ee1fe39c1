//! The serial console logs of a promoted lab guest's own guests, read through that guest's agent.
//!
//! The libvirtd that `promote` starts in a lab guest keeps each of its guests' console logs in the
//! guest's own `/var/log/libvirt/qemu` (the libvirt provider names the file in the domain's XML), so
//! the controller cannot read them as files of its own; the agent of the guest they are in can.

use std::io::Write;

use nestform_agent::{AgentClient, ClientError};

/// Where a lab guest's libvirtd keeps its guests' console logs: the libvirt provider's
/// `channel::CONSOLE_LOG_DIR`, which it writes into each domain's XML. Keep the two in step (a test
/// compares them).
pub const CONSOLE_LOG_DIR: &str = "/var/log/libvirt/qemu";

/// The console log of the domain `name` inside the guest.
pub fn console_log_path(name: &str) -> String {
    format!("{CONSOLE_LOG_DIR}/{name}-console.log")
}

/// The last `max_bytes` of the console log of domain `name`, which runs inside the guest `client`
/// talks to; cut at a line start when the cut falls inside a line, carriage returns removed.
pub fn console_tail(client: &AgentClient, name: &str, max_bytes: usize) -> Result<String, ClientError> {
    console_tail_of(client, &console_log_path(name), max_bytes)
}

/// [`console_tail`] of the log file at `path` in the guest.
pub fn console_tail_of(client: &AgentClient, path: &str, max_bytes: usize) -> Result<String, ClientError> {
    let mut end = TailWriter { max: max_bytes, kept: Vec::new(), cut: false };
    client.get_file(path, &mut end)?;
    let mut text: &[u8] = &end.kept;
    if end.cut {
        if let Some(nl) = text.iter().position(|b| *b == b'\n') {
            text = &text[nl + 1..];
        }
    }
    Ok(String::from_utf8_lossy(text).replace('\r', ""))
}

/// Keeps the last `max` bytes written to it, so a long log costs no more memory than its tail.
struct TailWriter {
    max: usize,
    kept: Vec<u8>,
    /// Whether bytes before `kept` were dropped.
    cut: bool,
}

impl Write for TailWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.kept.extend_from_slice(buf);
        if self.kept.len() > self.max {
            let drop = self.kept.len() - self.max;
            self.kept.drain(..drop);
            self.cut = true;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_comes_through_the_agent_and_starts_at_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("g2-console.log");
        let body =
            "Linux version 6.1.0\r\n".to_string() + &"x".repeat(100_000) + "\r\nnestform-init: booted\r\n";
        std::fs::write(&log, &body).unwrap();
        let client = crate::local_agent();
        let path = log.to_str().unwrap();
        assert_eq!(console_tail_of(&client, path, 40).unwrap(), "nestform-init: booted\n");
        let all = console_tail_of(&client, path, 1 << 20).unwrap();
        assert!(all.starts_with("Linux version 6.1.0\nxxx"), "{}", &all[..40]);
        assert!(console_tail_of(&client, &format!("{path}.missing"), 40).is_err());
    }

    #[test]
    fn the_log_is_where_the_libvirt_provider_puts_it() {
        assert_eq!(
            console_log_path("l2"),
            nestform_provider_libvirt::channel::console_log_path("l2").to_str().unwrap()
        );
    }
}
