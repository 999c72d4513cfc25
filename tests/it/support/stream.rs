//! A consumer of an app's presence stream (`GET /<app_id>/presence.json`) reading the raw body:
//! lines, batches of entries, and waiting for a user's status.

use std::time::Duration;

use futures_util::StreamExt as _;

use super::apps::RegisteredApp;

pub struct StreamClient {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<axum::body::Bytes>>,
    buffer: String,
}

impl StreamClient {
    /// Opens the app's stream on the server at `base` (`http://host:port`) with a query
    /// (`""` or `"?…"`) and headers: the status, the stream if it is 200, the body otherwise.
    pub async fn open_at(
        base: &str,
        registered: &RegisteredApp,
        query: &str,
        headers: &[(&str, &str)],
    ) -> (u16, Option<StreamClient>, String) {
        let mut request = reqwest::Client::new()
            .get(format!("{base}/{}/presence.json{query}", registered.app_id))
            .basic_auth(&registered.app_id, Some(&registered.secret));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        if status != 200 {
            return (status, None, response.text().await.unwrap());
        }
        (
            status,
            Some(StreamClient { body: response.bytes_stream().boxed(), buffer: String::new() }),
            String::new(),
        )
    }

    /// The next line (without the newline); `None` when the server ended the stream.
    pub async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buffer.find('\n') {
                let line = self.buffer[..end].to_owned();
                self.buffer.drain(..=end);
                return Some(line);
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.body.next())
                .await
                .expect("the stream stalled");
            match chunk {
                Some(Ok(bytes)) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                _ => return None,
            }
        }
    }

    /// The next non-empty batch of `(uid, status, seq)`, skipping heartbeats.
    pub async fn entries(&mut self) -> Vec<(String, String, u64)> {
        loop {
            let line = self.line().await.expect("the stream ended");
            let value: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert!(value.is_array(), "not a batch: {line}");
            let entries: Vec<(String, String, u64)> = serde_json::from_value(value).unwrap();
            if !entries.is_empty() {
                return entries;
            }
        }
    }

    /// Reads the stream until the user's status is `status` (fails after 20 s).
    pub async fn wait_for(&mut self, uid: &str, status: &str) {
        let read = async {
            loop {
                let entries = self.entries().await;
                if entries.iter().rev().find(|(u, _, _)| u == uid).is_some_and(|(_, s, _)| s == status) {
                    return;
                }
            }
        };
        if tokio::time::timeout(Duration::from_secs(20), read).await.is_err() {
            panic!("the stream never said {uid} is {status}");
        }
    }
}
