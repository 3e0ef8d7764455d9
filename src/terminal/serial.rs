//! The serial console through libvirt: the default way into a VM. It needs
//! nothing in the guest but a shell on ttyS0.
//!
//! libvirt streams block, so each open console has one reader thread (small
//! stack; it sleeps in `recv`): the readiness watch's, taken over while the
//! VM is fresh from the pool, else one of its own. Writes go through tokio's
//! blocking pool.
//! A serial line carries no terminal size: [`Sizer`] tells the guest's shell
//! with `stty` when it sits at a prompt, and hides that line from the page.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use virt::stream::Stream;

use super::console::{Console, ConsoleError, ConsoleInput, OUTPUT_BUFFER};
use crate::hosts::Host;

/// The reader thread only loops over `recv`; libvirt's client needs little
/// stack below it.
const READER_STACK: usize = 256 << 10;

/// Opens `domain`'s serial console on `host`, taking it over from any other
/// holder (a readiness watcher, a stale gateway).
pub async fn open(host: Arc<Host>, domain: String) -> Result<Console, ConsoleError> {
    let (raw_tx, raw_rx) = mpsc::channel::<Vec<u8>>(OUTPUT_BUFFER);
    // A warm VM's console is still held by its readiness watch: taken over,
    // that thread reads for us and QEMU never sees the console change hands.
    let stream = match host.take_console(&domain) {
        Some(held) => {
            *held.output.lock().expect("console tap") = Some(raw_tx);
            held.stream
        }
        None => {
            let stream = host.run(move |h| h.open_console(&domain)).await?;
            let reader = stream.clone();
            std::thread::Builder::new()
                .name("serial-console".into())
                .stack_size(READER_STACK)
                .spawn(move || read_loop(reader, raw_tx))
                .map_err(|e| {
                    ConsoleError::Other(format!("cannot start the console reader: {e}"))
                })?;
            stream
        }
    };
    let (in_tx, in_rx) = mpsc::channel(OUTPUT_BUFFER);
    let (out_tx, out_rx) = mpsc::channel(OUTPUT_BUFFER);
    tokio::spawn(pump(stream, raw_rx, in_rx, out_tx));
    Ok(Console {
        input: in_tx,
        output: out_rx,
    })
}

/// Blocking: reads until EOF (the domain stopped), an error (the host
/// connection broke, the stream was aborted) or nobody listens.
fn read_loop(stream: Stream, out: mpsc::Sender<Vec<u8>>) {
    let mut buf = vec![0u8; 16 << 10];
    while let Ok(n) = stream.recv(&mut buf) {
        if n <= 0 || out.blocking_send(buf[..n as usize].to_vec()).is_err() {
            break;
        }
    }
}

/// Moves bytes between the gateway and the stream, with the [`Sizer`] in
/// between. Ends when either side is gone; aborting the stream then wakes
/// the reader thread.
async fn pump(
    stream: Stream,
    mut raw: mpsc::Receiver<Vec<u8>>,
    mut input: mpsc::Receiver<ConsoleInput>,
    output: mpsc::Sender<Vec<u8>>,
) {
    let mut sizer = Sizer::default();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        let step = tokio::select! {
            chunk = raw.recv() => match chunk {
                Some(chunk) => sizer.on_output(&chunk, Instant::now()),
                None => break,
            },
            msg = input.recv() => match msg {
                Some(ConsoleInput::Data(bytes)) => sizer.on_input(bytes),
                Some(ConsoleInput::Resize { cols, rows }) => {
                    sizer.on_resize(cols, rows, Instant::now())
                }
                None => break,
            },
            _ = tick.tick() => sizer.on_tick(Instant::now()),
        };
        if !step.show.is_empty() && output.send(step.show).await.is_err() {
            break;
        }
        if !step.send.is_empty() && !send(&stream, step.send).await {
            break;
        }
    }
    let _ = tokio::task::spawn_blocking(move || stream.abort()).await;
}

async fn send(stream: &Stream, bytes: Vec<u8>) -> bool {
    let stream = stream.clone();
    tokio::task::spawn_blocking(move || {
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            match stream.send(rest) {
                Ok(n) if n > 0 => rest = &rest[n as usize..],
                _ => return false,
            }
        }
        true
    })
    .await
    .unwrap_or(false)
}

/// How long a `stty` line's echo and the prompt after it may take before
/// the held output is shown (and held keystrokes sent) after all. Normally
/// it takes milliseconds; a guest starved of CPU can take seconds.
const SWALLOW_TIMEOUT: Duration = Duration::from_secs(3);

/// What the sizer wants done: bytes for the page, bytes for the guest.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Step {
    pub show: Vec<u8>,
    pub send: Vec<u8>,
}

impl Step {
    fn send(send: Vec<u8>) -> Step {
        Step {
            show: Vec::new(),
            send,
        }
    }
}

