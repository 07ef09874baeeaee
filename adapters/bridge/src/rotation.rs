//! The instance side of rotation announcements: listen, check, and act once on each.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sidekey_application::{Clock, EventBus};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::protocol::{BridgeSecret, SecretAnnouncement, VerifiedAnnouncement};
use super::responder::millis;

/// How far an announcement's time may lie from this instance's clock. Older ones are replays (or came
/// too late to matter: the sessions they concern were revoked by the instances that were listening).
pub const MAX_ANNOUNCEMENT_AGE: Duration = Duration::from_secs(300);
/// How far ahead of this instance's clock an announcement may be dated (the bridge's clock may run
/// ahead); further ahead, it could be replayed for longer than [`MAX_ANNOUNCEMENT_AGE`].
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(30);
/// Pause before opening the feed again after the bus refused it.
const REOPEN_AFTER: Duration = Duration::from_secs(1);

/// Starts a task that calls `on_announcement` once for each authentic, fresh announcement on `bus`.
/// Forged, malformed, stale and repeated announcements are counted and logged, never acted on.
pub fn spawn_rotation_listener<F, Fut>(
    bus: Arc<dyn EventBus>,
    secret: BridgeSecret,
    clock: Arc<dyn Clock>,
    on_announcement: F,
) -> JoinHandle<()>
where
    F: Fn(VerifiedAnnouncement) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut seen = Seen::default();
        loop {
            let mut feed = match bus.announcements().await {
                Ok(feed) => feed,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for rotations; retrying");
                    tokio::time::sleep(REOPEN_AFTER).await;
                    continue;
                }
            };
            while let Some(message) = feed.next().await {
                match SecretAnnouncement::verify(&message, &secret) {
                    Ok(announcement) => {
                        let now_ms = millis(clock.now());
                        let too_old =
                            now_ms.saturating_sub(announcement.at_ms) > duration_ms(MAX_ANNOUNCEMENT_AGE);
                        let from_the_future =
                            announcement.at_ms.saturating_sub(now_ms) > duration_ms(MAX_CLOCK_SKEW);
                        if too_old || from_the_future {
                            refused("stale");
                            tracing::warn!(id = %announcement.id, "ignored a stale rotation announcement");
                        } else if seen.first_time(announcement.id, now_ms) {
                            on_announcement(announcement).await;
                        } else {
                            refused("repeated");
                        }
                    }
                    Err(error) => {
                        refused("unauthenticated");
                        tracing::warn!(%error, "refused a rotation announcement");
                    }
                }
            }
            tracing::warn!("the announcement feed closed; reopening");
            tokio::time::sleep(REOPEN_AFTER).await;
        }
    })
}

fn refused(reason: &'static str) {
    metrics::counter!("sidekey_bridge_announcements_refused_total", "reason" => reason).increment(1);
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The announcements acted on within the freshness window, so a replay inside it is ignored too.
#[derive(Default)]
struct Seen(HashMap<Uuid, u64>);

impl Seen {
    fn first_time(&mut self, id: Uuid, now_ms: u64) -> bool {
        let window = duration_ms(MAX_ANNOUNCEMENT_AGE).saturating_mul(2);
        self.0.retain(|_, at| now_ms.saturating_sub(*at) <= window);
        self.0.insert(id, now_ms).is_none()
    }
}
