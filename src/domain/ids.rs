//! Identifiers parsed at the edge: UAIDs, channel ids, device ids and account ids. Inside the
//! server they are always canonical, so comparisons and storage never see two spellings of one id.

use std::fmt;

/// A user-agent id: 16 random bytes, written as 32 lower-case hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uaid([u8; 16]);

impl Uaid {
    pub fn random() -> Uaid {
        Uaid(rand::random())
    }

    /// Accepts 32 hex characters or a dashed UUID, in any case.
    pub fn parse(text: &str) -> Option<Uaid> {
        parse_uuid_bytes(text).map(Uaid)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Uaid {
        Uaid(bytes)
    }
}

impl fmt::Display for Uaid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Uaid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uaid({self})")
    }
}

/// A channel id chosen by the device: a UUID, kept in lower-case dashed form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId([u8; 16]);

impl ChannelId {
    /// Accepts a dashed UUID or 32 hex characters, in any case.
    pub fn parse(text: &str) -> Option<ChannelId> {
        parse_uuid_bytes(text).map(ChannelId)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    pub fn from_bytes(bytes: [u8; 16]) -> ChannelId {
        ChannelId(bytes)
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            uuid::Uuid::from_bytes(self.0).hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()),
        )
    }
}

impl fmt::Debug for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelId({self})")
    }
}

/// An account's internal id; never shown to apps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct AccountId(pub i64);

/// A device's public id: `d` and 24 hex characters, held inline: every map, event and
/// connection that names a device holds its 25 bytes, not a pointer to a copy on the heap.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId([u8; DEVICE_ID_LEN]);

/// `d` and 24 hex characters.
const DEVICE_ID_LEN: usize = 25;

impl DeviceId {
    pub fn random() -> DeviceId {
        let mut id = [b'd'; DEVICE_ID_LEN];
        hex::encode_to_slice(rand::random::<[u8; 12]>(), &mut id[1..]).expect("24 hex characters fit");
        DeviceId(id)
    }

    pub fn parse(text: &str) -> Option<DeviceId> {
        let hex = text.strip_prefix('d')?;
        let well_formed =
            hex.len() == DEVICE_ID_LEN - 1 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        well_formed.then(|| DeviceId(text.as_bytes().try_into().expect("checked length")))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("ASCII by construction")
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DeviceId").field(&self.as_str()).finish()
    }
}

/// In the API's schema, a string (as the id is written).
impl utoipa::PartialSchema for DeviceId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("A device's public id: `d` and 24 hex characters."))
            .into()
    }
}

impl utoipa::ToSchema for DeviceId {}

impl serde::Serialize for DeviceId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn parse_uuid_bytes(text: &str) -> Option<[u8; 16]> {
    // Only the two plain spellings: no braces, no "urn:uuid:" prefix.
    if text.len() != 32 && text.len() != 36 {
        return None;
    }
    uuid::Uuid::try_parse(text).ok().map(|u| *u.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_id_is_d_and_24_lowercase_hex_and_reads_back_as_written() {
        let id = DeviceId::parse("d0123456789abcdef01234567").unwrap();
        assert_eq!(id.as_str(), "d0123456789abcdef01234567");
        assert_eq!(id.to_string(), "d0123456789abcdef01234567");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"d0123456789abcdef01234567\"");
        for bad in [
            "",
            "d",
            "0123456789abcdef012345678",
            "d0123456789ABCDEF01234567",
            "d0123456789abcdef0123456",
            "d0123456789abcdef012345678",
            "dé123456789abcdef0123456",
        ] {
            assert_eq!(DeviceId::parse(bad), None, "{bad}");
        }
        let random = DeviceId::random();
        assert_eq!(DeviceId::parse(random.as_str()), Some(random.clone()));
        assert_ne!(DeviceId::random(), random);
    }

    #[test]
    fn uaids_are_canonical_whatever_the_spelling() {
        let a = Uaid::parse("0123456789ABCDEF0123456789abcdef").unwrap();
        let b = Uaid::parse("01234567-89ab-cdef-0123-456789ABCDEF").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "0123456789abcdef0123456789abcdef");
        assert_eq!(Uaid::random().to_string().len(), 32);
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in ["", "xyz", "0123456789abcdef0123456789abcdeg", "{01234567-89ab-cdef-0123-456789abcdef}"] {
            assert!(Uaid::parse(bad).is_none(), "{bad}");
            assert!(ChannelId::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn channel_ids_print_dashed_lower_case() {
        let c = ChannelId::parse("01234567-89AB-CDEF-0123-456789ABCDEF").unwrap();
        assert_eq!(c.to_string(), "01234567-89ab-cdef-0123-456789abcdef");
    }
}
