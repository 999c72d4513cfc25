//! The roster: every user's presence as a lone node holds it in memory (each device's status,
//! each user's best and visible status, what each granted app was last told, and each app's
//! last event seq), and the one function that applies a device's report to it. Pure: the
//! presence engine persists what a report returns before any app may see it.

use std::collections::HashMap;
use std::sync::Arc;

use super::ids::{AccountId, DeviceId};
use super::presence::{app_view, best_of, visible, Status};

/// One grant as the roster keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantState {
    pub app_id: Arc<str>,
    pub uid: Arc<str>,
    /// Away is shown to this app as online.
    pub coarse: bool,
    /// A paused grant is told nothing.
    pub enabled: bool,
    /// What the app was last told, if anything it understands as a status.
    pub told: Option<Status>,
}

/// One account's presence, as loaded from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountPresence {
    pub account: AccountId,
    pub appear_offline: bool,
    /// The best and visible status as last recorded.
    pub best: Status,
    pub visible: Status,
    pub devices: Vec<(DeviceId, Status)>,
    pub grants: Vec<GrantState>,
}

/// An entry a report appends to an app's event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub app_id: Arc<str>,
    pub seq: u64,
    pub uid: Arc<str>,
    pub status: Status,
}

/// What applying one report changed, for the store to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub device: DeviceId,
    pub status: Status,
    pub account: AccountId,
    /// The account's new best and visible status, when either changed.
    pub totals: Option<(Status, Status)>,
    /// Whether what apps may see of the user changed (then `events` says who was told).
    pub visible_changed: bool,
    pub events: Vec<NewEvent>,
}

impl Applied {
    /// The change apps hear of, at `at`, when what they may see of the user changed.
    pub fn change(&self, at: i64) -> Option<super::PresenceChange> {
        let (_, shown) = self.totals.filter(|_| self.visible_changed)?;
        let events = self
            .events
            .iter()
            .map(|event| super::AppEvent { app_id: event.app_id.to_string(), seq: event.seq })
            .collect();
        Some(super::PresenceChange { account: self.account, status: shown, at, events })
    }
}

/// Every account of a node, in memory.
#[derive(Debug, Default)]
pub struct Roster {
    accounts: HashMap<AccountId, AccountPresence>,
    devices: HashMap<DeviceId, AccountId>,
    /// The last seq of each app's event log.
    seqs: HashMap<Arc<str>, u64>,
}

impl Roster {
    /// Replaces what the roster knows of an account (after it was loaded or written elsewhere).
    pub fn load(&mut self, presence: AccountPresence) {
        if let Some(old) = self.accounts.get(&presence.account) {
            for (device, _) in &old.devices {
                self.devices.remove(device);
            }
        }
        for (device, _) in &presence.devices {
            self.devices.insert(device.clone(), presence.account);
        }
        self.accounts.insert(presence.account, presence);
    }

    /// Forgets an account that no longer exists.
    pub fn forget(&mut self, account: AccountId) {
        if let Some(old) = self.accounts.remove(&account) {
            for (device, _) in &old.devices {
                self.devices.remove(device);
            }
        }
    }

    /// Notes an app's last event seq as the store has it; a seq never goes back.
    pub fn load_seq(&mut self, app_id: &str, seq: u64) {
        match self.seqs.get_mut(app_id) {
            Some(last) => *last = (*last).max(seq),
            None => {
                self.seqs.insert(app_id.into(), seq);
            }
        }
    }

