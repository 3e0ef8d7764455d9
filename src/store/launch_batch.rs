//! Launches in batches: the first minute of a class brings hundreds of
//! launches at once, and a transaction per launch would queue them behind
//! one another (SQLite has one writer; every commit waits for the disk).
//! So launches that arrive together are decided together, in one write
//! transaction with a fixed number of set-based statements, whatever the
//! batch size: group commit for claims.
//!
//! Per batch, in order:
//! 1. PostgreSQL: the advisory lock of every key and every user, in sorted
//!    order (another labpool serving launches from the same store waits,
//!    never deadlocks).
//! 2. Use the logins up: each state once, and only if its nonce, issuer,
//!    client and deployment match the id_token's.
//! 3. Keys with a live session get it back (`resumed`); it is not a new lab.
//!    A launch that resolved no course (`resume_only`) stops here: its
//!    session back, or `NoLiveSession`.
//!    The other launches count against their user's limits (live sessions
//!    plus live wait tickets, per course and in all), in arrival order; one
//!    over a limit is refused (`UserLimit`).
//! 4. Per course, launches queue behind launches already waiting (first
//!    come, first served); the first ones in the queue take the oldest-ready
//!    warm VMs, locked (`FOR UPDATE SKIP LOCKED` on PostgreSQL).
//! 5. The rest wait (a ticket) or, when live sessions plus launches ahead
//!    reach the course's max, are told the lab is full.
//!
//! A key launched several times in one batch is decided once; the others
//! share its outcome.

use std::collections::{BTreeSet, HashMap, HashSet};

use sqlx::pool::PoolConnection;
use sqlx::{Any, Connection, Transaction};

use super::launches::{LaunchOutcome, LaunchRequest, WAIT_STALE_MS, WaitTicket};
use super::{Backend, Claimed, SessionKey, SessionRow, Store, StoreError, VmRow};

