//! The presence rules, as pure functions: a user's status is the best of their devices', what
//! apps see of it depends on the user's policy (appear offline) and on each grant (coarse).

/// A status as devices report it (`O`, `A`, `U`) and apps see it (`online`, `away`, `offline`).
/// Ordered: the best of a user's devices is the maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    Offline = 0,
    Away = 1,
    Online = 2,
}

impl Status {
    /// From a device's `xps` code.
    pub fn from_code(code: &str) -> Option<Status> {
        match code {
            "O" => Some(Status::Online),
            "A" => Some(Status::Away),
            "U" => Some(Status::Offline),
            _ => None,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Status::Online => "O",
            Status::Away => "A",
            Status::Offline => "U",
        }
    }

    /// The name apps and users see.
    pub fn name(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Away => "away",
            Status::Offline => "offline",
        }
    }

    /// From the name apps see (`online`, `away`, `offline`).
    pub fn named(name: &str) -> Option<Status> {
        [Status::Online, Status::Away, Status::Offline].into_iter().find(|status| status.name() == name)
    }

    pub fn rank(self) -> i64 {
        self as i64
    }

    pub fn from_rank(rank: i64) -> Status {
        match rank {
            2 => Status::Online,
            1 => Status::Away,
            _ => Status::Offline,
        }
    }
}

impl serde::Serialize for Status {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl utoipa::PartialSchema for Status {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some([Status::Online, Status::Away, Status::Offline].map(Status::name)))
            .into()
    }
}

impl utoipa::ToSchema for Status {}

/// A user's presence policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Idle minutes before a device reports away.
    pub idle_away_minutes: u32,
    /// Idle minutes before a device reports unavailable.
    pub idle_offline_minutes: u32,
    /// Every app sees this user offline.
    pub appear_offline: bool,
}

/// Why a policy is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("idle minutes must be from 1 to 1440, and fewer before away than before unavailable")]
pub struct InvalidPolicy;

impl Policy {
    /// 1 ≤ away < unavailable ≤ 1440 minutes.
    pub fn validate(&self) -> Result<(), InvalidPolicy> {
        let (away, offline) = (self.idle_away_minutes, self.idle_offline_minutes);
        if !(1..=1440).contains(&away) || !(1..=1440).contains(&offline) || away >= offline {
            return Err(InvalidPolicy);
        }
        Ok(())
    }
}

/// A user's status: the best of their devices' (offline without any).
pub fn best_of(devices: impl IntoIterator<Item = Status>) -> Status {
    devices.into_iter().max().unwrap_or(Status::Offline)
}

/// What every app may see of a user whose devices say `best`.
pub fn visible(best: Status, appear_offline: bool) -> Status {
    if appear_offline {
        Status::Offline
    } else {
        best
    }
}

/// What one app is told: a coarse grant shows away as online.
pub fn app_view(visible: Status, coarse: bool) -> Status {
    if coarse && visible == Status::Away {
        Status::Online
    } else {
        visible
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: [Status; 3] = [Status::Offline, Status::Away, Status::Online];

    #[test]
    fn codes_names_and_ranks_agree() {
        for status in ALL {
            assert_eq!(Status::from_code(status.code()), Some(status));
            assert_eq!(Status::from_rank(status.rank()), status);
            assert_eq!(Status::named(status.name()), Some(status));
        }
        assert!(Status::Online > Status::Away && Status::Away > Status::Offline);
        assert_eq!(Status::from_code("o"), None);
        assert_eq!(Status::from_code("X"), None);
    }

    #[test]
    fn a_user_without_devices_is_offline() {
        assert_eq!(best_of([]), Status::Offline);
    }

    #[test]
    fn coarse_grants_see_away_as_online_and_nothing_else_changes() {
        assert_eq!(app_view(Status::Away, true), Status::Online);
        assert_eq!(app_view(Status::Away, false), Status::Away);
        assert_eq!(app_view(Status::Offline, true), Status::Offline);
        assert_eq!(app_view(Status::Online, true), Status::Online);
    }

    #[test]
    fn policies_need_away_before_unavailable_within_a_day() {
        let policy = |away, offline| Policy {
            idle_away_minutes: away,
            idle_offline_minutes: offline,
            appear_offline: false,
        };
        assert!(policy(5, 30).validate().is_ok());
        assert!(policy(1, 1440).validate().is_ok());
        for (away, offline) in [(0, 30), (30, 30), (31, 30), (5, 1441)] {
            assert_eq!(policy(away, offline).validate(), Err(InvalidPolicy), "{away} {offline}");
        }
    }

    fn status() -> impl Strategy<Value = Status> {
        prop::sample::select(ALL.to_vec())
    }

    proptest! {
        #[test]
        fn the_best_status_is_one_of_the_devices_and_none_is_better(devices in prop::collection::vec(status(), 1..8)) {
            let best = best_of(devices.clone());
            prop_assert!(devices.contains(&best));
            prop_assert!(devices.iter().all(|d| *d <= best));
        }

        #[test]
        fn appearing_offline_hides_every_status_from_every_app(best in status(), coarse in any::<bool>()) {
            prop_assert_eq!(app_view(visible(best, true), coarse), Status::Offline);
            prop_assert_eq!(visible(best, false), best);
        }
    }
}