/// Tells a serial guest the page's terminal size. A serial line has no
/// window-size signal, so the only way in is the shell itself: when the
/// console sits at a prompt with nothing typed since, the sizer types
/// `stty rows R cols C` and holds the output back until the same prompt
/// comes again, so the page never sees the line. Keystrokes that arrive
/// meanwhile wait too (typed after the stty line, they would have shown it)
/// and go to the guest once the prompt is back. A size wanted while a
/// program runs waits for the next prompt.
#[derive(Debug, Default)]
pub struct Sizer {
    /// The size the page has.
    wanted: Option<(u16, u16)>,
    /// The size last told to the guest.
    applied: Option<(u16, u16)>,
    /// The output's current last line (since the last newline), if short.
    line: Vec<u8>,
    /// The student typed since the last prompt appeared.
    typed: bool,
    /// Output held back while a `stty` line runs: the prompt it waits for,
    /// when it gives up, and what came so far.
    held: Option<(Vec<u8>, Instant, Vec<u8>)>,
    /// Keystrokes that arrived while output was held.
    queued: Vec<u8>,
}

impl Sizer {
    /// Output from the guest: what to forward now, and what to type (a
    /// `stty` line, or keystrokes held while one ran).
    pub fn on_output(&mut self, chunk: &[u8], now: Instant) -> Step {
        if let Some((prompt, _, held)) = &mut self.held {
            held.extend_from_slice(chunk);
            if strip_queries(held).ends_with(prompt) {
                // The stty line ran and the same prompt is back: the page
                // already shows that prompt, so all of it is dropped.
                self.held = None;
                return Step::send(std::mem::take(&mut self.queued));
            }
            return Step::default();
        }
        self.note_line(chunk);
        Step {
            show: chunk.to_vec(),
            send: self.maybe_inject(now).unwrap_or_default(),
        }
    }

    /// Keystrokes from the page: to the guest now, or once a running
    /// `stty` line is done.
    pub fn on_input(&mut self, bytes: Vec<u8>) -> Step {
        // xterm.js answers the shell's cursor-position query (ESC[6n) with
        // ESC[row;colR: that is the terminal talking, not the student; the
        // shell waits for it, so it goes through at once.
        if is_cursor_report(&bytes) {
            return Step::send(bytes);
        }
        self.typed = true;
        if self.held.is_some() {
            self.queued.extend_from_slice(&bytes);
            return Step::default();
        }
        Step::send(bytes)
    }

    pub fn on_resize(&mut self, cols: u16, rows: u16, now: Instant) -> Step {
        self.wanted = Some((cols, rows));
        Step::send(self.maybe_inject(now).unwrap_or_default())
    }

    /// A timer: held output whose prompt never came back is shown, and the
    /// keystrokes held with it are sent.
    pub fn on_tick(&mut self, now: Instant) -> Step {
        match &self.held {
            Some((_, until, _)) if now >= *until => {
                let (_, _, held) = self.held.take().expect("held");
                self.note_line(&held);
                Step {
                    show: held,
                    send: std::mem::take(&mut self.queued),
                }
            }
            _ => Step::default(),
        }
    }

    fn note_line(&mut self, chunk: &[u8]) {
        match chunk.iter().rposition(|&b| b == b'\n') {
            Some(i) => {
                self.line.clear();
                self.line.extend_from_slice(&chunk[i + 1..]);
                self.typed = false;
            }
            None => self.line.extend_from_slice(chunk),
        }
        if self.line.len() > 256 {
            // Not a prompt: long lines are program output.
            self.line.drain(..self.line.len() - 256);
        }
    }

    fn maybe_inject(&mut self, now: Instant) -> Option<Vec<u8>> {
        let (cols, rows) = self.wanted?;
        if self.applied == self.wanted || self.typed || self.held.is_some() {
            return None;
        }
        let prompt = strip_queries(&self.line);
        if !looks_like_prompt(&prompt) {
            return None;
        }
        self.applied = self.wanted;
        self.held = Some((prompt, now + SWALLOW_TIMEOUT, Vec::new()));
        Some(format!("stty rows {rows} cols {cols}\r").into_bytes())
    }
}

/// A shell prompt: a short last line ending in `# `, `$ `, `% ` or `> `.
fn looks_like_prompt(line: &[u8]) -> bool {
    line.len() <= 120
        && matches!(line, [.., b'#' | b'$' | b'%' | b'>', b' '])
        && !line.contains(&b'\r')
}

/// The line without terminal queries and colour codes (busybox's shell asks
/// for the cursor position after its prompt; prompts may be coloured).
fn strip_queries(line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        if line[i] == 0x1b && line.get(i + 1) == Some(&b'[') {
            let mut j = i + 2;
            while j < line.len() && !(0x40..=0x7e).contains(&line[j]) {
                j += 1;
            }
            i = j + 1;
        } else {
            out.push(line[i]);
            i += 1;
        }
    }
    out
}

