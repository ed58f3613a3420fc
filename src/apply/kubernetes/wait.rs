//! Waiting until objects are Current by kstatus's rules ([`super::health`]), polling the API
//! server: every 500 ms at first, slowing to every 2 s, until all are Current, one Failed,
//! or the time is up. A timeout names each object still pending and why.

use std::time::Duration;

use super::health::Health;
use super::object::get;
use super::resolve::Resolver;
use crate::apply::{ApplyContext, ApplyError};
use crate::cluster::Connection;
use crate::render::ObjectId;

const FIRST_POLL: Duration = Duration::from_millis(500);
const LAST_POLL: Duration = Duration::from_secs(2);
/// Returned this much before the context's timeout, so the caller's own timeout (which says
/// less) does not fire first.
const MARGIN: Duration = Duration::from_millis(200);

pub(crate) async fn until_current(
    conn: &Connection,
    resolver: &Resolver,
    ids: &[ObjectId],
    ctx: &ApplyContext,
) -> Result<(), ApplyError> {
    let deadline = tokio::time::Instant::now() + ctx.timeout.saturating_sub(MARGIN);
    let mut pending: Vec<(ObjectId, String)> = ids
        .iter()
        .map(|id| (id.clone(), "not checked yet".to_string()))
        .collect();
    let mut poll = FIRST_POLL;
    loop {
        let mut still = Vec::with_capacity(pending.len());
        for (id, _) in pending {
            match get(conn, resolver, &id).await? {
                None => still.push((id, "not found".to_string())),
                Some(live) => match super::health::health(&live) {
                    Health::Current => {}
                    Health::InProgress(why) => still.push((id, why)),
                    Health::Terminating => still.push((id, "being deleted".to_string())),
                    Health::Failed(why) => {
                        return Err(ApplyError::NotReady {
                            after: ctx.configured_timeout,
                            pending: vec![(id, format!("failed: {why}"))],
                        })
                    }
                },
            }
        }
        pending = still;
        if pending.is_empty() {
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(ApplyError::NotReady {
                after: ctx.configured_timeout,
                pending,
            });
        }
        tokio::select! {
            () = tokio::time::sleep(poll.min(deadline - now)) => {}
            () = ctx.cancel.cancelled() => return Err(ApplyError::Cancelled),
        }
        poll = (poll * 2).min(LAST_POLL);
    }
}
