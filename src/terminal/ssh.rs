//! The SSH way into a VM, for `console: ssh` courses: labpool logs in with
//! its own key (`terminal.ssh_key`) as the course's `ssh.user`, through the
//! host-side forward of the VM's SSH port, and asks for a PTY and a shell.
//!
//! Host keys: a guest makes its own at first boot, so nothing can be known in
//! advance. [`open`] accepts the first key it sees (trust on first use) and
//! returns its fingerprint; the caller pins it for the VM and passes it back
//! as [`SshTarget::expect_host_key`] on every later connection, which then
//! refuses any other key.
//!
//! One task per console moves bytes both ways (see [`pump`]). Keepalives end
//! a console whose VM or host died silently; the task ends, and the output
//! channel closes, when the shell or the connection ends or the gateway drops
//! the input sender.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use russh::client;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect};
use tokio::sync::mpsc;

use super::console::{Console, ConsoleError, ConsoleInput, OUTPUT_BUFFER};

/// From the TCP connect to a running shell: a guest that does not get there
/// in this time is not going to.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Silence from the server after which labpool sends a keepalive.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// Unanswered keepalives after which the console ends (about a minute).
pub const KEEPALIVE_MAX: usize = 3;
/// Sent data left unacknowledged this long ends the connection (the kernel's
/// TCP_USER_TIMEOUT): covers a dead peer while a write is stuck, which
/// keepalives alone do not.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(60);
/// Closing the channel and the session at the end, at most.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// What the PTY's `TERM` says: the page runs xterm.js.
pub const TERM: &str = "xterm-256color";

/// Where and as whom to log in.
#[derive(Debug, Clone)]
pub struct SshTarget {
    /// `host:port` of the VM's forwarded SSH port.
    pub addr: String,
    /// The account to log in as (the course's `session.ssh.user`).
    pub user: String,
    /// labpool's private key (see [`load_key`]).
    pub key: Arc<PrivateKey>,
    /// The host key fingerprint pinned for this VM (`SHA256:…`, as [`open`]
    /// returned it the first time). `None`: accept any key, the first time.
    pub expect_host_key: Option<String>,
}

/// Loads an OpenSSH private key file; errors name the path and say what is
/// wrong (missing, unreadable, passphrase-protected, not a key).
pub fn load_key(path: &Path) -> Result<Arc<PrivateKey>, ConsoleError> {
    let fail = |what: String| ConsoleError::Other(format!("ssh key {}: {what}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => fail("no such file".into()),
        std::io::ErrorKind::PermissionDenied => {
            fail("cannot read it (permission denied for labpool's user)".into())
        }
        std::io::ErrorKind::InvalidData => fail("not a key (the file is not text)".into()),
        _ => fail(format!("cannot read it: {e}")),
    })?;
    match russh::keys::decode_secret_key(&text, None) {
        Ok(key) => Ok(Arc::new(key)),
        Err(russh::keys::Error::KeyIsEncrypted) => Err(fail(
            "the key is passphrase-protected; labpool needs one without a passphrase".into(),
        )),
        Err(_) if text.contains("ENCRYPTED") => Err(fail(
            "the key is passphrase-protected; labpool needs one without a passphrase".into(),
        )),
        Err(_) if text.trim_start().starts_with("ssh-") || text.contains("PUBLIC KEY") => Err(
            fail("this is a public key; give the private key (the file without .pub)".into()),
        ),
        Err(_) if !text.contains("-----BEGIN ") => Err(fail(
            "not a private key (expected -----BEGIN OPENSSH PRIVATE KEY-----)".into(),
        )),
        Err(e) => Err(fail(format!("not a usable private key: {e}"))),
    }
}

/// The `SHA256:…` fingerprint of a host key, as `ssh-keygen -l` prints it.
fn fingerprint(key: &PublicKeyOrCertificate) -> String {
    match key {
        PublicKeyOrCertificate::PublicKey { key, .. } => key.fingerprint(HashAlg::Sha256),
        PublicKeyOrCertificate::Certificate(cert) => cert.public_key().fingerprint(HashAlg::Sha256),
    }
    .to_string()
}

/// The client side of one connection: checks the host key.
struct Client {
    expect: Option<String>,
    /// The fingerprint of the key accepted, for [`open`] to return.
    seen: Arc<Mutex<Option<String>>>,
}

#[derive(Debug)]
enum ClientError {
    Ssh(russh::Error),
    HostKeyChanged { pinned: String, offered: String },
}

impl From<russh::Error> for ClientError {
    fn from(e: russh::Error) -> Self {
        ClientError::Ssh(e)
    }
}