    pub fn account(&self, account: AccountId) -> Option<&AccountPresence> {
        self.accounts.get(&account)
    }

    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    /// Applies a device's report: its status, its user's best and visible status, and an
    /// event for every enabled grant whose view of the user changed. `None` for a device the
    /// roster does not know (removed meanwhile).
    pub fn report(&mut self, device: &DeviceId, status: Status) -> Option<Applied> {
        let account_id = *self.devices.get(device)?;
        let account = self.accounts.get_mut(&account_id)?;
        let slot = account.devices.iter_mut().find(|(id, _)| id == device)?;
        let mut applied = Applied {
            device: device.clone(),
            status,
            account: account_id,
            totals: None,
            visible_changed: false,
            events: Vec::new(),
        };
        if slot.1 == status {
            return Some(applied);
        }
        slot.1 = status;
        let best = best_of(account.devices.iter().map(|(_, status)| *status));
        let shown = visible(best, account.appear_offline);
        if (best, shown) == (account.best, account.visible) {
            return Some(applied);
        }
        applied.totals = Some((best, shown));
        account.best = best;
        if shown == account.visible {
            return Some(applied);
        }
        account.visible = shown;
        applied.visible_changed = true;
        for grant in account.grants.iter_mut().filter(|grant| grant.enabled) {
            let view = app_view(shown, grant.coarse);
            if grant.told == Some(view) {
                continue;
            }
            grant.told = Some(view);
            let seq = self.seqs.entry(grant.app_id.clone()).or_insert(0);
            *seq += 1;
            applied.events.push(NewEvent {
                app_id: grant.app_id.clone(),
                seq: *seq,
                uid: grant.uid.clone(),
                status: view,
            });
        }
        Some(applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn device(n: u8) -> DeviceId {
        DeviceId::parse(&format!("d{}", hex::encode([n; 12]))).unwrap()
    }

    fn grant(app: &str, coarse: bool) -> GrantState {
        GrantState { app_id: app.into(), uid: format!("u_{app}").into(), coarse, enabled: true, told: None }
    }

    fn roster(devices: u8, grants: Vec<GrantState>, appear_offline: bool) -> Roster {
        let mut roster = Roster::default();
        roster.load(AccountPresence {
            account: AccountId(1),
            appear_offline,
            best: Status::Offline,
            visible: Status::Offline,
            devices: (0..devices).map(|n| (device(n), Status::Offline)).collect(),
            grants,
        });
        roster.load_seq("chat", 7);
        roster
    }

    #[test]
    fn a_report_tells_each_app_once_with_the_next_seq() {
        let mut roster = roster(2, vec![grant("chat", false), grant("mail", true)], false);
        let applied = roster.report(&device(0), Status::Away).unwrap();
        assert!(applied.visible_changed);
        assert_eq!(applied.totals, Some((Status::Away, Status::Away)));
        let told: Vec<_> = applied.events.iter().map(|e| (&*e.app_id, e.seq, e.status)).collect();
        assert_eq!(told, [("chat", 8, Status::Away), ("mail", 1, Status::Online)]);
        // The second device going online changes nothing for the coarse app.
        let applied = roster.report(&device(1), Status::Online).unwrap();
        let told: Vec<_> = applied.events.iter().map(|e| (&*e.app_id, e.seq, e.status)).collect();
        assert_eq!(told, [("chat", 9, Status::Online)]);
    }

    #[test]
    fn the_same_status_again_writes_the_device_and_tells_no_one() {
        let mut roster = roster(1, vec![grant("chat", false)], false);
        roster.report(&device(0), Status::Online).unwrap();
        let again = roster.report(&device(0), Status::Online).unwrap();
        assert_eq!((again.totals, again.visible_changed, again.events.len()), (None, false, 0));
    }

    #[test]
    fn a_user_appearing_offline_tells_apps_nothing_while_devices_change() {
        let mut roster = roster(1, vec![grant("chat", false)], true);
        let applied = roster.report(&device(0), Status::Online).unwrap();
        assert_eq!(applied.totals, Some((Status::Online, Status::Offline)));
        assert!(!applied.visible_changed && applied.events.is_empty());
    }

    #[test]
    fn paused_grants_are_told_nothing_and_unknown_devices_nothing_at_all() {
        let mut paused = grant("chat", false);
        paused.enabled = false;
        let mut roster = roster(1, vec![paused], false);
        assert!(roster.report(&device(0), Status::Online).unwrap().events.is_empty());
        assert_eq!(roster.report(&device(9), Status::Online), None);
    }

    #[test]
    fn loading_an_account_again_replaces_its_devices() {
        let mut roster = roster(2, vec![], false);
        let mut reloaded = roster.account(AccountId(1)).unwrap().clone();
        reloaded.devices.pop();
        roster.load(reloaded);
        assert_eq!(roster.report(&device(1), Status::Online), None);
        assert!(roster.report(&device(0), Status::Online).is_some());
    }

    fn status() -> impl Strategy<Value = Status> {
        prop::sample::select(vec![Status::Offline, Status::Away, Status::Online])
    }

    proptest! {
        /// Over any sequence of reports: seqs per app rise by one with no gap or repeat, no app
        /// is told the same status twice in a row, and the user's status is the best device's.
        #[test]
        fn seqs_rise_by_one_and_every_app_hears_each_change_once(
            reports in prop::collection::vec((0u8..3, status()), 1..60),
            coarse in any::<bool>(),
        ) {
            let mut roster = roster(3, vec![grant("chat", false), grant("mail", coarse)], false);
            let mut last: HashMap<Arc<str>, (u64, Status)> = HashMap::new();
            let mut devices = [Status::Offline; 3];
            for (n, status) in reports {
                devices[n as usize] = status;
                let applied = roster.report(&device(n), status).unwrap();
                for event in applied.events {
                    let before = last.get(&event.app_id).copied();
                    let expected_seq = before.map_or(if &*event.app_id == "chat" { 8 } else { 1 }, |(seq, _)| seq + 1);
                    prop_assert_eq!(event.seq, expected_seq);
                    prop_assert_ne!(before.map(|(_, status)| status), Some(event.status));
                    last.insert(event.app_id.clone(), (event.seq, event.status));
                }
                let account = roster.account(AccountId(1)).unwrap();
                prop_assert_eq!(account.best, best_of(devices));
            }
        }
    }
}
