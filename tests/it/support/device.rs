//! What a device's side of a test needs besides the client: channel ids, and waiting for the
//! server to close the socket.

use super::service::{ClientError, DeviceClient, Received};

pub fn channel_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Waits for the server to close the connection, skipping messages; returns the close code
/// (`expect` says what failed when it does not close).
pub async fn close_code(client: &mut DeviceClient, expect: &str) -> Option<u16> {
    loop {
        match client.recv().await {
            Ok(Received::Closed { code, .. }) | Err(ClientError::Closed { code, .. }) => return code,
            Ok(Received::Message(_)) => continue,
            Err(error) => panic!("{expect}: {error}"),
        }
    }
}