impl client::Handler for Client {
    type Error = ClientError;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, ClientError> {
        let offered = fingerprint(server_public_key);
        if let Some(pinned) = &self.expect
            && *pinned != offered
        {
            return Err(ClientError::HostKeyChanged {
                pinned: pinned.clone(),
                offered,
            });
        }
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = Some(offered);
        Ok(true)
    }
}

type Session = client::Handle<Client>;

/// Connects, authenticates with the key, opens a session channel with a PTY
/// (`TERM` xterm-256color, the given size) and a shell. Returns the console
/// and the SHA256 fingerprint of the server's host key.
pub async fn open(
    target: &SshTarget,
    cols: u16,
    rows: u16,
) -> Result<(Console, String), ConsoleError> {
    let (session, channel, host_key, first) =
        tokio::time::timeout(CONNECT_TIMEOUT, establish(target, cols, rows))
            .await
            .map_err(|_| ConsoleError::Ssh {
                addr: target.addr.clone(),
                message: format!(
                    "no shell within {} s: the VM's SSH server does not answer",
                    CONNECT_TIMEOUT.as_secs()
                ),
            })??;
    let (in_tx, in_rx) = mpsc::channel(OUTPUT_BUFFER);
    let (out_tx, out_rx) = mpsc::channel(OUTPUT_BUFFER);
    tokio::spawn(pump(
        target.addr.clone(),
        session,
        channel,
        first,
        in_rx,
        out_tx,
    ));
    Ok((
        Console {
            input: in_tx,
            output: out_rx,
        },
        host_key,
    ))
}

/// Everything up to a running shell: the session, its channel, the host
/// key's fingerprint and any output that came before the shell's reply.
async fn establish(
    target: &SshTarget,
    cols: u16,
    rows: u16,
) -> Result<(Session, russh::Channel<client::Msg>, String, Vec<u8>), ConsoleError> {
    let fail = |message: String| ConsoleError::Ssh {
        addr: target.addr.clone(),
        message,
    };
    let socket = tokio::net::TcpStream::connect(&target.addr)
        .await
        .map_err(|e| fail(format!("cannot connect: {e}")))?;
    // Interactive: every keystroke goes out at once.
    let _ = socket.set_nodelay(true);
    set_user_timeout(&socket, TCP_USER_TIMEOUT);
    let config = Arc::new(client::Config {
        keepalive_interval: Some(KEEPALIVE_INTERVAL),
        keepalive_max: KEEPALIVE_MAX,
        nodelay: true,
        ..client::Config::default()
    });
    let seen = Arc::new(Mutex::new(None));
    let handler = Client {
        expect: target.expect_host_key.clone(),
        seen: Arc::clone(&seen),
    };
    let mut session = client::connect_stream(config, socket, handler)
        .await
        .map_err(|e| match e {
            ClientError::HostKeyChanged { pinned, offered } => fail(format!(
                "host key changed: this VM's key was {pinned}, now it offers {offered}; refusing to log in"
            )),
            ClientError::Ssh(e) => fail(format!("SSH handshake failed: {e}")),
        })?;
    let host_key = seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
        .ok_or_else(|| fail("the server's host key was never checked".into()))?;

    let hash = if target.key.algorithm().is_rsa() {
        // Servers that do not say which RSA signatures they take get
        // rsa-sha2-256, not the SHA-1 ssh-rsa modern servers refuse.
        let best = session
            .best_supported_rsa_hash()
            .await
            .map_err(|e| fail(format!("SSH handshake failed: {e}")))?;
        best.unwrap_or(Some(HashAlg::Sha256))
    } else {
        None
    };
    let auth = session
        .authenticate_publickey(
            target.user.clone(),
            PrivateKeyWithHashAlg::new(Arc::clone(&target.key), hash),
        )
        .await
        .map_err(|e| fail(format!("authentication failed: {e}")))?;
    if !auth.success() {
        return Err(fail(format!(
            "the VM refused labpool's key for user `{user}` (is the public half of {} in ~{user}/.ssh/authorized_keys?)",
            target.key.public_key().fingerprint(HashAlg::Sha256),
            user = target.user,
        )));
    }

    let mut channel = session
        .channel_open_session()
        .await
        .map_err(|e| fail(format!("the VM refused a session: {e}")))?;
    let mut first = Vec::new();
    channel
        .request_pty(true, TERM, cols.into(), rows.into(), 0, 0, &[])
        .await
        .map_err(|e| fail(format!("asking for a terminal: {e}")))?;
    reply(&mut channel, &mut first)
        .await
        .map_err(|e| fail(format!("the VM refused a terminal (PTY): {e}")))?;
    channel
        .request_shell(true)
        .await
        .map_err(|e| fail(format!("asking for a shell: {e}")))?;
    reply(&mut channel, &mut first)
        .await
        .map_err(|e| fail(format!("the VM refused a shell: {e}")))?;
    Ok((session, channel, host_key, first))
}

