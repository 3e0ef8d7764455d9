//! A container's terminal: a shell started with `docker exec` on a TTY, the
//! page's size passed on as exec resizes. Each console is a fresh exec: a
//! student who types `exit` gets a new shell when the gateway reconnects,
//! while the container (and their files) stay.

use bollard::Docker;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use bollard::query_parameters::ResizeExecOptionsBuilder;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::console::{Console, ConsoleError, ConsoleInput, OUTPUT_BUFFER};
use crate::hosts::docker::error;

/// Where and how to start the shell.
#[derive(Debug, Clone)]
pub struct ExecTarget {
    pub host: String,
    pub container: String,
    pub user: Option<String>,
    pub shell: Vec<String>,
}

/// Starts the shell in the container and pumps it on a task of its own.
pub async fn open(
    docker: Docker,
    target: &ExecTarget,
    cols: u16,
    rows: u16,
) -> Result<Console, ConsoleError> {
    let host = target.host.as_str();
    let exec = docker
        .create_exec(
            &target.container,
            ExecConfig {
                cmd: Some(target.shell.clone()),
                user: target.user.clone(),
                attach_stdin: Some(true),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(true),
                env: Some(vec!["TERM=xterm-256color".into()]),
                console_size: Some(vec![usize::from(rows), usize::from(cols)]),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| error(host, "create exec", e))?;
    let started = docker
        .start_exec(
            &exec.id,
            Some(StartExecOptions {
                detach: false,
                tty: true,
                output_capacity: None,
            }),
        )
        .await
        .map_err(|e| error(host, "start exec", e))?;
    let StartExecResults::Attached {
        mut output,
        mut input,
    } = started
    else {
        return Err(ConsoleError::Other("the exec started detached".into()));
    };
    let (in_tx, mut in_rx) = mpsc::channel::<ConsoleInput>(OUTPUT_BUFFER);
    let (out_tx, out_rx) = mpsc::channel::<Vec<u8>>(OUTPUT_BUFFER);
    let exec_id = exec.id;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                chunk = output.next() => match chunk {
                    Some(Ok(chunk)) => {
                        if out_tx.send(chunk.into_bytes().to_vec()).await.is_err() {
                            break;
                        }
                    }
                    // The shell exited, or the container or engine went.
                    _ => break,
                },
                msg = in_rx.recv() => match msg {
                    Some(ConsoleInput::Data(bytes)) => {
                        if input.write_all(&bytes).await.is_err() || input.flush().await.is_err() {
                            break;
                        }
                    }
                    Some(ConsoleInput::Resize { cols, rows }) => {
                        let size = ResizeExecOptionsBuilder::default()
                            .h(i32::from(rows))
                            .w(i32::from(cols))
                            .build();
                        // A resize the engine refuses leaves the old size;
                        // not a reason to drop the student's shell.
                        let _ = docker.resize_exec(&exec_id, size).await;
                    }
                    None => break,
                },
            }
        }
        let _ = input.shutdown().await;
    });
    Ok(Console {
        input: in_tx,
        output: out_rx,
    })
}