/// A subquery yielding the rows of a JSON array of objects bound at
/// `$param`, with the given columns (name, PostgreSQL type). Many rows in
/// one bound value: binding thousands of separate values costs far more.
fn json_rows(backend: Backend, param: usize, columns: &[(&str, &str)]) -> String {
    match backend {
        Backend::Sqlite => format!(
            "(SELECT {} FROM json_each(${param}))",
            columns
                .iter()
                .map(|(name, _)| format!("json_extract(value, '$.{name}') AS {name}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Backend::Postgres => format!(
            "(SELECT * FROM json_to_recordset(${param}::json) AS x({}))",
            columns
                .iter()
                .map(|(name, ty)| format!("{name} {ty}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `IN` the strings of a JSON array bound at `$param`: a membership test
/// over many values with one bound value. (On PostgreSQL an array built
/// once, so `= ANY` can use the index.)
fn in_json_list(backend: Backend, param: usize) -> String {
    match backend {
        Backend::Sqlite => format!("IN (SELECT value FROM json_each(${param}))"),
        Backend::Postgres => {
            format!("= ANY(ARRAY(SELECT json_array_elements_text(${param}::json)))")
        }
    }
}

/// `items` as one JSON array, to bind where [`in_json_list`] reads it.
fn json_array<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    serde_json::Value::Array(
        items
            .into_iter()
            .map(|s| serde_json::Value::String(s.to_owned()))
            .collect(),
    )
    .to_string()
}

/// A connection kept for deciding launches: its prepared statements stay
/// warm, and a burst never waits for a pooled connection.
pub struct LaunchConnection(PoolConnection<Any>);

impl Store {
    /// Whether a connection may be kept for launches: not when the pool has
    /// only one (an in-memory SQLite store), which everything else needs.
    pub fn can_keep_launch_connection(&self) -> bool {
        self.pool.options().get_max_connections() > 1
    }

    pub async fn launch_connection(&self) -> Result<LaunchConnection, StoreError> {
        Ok(LaunchConnection(self.pool.acquire().await?))
    }

    /// Decides every launch of `batch` at `now`, in one transaction. The
    /// outcomes are in the order of `batch`.
    pub async fn launch_batch(
        &self,
        batch: &[LaunchRequest],
        now: i64,
    ) -> Result<Vec<LaunchOutcome>, StoreError> {
        let mut conn = self.launch_connection().await?;
        self.launch_batch_on(&mut conn, batch, now).await
    }

    /// [`Store::launch_batch`] on a kept connection.
    pub async fn launch_batch_on(
        &self,
        conn: &mut LaunchConnection,
        batch: &[LaunchRequest],
        now: i64,
    ) -> Result<Vec<LaunchOutcome>, StoreError> {
        let mut outcomes: Vec<Option<LaunchOutcome>> = vec![None; batch.len()];
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // SQLite: take the write lock up front (see `Store::begin_write`).
        let mut tx = match self.backend {
            Backend::Sqlite => Connection::begin_with(&mut *conn.0, "BEGIN IMMEDIATE").await?,
            Backend::Postgres => Connection::begin(&mut *conn.0).await?,
        };

        if self.backend == Backend::Postgres {
            // Keys (one session per key) and users (the per-user limits),
            // all in one sorted order, so batches never wait in a cycle.
            let keys: BTreeSet<String> = batch
                .iter()
                .flat_map(|l| [l.key.lock_name(), l.key.user_lock_name()])
                .collect();
            sqlx::query(
                "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM
                 (SELECT json_array_elements_text($1::json) AS k ORDER BY k) AS sorted",
            )
            .bind(json_array(keys.iter().map(String::as_str)))
            .execute(&mut *tx)
            .await?;
        }

        // 2. Logins, each usable once, and only by the id_token they were
        // made for. (VALUES columns are column1… on both databases.)
        let logins = json_rows(
            self.backend,
            2,
            &[
                ("state", "text"),
                ("nonce", "text"),
                ("issuer", "text"),
                ("client_id", "text"),
                ("deployment_id", "text"),
            ],
        );
        let sql = format!(
            "UPDATE lti_logins SET used_at = $1
             FROM {logins} AS v
             WHERE lti_logins.state = v.state AND lti_logins.nonce = v.nonce
               AND lti_logins.issuer = v.issuer AND lti_logins.client_id = v.client_id
               AND (lti_logins.deployment_id IS NULL OR lti_logins.deployment_id = v.deployment_id)
               AND lti_logins.used_at IS NULL AND lti_logins.expires_at > $1
             RETURNING lti_logins.state"
        );
        let json: Vec<serde_json::Value> = batch
            .iter()
            .map(|l| {
                serde_json::json!({
                    "state": l.state, "nonce": l.nonce, "issuer": l.issuer,
                    "client_id": l.client_id, "deployment_id": l.key.deployment_id,
                })
            })
            .collect();
        let q = sqlx::query_as::<_, (String,)>(&sql)
            .bind(now)
            .bind(serde_json::Value::Array(json).to_string());
        let used: HashSet<String> = q
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|(s,)| s)
            .collect();
        let mut taken: HashSet<&str> = HashSet::new();
        // Accepted launches, the first of each key leading the others.
        let mut leaders: Vec<usize> = Vec::new();
        let mut followers: HashMap<usize, Vec<usize>> = HashMap::new();
        // (A resume-only launch leads its own: it must never share a new
        // claim's outcome, nor a new claim its refusal.)
        let mut leader_of: HashMap<(&SessionKey, bool), usize> = HashMap::new();
        for (i, l) in batch.iter().enumerate() {
            // A state posted twice in one batch: the first post uses it.
            let ok = used.contains(&l.state) && taken.insert(l.state.as_str());
            if !ok {
                outcomes[i] = Some(LaunchOutcome::LoginRejected);
                continue;
            }
            match leader_of.get(&(&l.key, l.resume_only)) {
                Some(&lead) => followers.entry(lead).or_default().push(i),
                None => {
                    leader_of.insert((&l.key, l.resume_only), i);
                    leaders.push(i);
                }
            }
        }

        // 3. Live sessions come back.
        let mut pending: Vec<usize> = Vec::new();
        let mut users_sessions: Vec<SessionRow> = Vec::new();
        if !leaders.is_empty() {
            let resumed;
            (resumed, users_sessions) = self.live_claims_in(&mut tx, batch, &leaders).await?;
            for &i in &leaders {
                match resumed.get(&batch[i].key) {
                    Some(claimed) => {
                        outcomes[i] = Some(LaunchOutcome::Claimed(Box::new(claimed.clone())))
                    }
                    None if batch[i].resume_only => {
                        outcomes[i] = Some(LaunchOutcome::NoLiveSession)
                    }
                    None => pending.push(i),
                }
            }
        }
        // 3b. Per-user limits: what each user holds, then this batch's new
        // launches in arrival order.
        if !pending.is_empty() {
            let waits = self.users_waits_in(&mut tx, batch, &pending, now).await?;
            let mut holdings = Holdings::new(&users_sessions, &waits);
            pending.retain(|&i| match holdings.admit(&batch[i]) {
                Ok(()) => true,
                Err(held) => {
                    outcomes[i] = Some(LaunchOutcome::UserLimit { held });
                    false
                }
            });
        }
        // 4–5. Per course: the queue, warm VMs for its head, tickets or
        // Full for the rest.
        let mut by_course: Vec<(&str, &str, Vec<usize>)> = Vec::new();
        for &i in &pending {
            let l = &batch[i];
            match by_course
                .iter_mut()
                .find(|(c, h, _)| *c == l.course && *h == l.spec_hash)
            {
                Some(group) => group.2.push(i),
                None => by_course.push((&l.course, &l.spec_hash, vec![i])),
            }
        }
        for (course, spec_hash, launches) in by_course {
            self.decide_course_in(
                &mut tx,
                batch,
                course,
                spec_hash,
                &launches,
                now,
                &mut outcomes,
            )
            .await?;
        }
        tx.commit().await?;

        // Repeated keys share their leader's outcome (as a resume).
        for (lead, others) in followers {
            let shared = match outcomes[lead].clone() {
                Some(LaunchOutcome::Claimed(mut c)) => {
                    c.resumed = true;
                    LaunchOutcome::Claimed(c)
                }
                Some(other) => other,
                None => LaunchOutcome::LoginRejected,
            };
            for i in others {
                outcomes[i] = Some(shared.clone());
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or(LaunchOutcome::LoginRejected))
            .collect())
    }

    /// The live sessions (and their VMs) of the `leaders`' keys, and every
    /// live session of their users.
    async fn live_claims_in(
        &self,
        tx: &mut Transaction<'_, Any>,
        batch: &[LaunchRequest],
        leaders: &[usize],
    ) -> Result<(HashMap<SessionKey, Claimed>, Vec<SessionRow>), StoreError> {
        let users: BTreeSet<&str> = leaders
            .iter()
            .map(|&i| batch[i].key.user_sub.as_str())
            .collect();
        let sql = format!(
            "SELECT * FROM sessions WHERE ended_at IS NULL AND user_sub {}",
            in_json_list(self.backend, 1)
        );
        let q = sqlx::query_as::<_, SessionRow>(&sql).bind(json_array(users.iter().copied()));
        let wanted: HashSet<&SessionKey> = leaders.iter().map(|&i| &batch[i].key).collect();
        let users: Vec<SessionRow> = q.fetch_all(&mut **tx).await?;
        let sessions: Vec<SessionRow> = users
            .iter()
            .filter(|s| wanted.contains(&s.key))
            .cloned()
            .collect();
        if sessions.is_empty() {
            return Ok((HashMap::new(), users));
        }
        let sql = format!(
            "SELECT * FROM vms WHERE id {}",
            in_json_list(self.backend, 1)
        );
        let q = sqlx::query_as::<_, VmRow>(&sql)
            .bind(json_array(sessions.iter().map(|s| s.vm_id.as_str())));
        let vms: HashMap<String, VmRow> = q
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .map(|v| (v.id.clone(), v))
            .collect();
        let mut out = HashMap::new();
        for session in sessions {
            // delete_vm ends a VM's session in the same transaction, so a
            // live session without its VM means someone edited the tables.
            let vm = vms
                .get(&session.vm_id)
                .cloned()
                .ok_or_else(|| StoreError::VmNotFound(session.vm_id.clone()))?;
            out.insert(
                session.key.clone(),
                Claimed {
                    session,
                    vm,
                    resumed: true,
                },
            );
        }
        Ok((out, users))
    }

    /// The live wait tickets of the users of the `pending` launches.
    async fn users_waits_in(
        &self,
        tx: &mut Transaction<'_, Any>,
        batch: &[LaunchRequest],
        pending: &[usize],
        now: i64,
    ) -> Result<Vec<WaitTicket>, StoreError> {
        let users: BTreeSet<&str> = pending
            .iter()
            .map(|&i| batch[i].key.user_sub.as_str())
            .collect();
        let sql = format!(
            "SELECT * FROM launch_waits WHERE seen_at > $1 AND user_sub {}",
            in_json_list(self.backend, 2)
        );
        Ok(sqlx::query_as(&sql)
            .bind(now - WAIT_STALE_MS)
            .bind(json_array(users.iter().copied()))
            .fetch_all(&mut **tx)
            .await?)
    }

    /// Steps 4–5 for the `launches` (indexes into `batch`) of one course.
    #[allow(clippy::too_many_arguments)]
    async fn decide_course_in(
        &self,
        tx: &mut Transaction<'_, Any>,
        batch: &[LaunchRequest],
        course: &str,
        spec_hash: &str,
        launches: &[usize],
        now: i64,
        outcomes: &mut [Option<LaunchOutcome>],
    ) -> Result<(), StoreError> {
        // The queue: live tickets oldest first, then this batch's new
        // launches in arrival order.
        let tickets: Vec<WaitTicket> = sqlx::query_as(
            "SELECT * FROM launch_waits WHERE course = $1 AND seen_at > $2
             ORDER BY created_at, id",
        )
        .bind(course)
        .bind(now - WAIT_STALE_MS)
        .fetch_all(&mut **tx)
        .await?;
        let ticket_of: HashMap<&SessionKey, &WaitTicket> =
            tickets.iter().map(|t| (&t.key, t)).collect();
        let in_batch: HashMap<&SessionKey, usize> =
            launches.iter().map(|&i| (&batch[i].key, i)).collect();
        let mut queue: Vec<(Option<usize>, Option<&WaitTicket>)> = tickets
            .iter()
            .map(|t| (in_batch.get(&t.key).copied(), Some(t)))
            .collect();
        queue.extend(
            launches
                .iter()
                .filter(|&&i| !ticket_of.contains_key(&batch[i].key))
                .map(|&i| (Some(i), None)),
        );

        // Warm VMs for the head of the queue, oldest-ready first, locked.
        let lock = match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
        };
        // The course's current build first; an outdated warm VM (kept while
        // its replacement boots, see the planner's surge) only when none is.
        let warm: Vec<VmRow> = sqlx::query_as(&format!(
            "SELECT * FROM vms WHERE course = $1 AND state = 'warm'
             ORDER BY CASE WHEN spec_hash = $2 THEN 0 ELSE 1 END,
                      COALESCE(ready_at, state_changed_at), id
             LIMIT $3 {lock}"
        ))
        .bind(course)
        .bind(spec_hash)
        .bind(queue.len() as i64)
        .fetch_all(&mut **tx)
        .await?;
        // Queue position p takes warm[p] if it is in this batch; tickets
        // not in this batch keep theirs for their own next poll.
        let mut winners: Vec<(usize, &VmRow)> = Vec::new();
        let mut waiting: Vec<(usize, i64)> = Vec::new();
        let mut still_waiting = 0i64;
        for (p, (member, _)) in queue.iter().enumerate() {
            match (member, warm.get(p)) {
                (Some(i), Some(vm)) => winners.push((*i, vm)),
                (None, Some(_)) => {}
                (Some(i), None) => {
                    waiting.push((*i, still_waiting));
                    still_waiting += 1;
                }
                (None, None) => still_waiting += 1,
            }
        }

        let mut finished_tickets: Vec<&str> = Vec::new();
        if !winners.is_empty() {
            // Locked (PostgreSQL) or under the write lock (SQLite): all
            // of them are still warm.
            let sql = format!(
                "UPDATE vms SET state = 'assigned', state_changed_at = $1, reason = NULL
                 WHERE state = 'warm' AND id {}",
                in_json_list(self.backend, 2)
            );
            let assigned = sqlx::query(&sql)
                .bind(now)
                .bind(json_array(winners.iter().map(|(_, vm)| vm.id.as_str())))
                .execute(&mut **tx)
                .await?
                .rows_affected();
            if assigned != winners.len() as u64 {
                return Err(StoreError::Database(sqlx::Error::Protocol(format!(
                    "{assigned} of {} warm VMs could be assigned",
                    winners.len()
                ))));
            }
            let mut sessions = Vec::new();
            for (i, warm_vm) in &winners {
                let l = &batch[*i];
                let vm = VmRow {
                    state: super::VmState::Assigned,
                    state_changed_at: now,
                    reason: None,
                    ..(*warm_vm).clone()
                };
                let session = SessionRow {
                    id: format!("{:032x}", rand::random::<u128>()),
                    vm_id: vm.id.clone(),
                    course: vm.course.clone(),
                    key: l.key.clone(),
                    created_at: now,
                    expires_at: now + l.expiry_ms,
                    last_activity_at: now,
                    ended_at: None,
                    end_reason: None,
                };
                if let Some(t) = ticket_of.get(&l.key) {
                    finished_tickets.push(&t.id);
                }
                sessions.push(session.clone());
                outcomes[*i] = Some(LaunchOutcome::Claimed(Box::new(Claimed {
                    session,
                    vm,
                    resumed: false,
                })));
            }
            insert_sessions_in(self.backend, tx, &sessions).await?;
        }

        // The rest: Full at the max, else a ticket.
        if !waiting.is_empty() {
            let (live,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM sessions WHERE course = $1 AND ended_at IS NULL",
            )
            .bind(course)
            .fetch_one(&mut **tx)
            .await?;
            let mut new_tickets = Vec::new();
            let mut touched: Vec<&str> = Vec::new();
            for (i, ahead) in waiting {
                let l = &batch[i];
                let in_use = live + ahead;
                let own = ticket_of.get(&l.key).copied();
                if in_use >= i64::from(l.max) {
                    if let Some(t) = own {
                        finished_tickets.push(&t.id);
                    }
                    outcomes[i] = Some(LaunchOutcome::Full { in_use });
                    continue;
                }
                let ticket = match own {
                    Some(t) => {
                        touched.push(&t.id);
                        WaitTicket {
                            seen_at: now,
                            ..t.clone()
                        }
                    }
                    None => {
                        let t = WaitTicket {
                            id: format!("{:032x}", rand::random::<u128>()),
                            course: course.to_owned(),
                            key: l.key.clone(),
                            created_at: now,
                            seen_at: now,
                        };
                        new_tickets.push(t.clone());
                        t
                    }
                };
                outcomes[i] = Some(LaunchOutcome::Waiting(ticket));
            }
            insert_tickets_in(self.backend, tx, &new_tickets).await?;
            if !touched.is_empty() {
                let sql = format!(
                    "UPDATE launch_waits SET seen_at = $1 WHERE id {}",
                    in_json_list(self.backend, 2)
                );
                sqlx::query(&sql)
                    .bind(now)
                    .bind(json_array(touched.iter().copied()))
                    .execute(&mut **tx)
                    .await?;
            }
        }
        if !finished_tickets.is_empty() {
            let sql = format!(
                "DELETE FROM launch_waits WHERE id {}",
                in_json_list(self.backend, 1)
            );
            sqlx::query(&sql)
                .bind(json_array(finished_tickets.iter().copied()))
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}

async fn insert_sessions_in(
    backend: Backend,
    tx: &mut Transaction<'_, Any>,
    sessions: &[SessionRow],
) -> Result<(), StoreError> {
    if sessions.is_empty() {
        return Ok(());
    }
    let rows = json_rows(
        backend,
        1,
        &[
            ("id", "text"),
            ("vm_id", "text"),
            ("course", "text"),
            ("issuer", "text"),
            ("deployment_id", "text"),
            ("user_sub", "text"),
            ("context_id", "text"),
            ("resource_link_id", "text"),
            ("created_at", "bigint"),
            ("expires_at", "bigint"),
            ("last_activity_at", "bigint"),
        ],
    );
    let sql = format!(
        "INSERT INTO sessions (id, vm_id, course, issuer, deployment_id, user_sub, context_id,
                               resource_link_id, created_at, expires_at, last_activity_at)
         SELECT id, vm_id, course, issuer, deployment_id, user_sub, context_id,
                resource_link_id, created_at, expires_at, last_activity_at FROM {rows} AS r"
    );
    let json: Vec<serde_json::Value> = sessions
        .iter()
        .map(|s| {
            serde_json::json!({
                "id": s.id, "vm_id": s.vm_id, "course": s.course,
                "issuer": s.key.issuer, "deployment_id": s.key.deployment_id,
                "user_sub": s.key.user_sub, "context_id": s.key.context_id,
                "resource_link_id": s.key.resource_link_id,
                "created_at": s.created_at, "expires_at": s.expires_at,
                "last_activity_at": s.last_activity_at,
            })
        })
        .collect();
    sqlx::query(&sql)
        .bind(serde_json::Value::Array(json).to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn insert_tickets_in(
    backend: Backend,
    tx: &mut Transaction<'_, Any>,
    tickets: &[WaitTicket],
) -> Result<(), StoreError> {
    if tickets.is_empty() {
        return Ok(());
    }
    let rows = json_rows(
        backend,
        1,
        &[
            ("id", "text"),
            ("course", "text"),
            ("issuer", "text"),
            ("deployment_id", "text"),
            ("user_sub", "text"),
            ("context_id", "text"),
            ("resource_link_id", "text"),
            ("created_at", "bigint"),
            ("seen_at", "bigint"),
        ],
    );
    let sql = format!(
        "INSERT INTO launch_waits (id, course, issuer, deployment_id, user_sub, context_id,
                                   resource_link_id, created_at, seen_at)
         SELECT id, course, issuer, deployment_id, user_sub, context_id, resource_link_id,
                created_at, seen_at FROM {rows} AS r"
    );
    let json: Vec<serde_json::Value> = tickets
        .iter()
        .map(|t| {
            serde_json::json!({
                "id": t.id, "course": t.course, "issuer": t.key.issuer,
                "deployment_id": t.key.deployment_id, "user_sub": t.key.user_sub,
                "context_id": t.key.context_id, "resource_link_id": t.key.resource_link_id,
                "created_at": t.created_at, "seen_at": t.seen_at,
            })
        })
        .collect();
    sqlx::query(&sql)
        .bind(serde_json::Value::Array(json).to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// What each user (issuer and `sub`) holds while a batch is decided: live
/// sessions and live wait tickets, per course. New launches are admitted
/// against the course's `per_user` and labpool's `labs_per_user`, and what
/// they are admitted to counts for the launches after them.
struct Holdings<'a> {
    /// (issuer, sub) → course → labs held.
    held: HashMap<(&'a str, &'a str), HashMap<String, u32>>,
    /// Keys that already wait in their course: their launch is the same
    /// lab polled again, not a new one.
    waiting: HashSet<(&'a SessionKey, &'a str)>,
}

impl<'a> Holdings<'a> {
    fn new(sessions: &'a [SessionRow], waits: &'a [WaitTicket]) -> Holdings<'a> {
        let mut holdings = Holdings {
            held: HashMap::new(),
            waiting: HashSet::new(),
        };
        let keyed = sessions
            .iter()
            .map(|s| (&s.key, s.course.as_str()))
            .chain(waits.iter().map(|t| (&t.key, t.course.as_str())));
        for (key, course) in keyed {
            *holdings
                .held
                .entry((key.issuer.as_str(), key.user_sub.as_str()))
                .or_default()
                .entry(course.to_owned())
                .or_default() += 1;
        }
        holdings.waiting = waits.iter().map(|t| (&t.key, t.course.as_str())).collect();
        holdings
    }

    /// Counts `launch` as held, or says which courses its user holds when
    /// a limit is reached.
    fn admit(&mut self, launch: &'a LaunchRequest) -> Result<(), Vec<String>> {
        if self
            .waiting
            .contains(&(&launch.key, launch.course.as_str()))
        {
            return Ok(());
        }
        let user = (launch.key.issuer.as_str(), launch.key.user_sub.as_str());
        let courses = self.held.entry(user).or_default();
        let in_course = courses.get(&launch.course).copied().unwrap_or(0);
        let total: u32 = courses.values().sum();
        if in_course >= launch.per_user || total >= launch.labs_per_user {
            let mut held: Vec<String> = courses
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(c, _)| c.clone())
                .collect();
            held.sort();
            return Err(held);
        }
        *courses.entry(launch.course.clone()).or_default() += 1;
        Ok(())
    }
}