/// Waits for the answer to a request sent with `want_reply`, keeping any
/// output that comes first.
async fn reply(
    channel: &mut russh::Channel<client::Msg>,
    first: &mut Vec<u8>,
) -> Result<(), &'static str> {
    loop {
        match channel.wait().await {
            Some(ChannelMsg::Success) => return Ok(()),
            Some(ChannelMsg::Failure) => return Err("request failed"),
            Some(ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. }) => {
                first.extend_from_slice(&data);
            }
            Some(ChannelMsg::Eof | ChannelMsg::Close) | None => return Err("channel closed"),
            Some(_) => {}
        }
    }
}

/// Sets TCP_USER_TIMEOUT on the socket (best effort).
fn set_user_timeout(socket: &tokio::net::TcpStream, timeout: Duration) {
    use std::os::fd::AsRawFd;
    let ms = libc::c_uint::try_from(timeout.as_millis()).unwrap_or(libc::c_uint::MAX);
    // SAFETY: the descriptor is an open TCP socket for the call's duration,
    // and the option value is a c_uint of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            (&raw const ms).cast(),
            size_of::<libc::c_uint>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(
            "TCP_USER_TIMEOUT not set: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// A write to the channel in progress.
type Write<'a> = Pin<Box<dyn Future<Output = Result<(), russh::Error>> + Send + 'a>>;

/// Moves bytes both ways until the shell or the connection ends, or the
/// gateway is gone. Each direction waits only on its own consumer: output
/// waits for the gateway (a slow page slows the reading, and SSH's window
/// then slows the guest), input for the channel's window; reading goes on
/// while a write waits, so a long paste echoed back cannot jam both.
async fn pump(
    addr: String,
    session: Session,
    channel: russh::Channel<client::Msg>,
    first: Vec<u8>,
    mut input: mpsc::Receiver<ConsoleInput>,
    output: mpsc::Sender<Vec<u8>>,
) {
    let (mut read, write) = channel.split();
    let mut pending: Option<Vec<u8>> = (!first.is_empty()).then_some(first);
    let mut writing: Option<Write<'_>> = None;
    let why = loop {
        tokio::select! {
            permit = output.reserve(), if pending.is_some() => match (permit, pending.take()) {
                (Ok(permit), Some(chunk)) => permit.send(chunk),
                _ => break "the gateway left",
            },
            msg = read.wait(), if pending.is_none() => match msg {
                Some(ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. }) => {
                    pending = Some(data.to_vec());
                }
                Some(ChannelMsg::ExitStatus { .. } | ChannelMsg::ExitSignal { .. }) => {
                    break "the shell exited";
                }
                Some(ChannelMsg::Eof | ChannelMsg::Close) => break "the server closed the channel",
                Some(_) => {}
                None => break "the connection ended",
            },
            done = async {
                match writing.as_mut() {
                    Some(w) => w.await,
                    None => std::future::pending().await,
                }
            }, if writing.is_some() => {
                writing = None;
                if done.is_err() {
                    break "the connection ended";
                }
            },
            msg = input.recv(), if writing.is_none() => match msg {
                Some(ConsoleInput::Data(bytes)) => writing = Some(Box::pin(write.data_bytes(bytes))),
                Some(ConsoleInput::Resize { cols, rows }) => {
                    writing = Some(Box::pin(write.window_change(cols.into(), rows.into(), 0, 0)));
                }
                None => break "the gateway closed the console",
            },
        }
    };
    tracing::debug!(addr, "ssh console ends: {why}");
    drop(writing);
    // Output already read still goes to the page; input no longer counts
    // (so a gateway waiting to send some is not stuck).
    drop(input);
    if let Some(chunk) = pending {
        let _ = output.send(chunk).await;
    }
    drop(output);
    // Close politely, then wait for russh's session task to end so none is
    // left behind; the TCP connection closing ends it in any case.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        let _ = write.close().await;
        let _ = session
            .disconnect(Disconnect::ByApplication, "console closed", "en")
            .await;
        drop(write);
        drop(read);
        let _ = session.await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::client::Handler as _;
    use russh::keys::ssh_key::private::Ed25519Keypair;

    /// A throwaway key protected by the passphrase `not-the-pass`.
    const ENCRYPTED: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAACmFlczI1Ni1jdHIAAAAGYmNyeXB0AAAAGAAAABADMXmNda
8sqKuKUIFO4ovmAAAAEAAAAAEAAAAzAAAAC3NzaC1lZDI1NTE5AAAAINzBspshRn5rBTce
tCwqUdWOYLkxcgALYixCpNLrQWesAAAAkI2wpq1uwpEoJ1WdehS9lmDH5WKOs6wrLYvw83
L09UcQmJOUTEu/TXcBWs6qAWHmNVgtZr9ajDcsObgZcpd/+nIPsY5StiuHDoh0MB6lL53Q
O8FHWHb7XdQCyae1pSEwzBBwFaB53gxFnl0gjt5iWoxGL6FgZ1VfRgUHSxExbpxzfpGt2v
fmxMOKOlnEuveyFQ==
-----END OPENSSH PRIVATE KEY-----
";

    fn test_key(seed: u8) -> PrivateKey {
        PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
    }

    fn load_error(name: &str, content: Option<&[u8]>) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        if let Some(content) = content {
            std::fs::write(&path, content).unwrap();
        }
        let err = load_key(&path).expect_err("not a usable key");
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        text
    }

    #[test]
    fn load_key_says_what_is_wrong_and_where() {
        assert!(load_error("missing", None).ends_with("no such file"));
        let garbage = load_error("garbage", Some(b"hello, this is no key\n"));
        assert!(garbage.contains("not a private key"), "{garbage}");
        let binary = load_error("binary", Some(&[0xff, 0xfe, 0x00, 0x80]));
        assert!(binary.contains("not a key"), "{binary}");
        let encrypted = load_error("encrypted", Some(ENCRYPTED.as_bytes()));
        assert!(encrypted.contains("passphrase-protected"), "{encrypted}");
        let public = test_key(1).public_key().to_openssh().unwrap();
        let public = load_error("id.pub", Some(public.as_bytes()));
        assert!(public.contains("public key"), "{public}");
        let mangled = ENCRYPTED.replace("b3Bl", "AAAA").replace("ENCRYPTED", "X");
        let mangled = load_error("mangled", Some(mangled.as_bytes()));
        assert!(mangled.contains("not a usable private key"), "{mangled}");
    }

    #[test]
    fn load_key_reads_an_openssh_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id_ed25519");
        let key = test_key(2);
        let text = key
            .to_openssh(russh::keys::ssh_key::LineEnding::LF)
            .unwrap();
        std::fs::write(&path, text.as_bytes()).unwrap();
        let loaded = load_key(&path).unwrap();
        assert_eq!(loaded.public_key(), key.public_key());
    }

    fn offered(seed: u8) -> (PublicKeyOrCertificate, String) {
        let key = test_key(seed).public_key().clone();
        let print = key.fingerprint(HashAlg::Sha256).to_string();
        (
            PublicKeyOrCertificate::PublicKey {
                key,
                hash_alg: None,
            },
            print,
        )
    }

    #[tokio::test]
    async fn host_key_trusted_on_first_use_then_pinned() {
        let (key, print) = offered(3);
        assert!(print.starts_with("SHA256:"), "{print}");
        // First use: any key, and its fingerprint is kept.
        let seen = Arc::new(Mutex::new(None));
        let mut client = Client {
            expect: None,
            seen: Arc::clone(&seen),
        };
        assert!(client.check_server_key(&key).await.unwrap());
        assert_eq!(seen.lock().unwrap().as_deref(), Some(print.as_str()));
        // Pinned: the same key passes, another is refused.
        let mut client = Client {
            expect: Some(print.clone()),
            seen: Arc::new(Mutex::new(None)),
        };
        assert!(client.check_server_key(&key).await.unwrap());
        let (other, other_print) = offered(4);
        match client.check_server_key(&other).await {
            Err(ClientError::HostKeyChanged { pinned, offered }) => {
                assert_eq!((pinned, offered), (print, other_print));
            }
            r => panic!("another key accepted: {r:?}"),
        }
    }

    #[tokio::test]
    async fn nothing_listening_is_a_clear_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let target = SshTarget {
            addr: addr.clone(),
            user: "student".into(),
            key: Arc::new(test_key(5)),
            expect_host_key: None,
        };
        let err = open(&target, 80, 24).await.expect_err("nobody there");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("ssh to {addr}: cannot connect")),
            "{text}"
        );
    }
}
