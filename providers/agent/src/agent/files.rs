//! `file_put` and `file_get`: files streamed in chunks with an end-to-end CRC-32.
//!
//! A put writes into a temporary file in the destination's directory and renames it over the
//! destination only after the client's trailer matched, so a reader of the path never sees half a file
//! and a cancelled transfer leaves nothing behind.

use std::fs::{File, Permissions};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::frame::DATA_CHUNK;
use crate::mux::{Incoming, Stream};
use crate::proto::{AgentMessage, ClientMessage};

/// Receives a file into `path` with permission bits `mode`.
pub(super) fn put(stream: &Stream, path: &Path, mode: u32) -> Result<(), String> {
    if !path.is_absolute() {
        return Err(format!("path `{}` is not absolute", path.display()));
    }
    let dir = path.parent().ok_or_else(|| format!("path `{}` has no directory", path.display()))?;
    let mut temp = tempfile::Builder::new()
        .prefix(".nestform-put-")
        .tempfile_in(dir)
        .map_err(|e| format!("creating a temporary file in `{}` failed: {e}", dir.display()))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut size = 0u64;
    loop {
        match stream.recv(None) {
            Ok(Incoming::Data(bytes)) => {
                temp.write_all(&bytes).map_err(|e| format!("writing `{}` failed: {e}", path.display()))?;
                hasher.update(&bytes);
                size += bytes.len() as u64;
            }
            Ok(Incoming::Control(body)) => {
                let ClientMessage::Trailer { size: sent_size, crc32 } =
                    serde_json::from_slice(&body).map_err(|e| format!("bad trailer: {e}"))?;
                let crc = hasher.clone().finalize();
                if sent_size != size || crc32 != crc {
                    return Err(format!(
                        "`{}` arrived damaged: sent `{sent_size}` bytes with crc32 `{crc32:08x}`, received `{size}` bytes with crc32 `{crc:08x}`",
                        path.display()
                    ));
                }
                break;
            }
            Ok(Incoming::Eof) => {}
            Ok(Incoming::ErrData(_)) => return Err("unexpected stderr data in a file put".into()),
            Ok(Incoming::Error(message)) => return Err(format!("client aborted: {message}")),
            // Cancelled or disconnected: dropping `temp` removes it.
            Err(e) => return Err(e.to_string()),
        }
    }
    let file = temp.as_file();
    file.set_permissions(Permissions::from_mode(mode & 0o7777))
        .map_err(|e| format!("setting the mode of `{}` failed: {e}", path.display()))?;
    file.sync_all().map_err(|e| format!("syncing `{}` failed: {e}", path.display()))?;
    temp.persist(path).map_err(|e| format!("renaming into `{}` failed: {}", path.display(), e.error))?;
    let crc32 = hasher.finalize();
    stream.send_control(&AgentMessage::Trailer { size, crc32 }).map_err(|e| e.to_string())
}

/// Sends the file at `path`.
pub(super) fn get(stream: &Stream, path: &Path) -> Result<(), String> {
    let mut file = File::open(path).map_err(|e| format!("opening `{}` failed: {e}", path.display()))?;
    let meta =
        file.metadata().map_err(|e| format!("reading metadata of `{}` failed: {e}", path.display()))?;
    if meta.is_dir() {
        return Err(format!("`{}` is a directory", path.display()));
    }
    let mode = meta.permissions().mode() & 0o7777;
    stream.send_control(&AgentMessage::FileMeta { size: meta.len(), mode }).map_err(|e| e.to_string())?;
    let mut hasher = crc32fast::Hasher::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; DATA_CHUNK];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading `{}` failed: {e}", path.display())),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
        stream.send_data(false, &buf[..n]).map_err(|e| e.to_string())?;
    }
    stream.send_control(&AgentMessage::Trailer { size, crc32: hasher.finalize() }).map_err(|e| e.to_string())
}
