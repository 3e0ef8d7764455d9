//! Launches wait here for the next batch: one task takes every launch that
//! arrived while the previous batch was being written and decides them in
//! one store transaction ([`Store::launch_batch`]). A lone launch goes at
//! once; a burst costs a few transactions instead of one per launch.

use tokio::sync::{mpsc, oneshot};

use crate::store::{LaunchConnection, LaunchOutcome, LaunchRequest, Store};

/// Most launches decided in one transaction.
const MAX_BATCH: usize = 256;

type Reply = oneshot::Sender<Result<LaunchOutcome, String>>;

pub struct LaunchQueue {
    tx: mpsc::UnboundedSender<(LaunchRequest, Reply)>,
}

impl LaunchQueue {
    /// Starts the batching task; it ends when the queue is dropped.
    pub fn start(store: Store) -> LaunchQueue {
        let (tx, mut rx) = mpsc::unbounded_channel::<(LaunchRequest, Reply)>();
        // A thread of its own: on a busy server the batch's many awaits
        // would otherwise each queue behind every request being parsed,
        // and every launch waits for the batch.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("launch queue runtime");
        let worker = async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            let mut kept: Option<LaunchConnection> = None;
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let (requests, replies): (Vec<LaunchRequest>, Vec<Reply>) =
                    std::mem::take(&mut batch).into_iter().unzip();
                let result = match kept.take() {
                    Some(conn) => Ok(conn),
                    None => store.launch_connection().await,
                };
                let result = match result {
                    Ok(mut conn) => {
                        let now = crate::reconcile::now_ms();
                        let decided = store.launch_batch_on(&mut conn, &requests, now).await;
                        // A failed batch may have left the connection
                        // broken: the next batch takes a fresh one.
                        if decided.is_ok() && store.can_keep_launch_connection() {
                            kept = Some(conn);
                        }
                        decided
                    }
                    Err(e) => Err(e),
                };
                match result {
                    Ok(outcomes) => {
                        for (reply, outcome) in replies.into_iter().zip(outcomes) {
                            let _ = reply.send(Ok(outcome));
                        }
                    }
                    Err(e) => {
                        let text = crate::lti::Refusal::from(e).reason;
                        tracing::error!(error = %text, launches = requests.len(),
                            "a batch of launches failed");
                        for reply in replies {
                            let _ = reply.send(Err(text.clone()));
                        }
                    }
                }
            }
        };
        std::thread::Builder::new()
            .name("labpool-launches".into())
            .spawn(move || runtime.block_on(worker))
            .expect("launch queue thread");
        LaunchQueue { tx }
    }

    /// Decides `launch` with whatever launches are queued with it.
    pub async fn decide(&self, launch: LaunchRequest) -> Result<LaunchOutcome, String> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((launch, reply))
            .map_err(|_| "the launch queue has stopped".to_owned())?;
        answer
            .await
            .map_err(|_| "the launch queue has stopped".to_owned())?
    }
}
