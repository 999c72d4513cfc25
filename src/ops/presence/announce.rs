//! How a committed write is announced: presence changes and appended events become bus signals.
//!
//! Events are announced once per app and write, with the app's newest seq: whoever delivers an
//! app's events reads its log from where it stands, so one wake covers the whole write.

use crate::bus::{Bus, Signal};
use crate::domain::{AppEvent, PresenceChange};

/// What a committed write changed, as the bus carries it.
pub trait Announce {
    fn announce(self, bus: &dyn Bus);
}

/// Each app's newest seq among the events of one write (a write touches few apps).
#[derive(Default)]
struct Newest(Vec<AppEvent>);

impl Newest {
    fn add(&mut self, app_id: &str, seq: u64) {
        match self.0.iter_mut().find(|newest| newest.app_id == app_id) {
            Some(newest) => newest.seq = newest.seq.max(seq),
            None => self.0.push(AppEvent { app_id: app_id.to_owned(), seq }),
        }
    }

    fn publish(self, bus: &dyn Bus) {
        for AppEvent { app_id, seq } in self.0 {
            bus.publish(Signal::AppEvents { app_id, seq });
        }
    }
}

impl Announce for PresenceChange {
    fn announce(self, bus: &dyn Bus) {
        vec![self].announce(bus);
    }
}

/// Entries appended to apps' event logs wake whoever delivers those apps' events.
impl Announce for Vec<AppEvent> {
    fn announce(self, bus: &dyn Bus) {
        let mut newest = Newest::default();
        for event in &self {
            newest.add(&event.app_id, event.seq);
        }
        newest.publish(bus);
    }
}

impl<T: Announce> Announce for Option<T> {
    fn announce(self, bus: &dyn Bus) {
        if let Some(what) = self {
            what.announce(bus);
        }
    }
}

/// Each change is signalled; the events they appended, once per app.
impl Announce for Vec<PresenceChange> {
    fn announce(self, bus: &dyn Bus) {
        let mut newest = Newest::default();
        for change in self {
            tracing::debug!(account = change.account.0, status = change.status.name(), "presence changed");
            for event in &change.events {
                newest.add(&event.app_id, event.seq);
            }
            bus.publish(Signal::Presence(change));
        }
        newest.publish(bus);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures_util::FutureExt as _;
    use tokio::sync::Notify;

    use super::*;
    use crate::domain::{AccountId, Status};

    fn change(account: i64, events: &[(&str, u64)]) -> PresenceChange {
        PresenceChange {
            account: AccountId(account),
            status: Status::Online,
            at: 0,
            events: events
                .iter()
                .map(|(app, seq)| AppEvent { app_id: (*app).to_owned(), seq: *seq })
                .collect(),
        }
    }

    #[tokio::test]
    async fn a_write_rings_each_app_once_and_signals_every_change() {
        let bus = crate::bus::LocalBus::new(64);
        let mut changes = bus.presence_changes();
        let (a, b, c) = (Arc::new(Notify::new()), Arc::new(Notify::new()), Arc::new(Notify::new()));
        bus.bells().hang("a", a.clone());
        bus.bells().hang("b", b.clone());
        bus.bells().hang("c", c.clone());
        vec![change(1, &[("a", 3), ("b", 4)]), change(2, &[("a", 5)]), change(3, &[])].announce(&bus);
        let mut seen = Vec::new();
        while let Ok(change) = changes.try_recv() {
            seen.push(change.account.0);
        }
        assert_eq!(seen, [1, 2, 3]);
        // The apps whose logs grew are rung (a ring waits for its waiter); the other is not.
        let rung = |bell: &Arc<Notify>| bell.notified().now_or_never().is_some();
        assert!(rung(&a) && rung(&b));
        assert!(!rung(&c));
        assert!(bus.bells().any().notified().now_or_never().is_some());
    }
}
