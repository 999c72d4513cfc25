//! Webhook deliveries as their app and its developer see them: the recorded attempts a page at
//! a time behind an opaque cursor, and a resend of a failed one, which asks the dispatcher to
//! send the app's pending events at its next scan instead of after the backoff.
//!
//! Events stay pending until an endpoint answers a 2xx, so a resend never sends an attempt's
//! body again as it was: it sends what is pending now (the latest status per user), as the
//! next attempt would have. It still keeps to `webhook_batch_interval` after the last POST.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::{Core, Error, Result};
use crate::domain::{AccountId, DeliveryAttempt};
use crate::store::Resend;

/// Attempts on a page unless the request asks for another number.
pub const DEFAULT_PAGE: u32 = 100;
/// The most attempts one page holds.
pub const MAX_PAGE: u32 = 500;

/// Attempts newest first, and the cursor of the page after them (`None` on the last page).
#[derive(Debug, Clone)]
pub struct AttemptPage {
    pub attempts: Vec<DeliveryAttempt>,
    pub next_cursor: Option<String>,
}

/// The cursor that reads the attempts older than `id`.
fn encode_cursor(id: u64) -> String {
    URL_SAFE_NO_PAD.encode(id.to_be_bytes())
}

fn decode_cursor(cursor: &str) -> Option<u64> {
    let bytes: [u8; 8] = URL_SAFE_NO_PAD.decode(cursor).ok()?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// A page size as the query gives it: 1 to `MAX_PAGE`, `DEFAULT_PAGE` when absent.
pub fn parse_limit(raw: Option<&str>) -> Result<u32> {
    match raw {
        None => Ok(DEFAULT_PAGE),
        Some(raw) => raw.trim().parse::<u32>().ok().filter(|n| (1..=MAX_PAGE).contains(n)).ok_or_else(|| {
            Error::invalid("invalid_limit", format!("limit is a number from 1 to {MAX_PAGE}"))
        }),
    }
}

/// One page of the app's attempts: the newest `limit`, or those older than the `cursor` a
/// previous page gave.
pub async fn page(core: &Core, app_id: &str, limit: u32, cursor: Option<&str>) -> Result<AttemptPage> {
    let before = match cursor {
        None => None,
        Some(cursor) => Some(decode_cursor(cursor).ok_or_else(|| {
            Error::invalid("invalid_cursor", "the cursor is not one a deliveries page gave")
        })?),
    };
    // One more than asked tells whether another page follows.
    let mut attempts = core.store.delivery_attempts(app_id, before, limit.saturating_add(1)).await?;
    let next_cursor = if attempts.len() > limit as usize {
        attempts.truncate(limit as usize);
        attempts.last().map(|last| encode_cursor(last.id))
    } else {
        None
    };
    Ok(AttemptPage { attempts, next_cursor })
}

/// Resends after the failed attempt `attempt` of the app (authorized by the caller): its
/// pending events go out at the next scan; a disabled webhook is enabled again. Returns whether
/// it had been disabled.
pub async fn resend(core: &Core, app_id: &str, attempt: u64) -> Result<bool> {
    match core.store.resend_delivery(app_id, attempt).await? {
        Resend::Scheduled { reenabled } => {
            tracing::info!(app_id = %app_id, attempt, reenabled, "webhook resend scheduled");
            Ok(reenabled)
        }
        Resend::NotFailed => Err(Error::Conflict {
            code: "not_failed",
            detail: "that attempt succeeded; only a failed attempt can be resent".into(),
        }),
        Resend::NothingPending => Err(Error::Conflict {
            code: "nothing_pending",
            detail: "no event is pending any more: a later attempt delivered them".into(),
        }),
        Resend::Unknown => Err(Error::NotFound("no such delivery attempt")),
    }
}

/// `resend`, for the app's owner (signed in).
pub async fn resend_for_owner(core: &Core, owner: AccountId, app_id: &str, attempt: u64) -> Result<bool> {
    match core.store.app(app_id).await? {
        Some(app) if app.owner == owner => resend(core, app_id, attempt).await,
        _ => Err(Error::NotFound("no such app")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_anything_else_is_refused() {
        for id in [0, 1, 99, u64::MAX] {
            assert_eq!(decode_cursor(&encode_cursor(id)), Some(id));
        }
        for bad in ["", "nope", "AAAAAAAAAA", "AAAAAAAAAAAAAA", "AAAA AAAAAAA", "%%%"] {
            assert_eq!(decode_cursor(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn page_sizes_are_one_to_five_hundred() {
        assert_eq!(parse_limit(None).unwrap(), DEFAULT_PAGE);
        assert_eq!(parse_limit(Some("500")).unwrap(), 500);
        assert_eq!(parse_limit(Some("1")).unwrap(), 1);
        for bad in ["0", "501", "-1", "ten", ""] {
            assert!(parse_limit(Some(bad)).is_err(), "{bad:?}");
        }
    }
}
