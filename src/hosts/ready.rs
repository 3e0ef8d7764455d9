//! Proof that a VM is ready: its console marker seen on the serial console,
//! or its SSH (or other) port answering. Never a fixed sleep.

use std::net::SocketAddr;
use std::time::Duration;

use std::sync::{Arc, Mutex};
use tokio::io::AsyncReadExt;

use virt::stream::Stream;

use super::{HeldConsole, Host};

/// Why a VM was not proven ready.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("the console closed before `{marker}` appeared (last output: {tail:?})")]
    ConsoleClosed { marker: String, tail: String },
    #[error("console read failed: {0}")]
    Console(String),
}

/// Reads the serial console until `marker` appears, and tells `on_ready`.
/// Blocks: run it on a thread of its own. A caller that gives up earlier
/// destroys the domain, which ends the read (EOF).
///
/// Once the marker is seen the console stays open on `host` (see
/// [`Host::take_console`]), read and discarded until the terminal gateway
/// takes it over or the domain goes. QEMU polls a pty nobody holds only once
/// a second to notice a new reader (and may notice a reader that changes
/// hands as a hang-up), so a console closed and opened again would make the
/// student's first keystroke wait up to a second; handed over, it answers in
/// milliseconds.
pub fn watch_console(
    stream: Stream,
    marker: &str,
    keep: Option<(&Host, &str)>,
    on_ready: impl FnOnce(Result<(), NotReady>),
) {
    let needle = marker.as_bytes();
    // Only the last `needle.len() - 1` bytes can start a match that
    // continues in the next chunk; a little more is kept for error messages.
    let tail = needle.len().max(256);
    let mut window: Vec<u8> = Vec::with_capacity(tail * 2 + 4096);
    let mut buf = [0u8; 4096];
    let result = loop {
        match stream.recv(&mut buf) {
            Ok(0) => {
                break Err(NotReady::ConsoleClosed {
                    marker: marker.to_string(),
                    tail: String::from_utf8_lossy(&window).into_owned(),
                });
            }
            Ok(n) => {
                window.extend_from_slice(&buf[..n as usize]);
                if window.windows(needle.len()).any(|w| w == needle) {
                    break Ok(());
                }
                if window.len() > tail {
                    window.drain(..window.len() - tail);
                }
            }
            Err(e) => break Err(NotReady::Console(e.message().to_string())),
        }
    };
    let ready = result.is_ok();
    if let (true, Some((host, domain))) = (ready, keep) {
        let output = Arc::new(Mutex::new(None));
        host.hold_console(
            domain,
            HeldConsole {
                stream: stream.clone(),
                output: output.clone(),
            },
        );
        on_ready(result);
        while let Ok(n @ 1..) = stream.recv(&mut buf) {
            let reader = output.lock().expect("console tap").clone();
            if let Some(reader) = reader
                && reader.blocking_send(buf[..n as usize].to_vec()).is_err()
            {
                break;
            }
        }
        host.release_console(domain);
    } else {
        on_ready(result);
    }
    // A stream must not be freed mid-transfer; abort tells libvirt we are done.
    let _ = stream.abort();
}

/// Waits until a TCP port answers like a service: for SSH the peer must send
/// its `SSH-` banner after ours (user-mode networking accepts connections on the host
/// side before the guest listens, so an accepted connection alone proves
/// nothing); for other ports, the connection must not be closed at once.
/// Retries with a growing pause until the caller's timeout drops the future.
pub async fn wait_for_port(addr: SocketAddr, ssh: bool) {
    let mut pause = Duration::from_millis(100);
    loop {
        if answers(addr, ssh).await {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

async fn answers(addr: SocketAddr, ssh: bool) -> bool {
    let Ok(Ok(mut stream)) =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await
    else {
        return false;
    };
    if ssh {
        // Some servers (dropbear) speak only after the client's own
        // identification line, so send ours first.
        use tokio::io::AsyncWriteExt as _;
        if stream
            .write_all(b"SSH-2.0-labpool-probe\r\n")
            .await
            .is_err()
        {
            return false;
        }
    }
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => !ssh || buf[..n].starts_with(b"SSH-"),
        Ok(_) => false, // closed: nobody behind the forward yet
        Err(_) => !ssh, // silent but open: fine for a non-SSH service
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn port_probe_wants_a_banner_for_ssh() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // First connection: accepted and closed (a forward with no guest
        // behind it); second: a banner.
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            drop(s);
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut s, b"SSH-2.0-dropbear\r\n")
                .await
                .unwrap();
            s
        });
        assert!(!answers(addr, true).await);
        assert!(answers(addr, true).await);
        drop(server.await.unwrap());
    }
}
