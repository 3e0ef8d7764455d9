//! Issue 15 §7, slow clients: 40 connections sending one header line every
//! 35 s all stayed open, and a trickled body stayed open 40 s. Now the
//! listener closes a connection whose headers or body do not arrive within
//! `http.limits`, and serves at most `max_connections` at once.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::lti::{Db, World};

async fn world(header: &str, body: &str, max_connections: u32) -> (World, std::net::SocketAddr) {
    let (header, body) = (header.to_owned(), body.to_owned());
    let w = World::new_tuned(Db::Sqlite, 1, 5, false, move |c| {
        c.http.limits.header_timeout = header.parse().unwrap();
        c.http.limits.body_timeout = body.parse().unwrap();
        c.http.limits.max_connections = max_connections;
    })
    .await;
    let addr = w
        .base
        .strip_prefix("http://")
        .unwrap()
        .parse()
        .expect("a socket address");
    (w, addr)
}

/// Reads until the peer closes; what it sent. Panics after `limit`.
async fn until_closed(stream: &mut TcpStream, limit: Duration) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "still open after {limit:?}");
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_headers_and_trickled_bodies_are_cut_off() {
    let (_w, addr) = world("1s", "1s", 100).await;

    // One header line every 300 ms: never a complete head.
    let started = Instant::now();
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let trickle = async {
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if slow
                .write_all(format!("X-Slow-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
            let mut probe = [0u8; 1];
            // A closed connection reads 0 (or fails).
            if let Ok(Ok(0) | Err(_)) =
                tokio::time::timeout(Duration::from_millis(1), slow.peek(&mut probe)).await
            {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), trickle)
        .await
        .expect("a slow head is cut off");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // A connection that sends nothing at all.
    let started = Instant::now();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    until_closed(&mut silent, Duration::from_secs(4)).await;
    assert!(started.elapsed() >= Duration::from_millis(900));

    // A body of 1000 bytes, one byte every 200 ms.
    let started = Instant::now();
    let mut body = TcpStream::connect(addr).await.unwrap();
    body.write_all(
        b"POST /lti/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n",
    )
    .await
    .unwrap();
    let (mut rd, mut wr) = body.into_split();
    let writer = tokio::spawn(async move {
        for _ in 0..1000 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if wr.write_all(b"a").await.is_err() {
                return;
            }
        }
    });
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), rd.read_to_end(&mut got)).await;
    writer.abort();
    assert!(closed.is_ok(), "a trickled body is cut off");
    let answer = String::from_utf8_lossy(&got);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "{answer}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // An ordinary request is served as before.
    let mut ok = TcpStream::connect(addr).await.unwrap();
    ok.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut ok, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_connection_cap_holds() {
    let (_w, addr) = world("30s", "30s", 4).await;
    // Four connections that send nothing (each holds a permit) …
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        // Proves the server has accepted it (and taken a permit).
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(s);
    }
    // … so a fifth is told and closed at once.
    let mut fifth = TcpStream::connect(addr).await.unwrap();
    let answer = until_closed(&mut fifth, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("Retry-After"), "{answer}");
    // One goes away: its permit serves the next connection.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = until_closed(&mut s, Duration::from_secs(3)).await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "no permit came back: {answer}");
        tokio::task::yield_now().await;
    }
}
