//! Devices: registering one (it gets a presence id, PrID, shown once) and removing one.

use super::presence::Touched;
use super::{Core, Error, Result};
use crate::bus::DeviceMessage;
use crate::clock::unix_now;
use crate::domain::{AccountId, DeviceId, DeviceInfo, Eviction, Uaid};
use crate::secrets::{digest, new_secret};
use crate::store::NewDevice;

/// Prefix of presence ids (PrIDs) handed to devices.
pub const PRID_PREFIX: &str = "prid_";

/// A new device: its id, and its PrID (shown once, stored only as a digest).
pub struct Registered {
    pub device_id: DeviceId,
    pub prid: String,
}

/// A device name: 1 to 64 characters, no control characters.
fn device_name(name: &str) -> Result<&str> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(Error::invalid(
            "invalid_name",
            "name must be 1 to 64 characters, without control characters",
        ));
    }
    Ok(name)
}

/// Registers a device for the account, optionally bound to the UAID it already uses. A UAID
/// belongs to one device: one another device holds (of any account, this one's included) is
/// refused, so that nobody can bind a device to someone else's connection.
pub async fn register(core: &Core, account: AccountId, name: &str, uaid: Option<&str>) -> Result<Registered> {
    let name = device_name(name)?;
    let uaid = match uaid.filter(|u| !u.is_empty()) {
        Some(raw) => Some(
            Uaid::parse(raw)
                .ok_or_else(|| Error::invalid("invalid_uaid", "uaid must be 32 hex characters"))?,
        ),
        None => None,
    };
    let existing = core.store.devices(account).await?;
    if existing.len() >= core.config.max_devices_per_account as usize {
        return Err(Error::Conflict {
            code: "too_many_devices",
            detail: format!("an account may have at most {} devices", core.config.max_devices_per_account),
        });
    }
    let id = DeviceId::random();
    let prid = new_secret(PRID_PREFIX);
    let prid_hash = digest(&prid);
    let device = NewDevice { id: &id, account, name, prid_hash: &prid_hash, uaid };
    let write = core.store.create_device(&device, unix_now());
    if !core.presence.write(|_| Touched::account(account), write).await? {
        return Err(Error::Conflict {
            code: "uaid_in_use",
            detail: "that uaid belongs to another device; register without it, and the device gets \
                     a fresh one at its next hello"
                .into(),
        });
    }
    tracing::info!(device_id = %id, "device registered");
    Ok(Registered { device_id: id, prid })
}

pub async fn list(core: &Core, account: AccountId) -> Result<Vec<DeviceInfo>> {
    Ok(core.store.devices(account).await?)
}

/// Removes one of the account's devices: its PrID stops working, its socket closes (4401), and
/// the user's status is recomputed without it.
pub async fn remove(core: &Core, account: AccountId, device_id: &str) -> Result<()> {
    let device = DeviceId::parse(device_id).ok_or(Error::NotFound("no such device"))?;
    remove_device(core, account, &device).await.map(drop)
}

/// `remove` by id; returns the UAID the device was bound to.
pub(super) async fn remove_device(
    core: &Core,
    account: AccountId,
    device: &DeviceId,
) -> Result<Option<Uaid>> {
    let not_found = || Error::NotFound("no such device");
    let device = device.clone();
    let write = core.store.delete_device(account, &device, unix_now());
    let removed = core.presence.write(|_| Touched::account(account), write).await?.ok_or_else(not_found)?;
    core.presence.forget(&device);
    if let Some(uaid) = removed.uaid {
        core.devices.deliver(uaid, DeviceMessage::Close(Eviction::Revoked));
    }
    core.presence.announce(removed.change);
    tracing::info!(device_id = %device, "device removed");
    Ok(removed.uaid)
}
