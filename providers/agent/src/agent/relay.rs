//! `relay`: pipe a stream to a local unix socket named on the agent's allowlist.
//!
//! The allowlist is compared lexically (after normalising `.` components) and the path must be
//! absolute, so `--relay-allow /var/run/libvirt/libvirt-sock` allows exactly that path. An entry that
//! ends in `/` allows every socket below that directory (`..` never matches, so nothing escapes it):
//! that is how a promoted guest's agent reaches its own guests' agent channels, whose sockets libvirt
//! names per domain.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::thread;

use crate::frame::DATA_CHUNK;
use crate::mux::{Incoming, Stream};
use crate::proto::AgentMessage;

/// Whether `path` is on `allow`.
pub(crate) fn is_allowed(path: &Path, allow: &[PathBuf]) -> bool {
    // Lexical: `..` is not resolved, so it simply never matches an allowed (normal) path.
    let normal = |p: &Path| p.components().filter(|c| *c != Component::CurDir).collect::<PathBuf>();
    let escapes = path.components().any(|c| c == Component::ParentDir);
    path.is_absolute()
        && !escapes
        && allow.iter().any(|allowed| {
            let is_dir = allowed.as_os_str().to_string_lossy().ends_with('/');
            if is_dir {
                normal(path).starts_with(normal(allowed)) && normal(path) != normal(allowed)
            } else {
                normal(allowed) == normal(path)
            }
        })
}

/// The sockets exclusive relays hold now, over every session of this agent process: one agent
/// serves all of a guest's ports, so this is where two nestform runs reaching the same inner guest
/// meet (each through a port of its own).
static EXCLUSIVE: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// `path` held by an exclusive relay until dropped.
struct Held(PathBuf);

impl Held {
    fn take(path: &Path) -> Result<Held, String> {
        let mut held = EXCLUSIVE.lock().unwrap_or_else(|p| p.into_inner());
        if !held.insert(path.to_path_buf()) {
            return Err(format!("{BUSY}: `{}` is relayed to by another session", path.display()));
        }
        Ok(Held(path.to_path_buf()))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        EXCLUSIVE.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.0);
    }
}

/// How a refused exclusive relay's error begins, so the client can tell "in use" from a failure.
pub const BUSY: &str = "relay busy";

/// Connects to `path` and relays until the client closes the stream. With `exclusive`, refuses
/// while another exclusive relay holds `path` (see [`crate::proto::Request::Relay`]).
pub(super) fn run(
    stream: &std::sync::Arc<Stream>,
    path: &Path,
    allow: &[PathBuf],
    exclusive: bool,
) -> Result<(), String> {
    if !is_allowed(path, allow) {
        return Err(format!(
            "relay to `{}` refused: the path is not on the agent's allowlist",
            path.display()
        ));
    }
    let _held = if exclusive { Some(Held::take(path)?) } else { None };
    let socket =
        UnixStream::connect(path).map_err(|e| format!("connecting to `{}` failed: {e}", path.display()))?;
    let mut to_socket = socket.try_clone().map_err(|e| e.to_string())?;
    stream.send_control(&AgentMessage::Connected).map_err(|e| e.to_string())?;

    let from_socket = {
        let stream = std::sync::Arc::clone(stream);
        let mut socket = socket.try_clone().map_err(|e| e.to_string())?;
        thread::spawn(move || {
            let mut buf = vec![0u8; DATA_CHUNK];
            loop {
                match socket.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if stream.send_data(false, &buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = stream.send_eof();
        })
    };
    loop {
        match stream.recv(None) {
            Ok(Incoming::Data(bytes)) => {
                if to_socket.write_all(&bytes).is_err() {
                    // The socket's server went away; its reader side reports the end to the client.
                    let _ = socket.shutdown(Shutdown::Write);
                }
            }
            Ok(Incoming::Eof) => {
                let _ = socket.shutdown(Shutdown::Write);
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = socket.shutdown(Shutdown::Both);
    let _ = from_socket.join();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_is_exact_and_absolute() {
        let allow = vec![PathBuf::from("/var/run/libvirt/libvirt-sock")];
        assert!(is_allowed(Path::new("/var/run/libvirt/libvirt-sock"), &allow));
        assert!(is_allowed(Path::new("/var/run/./libvirt/libvirt-sock"), &allow));
        assert!(!is_allowed(Path::new("/var/run/libvirt/libvirt-sock-ro"), &allow));
        assert!(!is_allowed(Path::new("/var/run/libvirt/../libvirt/libvirt-sock"), &allow));
        assert!(!is_allowed(Path::new("var/run/libvirt/libvirt-sock"), &allow));
        assert!(!is_allowed(Path::new("/tmp/x"), &[]));
        let dir = [PathBuf::from("/run/libvirt/qemu/channel/")];
        assert!(is_allowed(Path::new("/run/libvirt/qemu/channel/1-g/dev.x.0"), &dir));
        assert!(!is_allowed(Path::new("/run/libvirt/qemu/channel/../../../x"), &dir));
        assert!(!is_allowed(Path::new("/run/libvirt/qemu/channel"), &dir));
        assert!(!is_allowed(Path::new("/run/libvirt/qemu/channelx/y"), &dir));
        // Without the trailing slash an entry is one path, never a directory.
        assert!(!is_allowed(Path::new("/var/run/libvirt/libvirt-sock/x"), &allow));
    }

    #[test]
    fn an_exclusive_path_is_held_once_until_released() {
        let path = Path::new("/run/test/exclusive-once");
        let first = Held::take(path).unwrap();
        let err = Held::take(path).err().unwrap();
        assert!(err.starts_with(BUSY), "{err}");
        assert!(Held::take(Path::new("/run/test/another")).is_ok());
        drop(first);
        assert!(Held::take(path).is_ok());
    }
}