fn is_cursor_report(bytes: &[u8]) -> bool {
    let Some(body) = bytes
        .strip_prefix(b"\x1b[")
        .and_then(|b| b.strip_suffix(b"R"))
    else {
        return false;
    };
    body.iter().all(|b| b.is_ascii_digit() || *b == b';')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_at_a_prompt_types_stty_and_hides_it() {
        let mut s = Sizer::default();
        let t = Instant::now();
        let step = s.on_output(b"GUEST-READY\r\n/ # \x1b[6n", t);
        assert_eq!(step.show, b"GUEST-READY\r\n/ # \x1b[6n");
        assert!(step.send.is_empty(), "no size wanted yet");
        // The terminal's answer to the prompt's query is not typing.
        assert_eq!(
            s.on_input(b"\x1b[24;5R".to_vec()),
            Step::send(b"\x1b[24;5R".to_vec())
        );
        let line = s.on_resize(100, 30, t).send;
        assert_eq!(line, b"stty rows 30 cols 100\r", "at a prompt");
        // The terminal's answer to the prompt's query goes through while held.
        assert_eq!(s.on_input(b"\x1b[2;5R".to_vec()).send, b"\x1b[2;5R");
        // The echo and the prompt again: nothing reaches the page.
        assert_eq!(
            s.on_output(b"stty rows 30 cols 100\r\n", t),
            Step::default()
        );
        assert_eq!(s.on_output(b"/ # \x1b[6n", t), Step::default());
        // Output flows again afterwards; the same size is not told twice.
        assert_eq!(s.on_resize(100, 30, t), Step::default());
        assert_eq!(s.on_output(b"x", t).show, b"x");
    }

    #[test]
    fn resize_waits_for_a_prompt_and_for_the_student() {
        let mut s = Sizer::default();
        let t = Instant::now();
        s.on_output(b"top - 10:00\r\n  PID USER", t);
        assert_eq!(s.on_resize(120, 40, t), Step::default(), "a program runs");
        let step = s.on_output(b"\r\n~ $ ", t);
        assert_eq!(
            step.send, b"stty rows 40 cols 120\r",
            "the prompt came back: told now"
        );
        // The student typed at the prompt: never type over them.
        let mut s = Sizer::default();
        s.on_output(b"\r\n~ $ ", t);
        assert_eq!(s.on_input(b"ls -".to_vec()).send, b"ls -");
        assert_eq!(s.on_resize(120, 40, t), Step::default());
    }

    #[test]
    fn held_output_is_shown_when_the_prompt_does_not_return() {
        let mut s = Sizer::default();
        let t = Instant::now();
        s.on_output(b"/ # ", t);
        assert!(!s.on_resize(80, 24, t).send.is_empty());
        assert_eq!(s.on_output(b"stty: not found\r\n", t), Step::default());
        // Typed meanwhile: held too, sent with the release.
        assert_eq!(s.on_input(b"ls\r".to_vec()), Step::default());
        assert_eq!(s.on_tick(t), Step::default());
        assert_eq!(
            s.on_tick(t + SWALLOW_TIMEOUT),
            Step {
                show: b"stty: not found\r\n".to_vec(),
                send: b"ls\r".to_vec()
            }
        );
    }

    #[test]
    fn keys_typed_while_stty_runs_wait_for_the_prompt() {
        // A student typing the moment the prompt shows must not reveal the
        // stty line: their keys reach the guest after it is done.
        let mut s = Sizer::default();
        let t = Instant::now();
        s.on_output(b"/ # ", t);
        assert!(!s.on_resize(90, 20, t).send.is_empty());
        s.on_output(b"stty ro", t);
        assert_eq!(s.on_input(b"e".to_vec()), Step::default());
        assert_eq!(s.on_input(b"cho hi\r".to_vec()), Step::default());
        assert_eq!(
            s.on_output(b"ws 20 cols 90\r\n/ # ", t),
            Step::send(b"echo hi\r".to_vec())
        );
        assert_eq!(
            s.on_output(b"echo hi\r\nhi\r\n", t).show,
            b"echo hi\r\nhi\r\n"
        );
    }

    #[test]
    fn prompts_are_recognised() {
        assert!(looks_like_prompt(b"/ # "));
        assert!(looks_like_prompt(b"student@guest:~$ "));
        assert!(!looks_like_prompt(b"Loading: 45%"));
        assert!(!looks_like_prompt(b"hello"));
        assert_eq!(strip_queries(b"\x1b[1;32m~ $\x1b[0m \x1b[6n"), b"~ $ ");
        assert!(is_cursor_report(b"\x1b[12;40R"));
        assert!(!is_cursor_report(b"\x1b[A"));
    }
}
