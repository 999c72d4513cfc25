//! How a committed write is announced: presence changes and appended events become bus signals.

use crate::bus::{Bus, Signal};
use crate::domain::{AppEvent, PresenceChange};

/// What a committed write changed, as the bus carries it.
pub trait Announce {
    fn announce(self, bus: &dyn Bus);
}

impl Announce for PresenceChange {
    fn announce(self, bus: &dyn Bus) {
        tracing::debug!(account = self.account.0, status = self.status.name(), "presence changed");
        self.events.clone().announce(bus);
        bus.publish(Signal::Presence(self));
    }
}

/// Entries appended to apps' event logs wake whoever delivers those apps' events.
impl Announce for Vec<AppEvent> {
    fn announce(self, bus: &dyn Bus) {
        for event in self {
            bus.publish(Signal::AppEvents { app_id: event.app_id, seq: event.seq });
        }
    }
}

impl<T: Announce> Announce for Option<T> {
    fn announce(self, bus: &dyn Bus) {
        if let Some(what) = self {
            what.announce(bus);
        }
    }
}

impl Announce for Vec<PresenceChange> {
    fn announce(self, bus: &dyn Bus) {
        for change in self {
            change.announce(bus);
        }
    }
}
