//! RFC 6455 framing, the server's side, on the device's TCP stream itself.
//!
//! An idle device costs what its connection holds while it waits, so this socket holds the
//! stream and buffers that exist only while bytes are in them: what was read and is not yet a
//! whole frame, what is owed to the device (a reply the socket did not take at once, a pong),
//! a message arriving in fragments. Waiting for the device holds none of them.
//!
//! What it does not speak: extensions (no `permessage-deflate`; a frame with a reserved bit
//! set is a protocol error) and the client's side. Limits: a message (all its fragments) of at
//! most `max_message_size` bytes, checked from the frame's header before its payload is read;
//! at most `ws_write_buffer_max` bytes owed to the device at once.
//!
//! Every read is cancel-safe (a `select!` may drop it between frames or within one): what has
//! been read stays in the socket. A write cut short leaves what was not written in the socket,
//! and the next write or read sends it first.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::Poll;

use tokio::io::AsyncWriteExt as _;
use tokio_util::io::poll_read_buf;

use super::session::CloseFrame;
use crate::server::Tracked;

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// Largest payload of a control frame (RFC 6455, section 5.5).
const CONTROL_MAX: usize = 125;

/// What the socket is held to, from the configuration.
#[derive(Debug, Clone, Copy)]
pub(super) struct WireLimits {
    /// Bytes asked of the stream per read.
    pub(super) read_chunk: u32,
    /// Largest message, all its fragments together.
    pub(super) max_message: u32,
    /// Most bytes owed to the device at once.
    pub(super) max_output: u32,
}

/// A message from the device.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Incoming {
    Text(String),
    Binary,
    /// A ping (its pong is on its way) or a pong: proof of life.
    Control,
}

/// Why the socket cannot go on.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum WireError {
    /// The device closed (a close frame, whose echo is owed, or the end of the stream), or the
    /// stream broke.
    Closed,
    /// A message past `max_message_size`.
    TooLarge,
    /// More owed to the device than `ws_write_buffer_max`: it is not reading.
    Backlog,
    /// A frame RFC 6455 does not allow here.
    Protocol(&'static str),
    /// A text message that is not UTF-8.
    NotUtf8,
}

/// A message arriving in fragments.
struct Fragments {
    text: bool,
    bytes: Vec<u8>,
}

/// A device's WebSocket after the upgrade.
pub(super) struct WebSocket {
    io: Tracked,
    input: Vec<u8>,
    output: Vec<u8>,
    fragments: Option<Box<Fragments>>,
    limits: WireLimits,
    /// The device's close frame came (its echo is owed): nothing more is read.
    closed: bool,
}

impl WebSocket {
    /// The socket on `io`, starting with what the HTTP server read past the upgrade request.
    pub(super) fn new(io: Tracked, read: &[u8], limits: WireLimits) -> WebSocket {
        WebSocket { io, input: read.to_vec(), output: Vec::new(), fragments: None, limits, closed: false }
    }

    /// The next message. Pings are answered on the way.
    pub(super) async fn read(&mut self) -> Result<Incoming, WireError> {
        loop {
            if self.closed {
                return Err(WireError::Closed);
            }
            if let Some(incoming) = self.next_message()? {
                return Ok(incoming);
            }
            // A pong owed goes out before more is read: a device that pings and never reads
            // is held up here rather than growing what it is owed.
            if !self.output.is_empty() {
                self.flush().await?;
                continue;
            }
            self.fill().await?;
        }
    }

    /// Sends a text message.
    pub(super) async fn send_text(&mut self, text: &str) -> Result<(), WireError> {
        self.queue(TEXT, text.as_bytes())?;
        self.flush().await
    }

    /// Sends a ping.
    pub(super) async fn send_ping(&mut self) -> Result<(), WireError> {
        self.queue(PING, &[])?;
        self.flush().await
    }

    /// Ends the conversation: echoes the device's close frame if it sent one, or sends this
    /// close frame if there is one to send.
    pub(super) async fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), WireError> {
        if let (false, Some(CloseFrame { code, reason })) = (self.closed, frame) {
            let reason = truncate(reason, CONTROL_MAX - 2);
            let mut payload = Vec::with_capacity(2 + reason.len());
            payload.extend_from_slice(&code.to_be_bytes());
            payload.extend_from_slice(reason.as_bytes());
            self.queue(CLOSE, &payload)?;
            self.closed = true;
        }
        self.flush().await
    }

    /// Writes what is owed to the device; what a cancelled write did not send stays owed. A
    /// stream that takes nothing more is closed.
    async fn flush(&mut self) -> Result<(), WireError> {
        while !self.output.is_empty() {
            match self.io.write(&self.output).await {
                Ok(0) | Err(_) => return Err(WireError::Closed),
                Ok(written) => self.output.drain(..written),
            };
        }
        release_if_empty(&mut self.output);
        Ok(())
    }

    /// Waits for the device to send something and reads it.
    async fn fill(&mut self) -> Result<(), WireError> {
        loop {
            // Waiting holds no buffer: room is made only once there is something to read.
            poll_fn(|cx| self.io.stream().poll_read_ready(cx)).await.map_err(|_| WireError::Closed)?;
            self.input.reserve(self.limits.read_chunk as usize);
            // Read through the stream's own `poll_read`, once: a read that leaves room in the
            // buffer has emptied the socket, so the next wait goes straight to the poller
            // instead of first trying a read that would block (a system call per message).
            let read = poll_fn(|cx| match poll_read_buf(Pin::new(&mut self.io), cx, &mut self.input) {
                Poll::Pending => Poll::Ready(Err(io::ErrorKind::WouldBlock.into())),
                ready => ready,
            });
            match read.await {
                Ok(0) => return Err(WireError::Closed),
                Ok(_) => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => release_if_empty(&mut self.input),
                Err(_) => return Err(WireError::Closed),
            }
        }
    }

    /// Appends a frame to what is owed to the device.
    fn queue(&mut self, opcode: u8, payload: &[u8]) -> Result<(), WireError> {
        if self.output.len() + payload.len() > self.limits.max_output as usize {
            return Err(WireError::Backlog);
        }
        encode(&mut self.output, opcode, payload);
        Ok(())
    }

    /// The next whole message in what has been read, if there is one yet.
    fn next_message(&mut self) -> Result<Option<Incoming>, WireError> {
        loop {
            let held = self.fragments.as_ref().map_or(0, |fragments| fragments.bytes.len());
            let max = self.limits.max_message as usize;
            let Some(frame) = decode(&mut self.input, held, max)? else {
                release_if_empty(&mut self.input);
                return Ok(None);
            };
            let payload = &self.input[frame.payload.clone()];
            let incoming = match frame.opcode {
                PING => {
                    let payload = payload.to_vec();
                    self.queue(PONG, &payload)?;
                    Some(Incoming::Control)
                }
                PONG => Some(Incoming::Control),
                CLOSE => {
                    let echo = close_echo(payload)?;
                    self.queue(CLOSE, &echo)?;
                    self.closed = true;
                    return Err(WireError::Closed);
                }
                TEXT | BINARY if self.fragments.is_some() => {
                    return Err(WireError::Protocol("a new message inside a fragmented one"));
                }
                TEXT | BINARY if frame.fin => Some(message(frame.opcode == TEXT, payload.to_vec())?),
                TEXT | BINARY => {
                    let bytes = payload.to_vec();
                    self.fragments = Some(Box::new(Fragments { text: frame.opcode == TEXT, bytes }));
                    None
                }
                CONTINUATION => {
                    let Some(fragments) = self.fragments.as_mut() else {
                        return Err(WireError::Protocol("a continuation frame outside a message"));
                    };
                    fragments.bytes.extend_from_slice(payload);
                    if frame.fin {
                        let Fragments { text, bytes } = *self.fragments.take().expect("checked above");
                        Some(message(text, bytes)?)
                    } else {
                        None
                    }
                }
                _ => return Err(WireError::Protocol("an unknown opcode")),
            };
            self.input.drain(..frame.length);
            if let Some(incoming) = incoming {
                release_if_empty(&mut self.input);
                return Ok(Some(incoming));
            }
        }
    }
}

/// Frees an empty buffer's room: a waiting connection holds none.
fn release_if_empty(buffer: &mut Vec<u8>) {
    if buffer.is_empty() {
        *buffer = Vec::new();
    }
}

/// A whole frame at the start of a buffer.
#[derive(Debug)]
struct Frame {
    fin: bool,
    opcode: u8,
    /// Where its payload is (unmasked in place).
    payload: std::ops::Range<usize>,
    /// Its length with the header.
    length: usize,
}

/// The frame at the start of `input`, if all of it is there; its payload is unmasked in place.
/// `held` bytes of the message came in earlier fragments; a message may have `max` in all.
/// Room for the rest of a frame whose header has come is reserved at once.
fn decode(input: &mut Vec<u8>, held: usize, max: usize) -> Result<Option<Frame>, WireError> {
    let [first, second, ..] = input[..] else { return Ok(None) };
    let fin = first & 0x80 != 0;
    let opcode = first & 0x0F;
    if first & 0x70 != 0 {
        return Err(WireError::Protocol("a reserved bit is set"));
    }
    if second & 0x80 == 0 {
        return Err(WireError::Protocol("a frame from a client must be masked"));
    }
    let (length, header) = match second & 0x7F {
        126 => match input.get(2..4) {
            Some(bytes) => (u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 4),
            None => return Ok(None),
        },
        127 => match input.get(2..10) {
            Some(bytes) => (u64::from_be_bytes(bytes.try_into().expect("eight bytes")), 10),
            None => return Ok(None),
        },
        short => (u64::from(short), 2),
    };
    if opcode >= CLOSE {
        if !fin {
            return Err(WireError::Protocol("a fragmented control frame"));
        }
        if length > CONTROL_MAX as u64 {
            return Err(WireError::Protocol("a control frame longer than 125 bytes"));
        }
    } else if length > max.saturating_sub(held) as u64 {
        return Err(WireError::TooLarge);
    }
    let length = length as usize;
    let start = header + 4;
    let total = start + length;
    if input.len() < total {
        input.reserve(total - input.len());
        return Ok(None);
    }
    let mask = [input[header], input[header + 1], input[header + 2], input[header + 3]];
    for (i, byte) in input[start..total].iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
    Ok(Some(Frame { fin, opcode, payload: start..total, length: total }))
}

/// A server's frame (unmasked) appended to `out`.
fn encode(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.reserve(10 + payload.len());
    out.push(0x80 | opcode);
    match payload.len() {
        short @ 0..=125 => out.push(short as u8),
        medium @ 126..=0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(medium as u16).to_be_bytes());
        }
        long => {
            out.push(127);
            out.extend_from_slice(&(long as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// A whole message's payload as what the session hears.
fn message(text: bool, bytes: Vec<u8>) -> Result<Incoming, WireError> {
    if !text {
        return Ok(Incoming::Binary);
    }
    String::from_utf8(bytes).map(Incoming::Text).map_err(|_| WireError::NotUtf8)
}

/// The close frame answering the device's: its code, or none if it gave none. A close frame
/// that breaks the rules (a lone byte, a code no endpoint may send, a reason that is not UTF-8)
/// is a protocol error.
fn close_echo(payload: &[u8]) -> Result<Vec<u8>, WireError> {
    match payload {
        [] => Ok(Vec::new()),
        [_] => Err(WireError::Protocol("a close frame of one byte")),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            let allowed = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !allowed {
                return Err(WireError::Protocol("a close code no endpoint may send"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(WireError::NotUtf8);
            }
            Ok(code.to_be_bytes().to_vec())
        }
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's frame: masked, as RFC 6455 requires.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, byte)| byte ^ mask[i % 4]));
        out
    }

    fn decoded(bytes: &[u8], max: usize) -> Result<Option<(bool, u8, Vec<u8>)>, WireError> {
        let mut input = bytes.to_vec();
        let frame = decode(&mut input, 0, max)?;
        Ok(frame.map(|frame| (frame.fin, frame.opcode, input[frame.payload].to_vec())))
    }

    #[test]
    fn the_rfcs_masked_hello_decodes() {
        // RFC 6455, section 5.7: a single-frame masked text message "Hello".
        let frame = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
        assert_eq!(decoded(&frame, 4096), Ok(Some((true, TEXT, b"Hello".to_vec()))));
    }

    #[test]
    fn a_frame_cut_anywhere_waits_for_the_rest() {
        for payload in [&b"{}"[..], &[b'x'; 300][..], &vec![b'y'; 70_000][..]] {
            let frame = client_frame(true, TEXT, payload);
            for cut in 0..frame.len().min(20) {
                assert_eq!(decoded(&frame[..cut], 1 << 20), Ok(None), "cut at {cut}");
            }
            assert_eq!(decoded(&frame[..frame.len() - 1], 1 << 20), Ok(None));
            assert_eq!(decoded(&frame, 1 << 20), Ok(Some((true, TEXT, payload.to_vec()))));
        }
    }

    #[test]
    fn the_size_limit_is_checked_from_the_header() {
        let frame = client_frame(true, TEXT, &[b'x'; 200]);
        // Only the header is there; the payload would pass the limit.
        assert_eq!(decoded(&frame[..4], 199), Err(WireError::TooLarge));
        assert_eq!(decoded(&frame, 200).map(|f| f.is_some()), Ok(true));
        // Fragments count together.
        let mut input = frame.clone();
        assert_eq!(decode(&mut input, 1, 200).map(|f| f.is_some()), Err(WireError::TooLarge));
    }

    #[test]
    fn frames_the_rfc_forbids_are_protocol_errors() {
        let mut unmasked = client_frame(true, TEXT, b"hi");
        unmasked[1] &= 0x7F;
        assert!(matches!(decoded(&unmasked, 100), Err(WireError::Protocol(_))));
        let mut reserved = client_frame(true, TEXT, b"hi");
        reserved[0] |= 0x40;
        assert!(matches!(decoded(&reserved, 100), Err(WireError::Protocol(_))));
        let fragmented_ping = client_frame(false, PING, b"");
        assert!(matches!(decoded(&fragmented_ping, 100), Err(WireError::Protocol(_))));
        let long_ping = client_frame(true, PING, &[0; 126]);
        assert!(matches!(decoded(&long_ping, 1000), Err(WireError::Protocol(_))));
    }

    #[test]
    fn server_frames_use_the_shortest_length() {
        for (len, header) in [(0usize, 2usize), (125, 2), (126, 4), (65_535, 4), (65_536, 10)] {
            let mut out = Vec::new();
            encode(&mut out, TEXT, &vec![b'a'; len]);
            assert_eq!(out.len(), header + len, "{len}");
            assert_eq!(out[0], 0x81);
            assert_eq!(out[1] & 0x80, 0, "a server's frame is not masked");
        }
    }

    #[test]
    fn a_close_frame_is_echoed_with_its_code() {
        assert_eq!(close_echo(&[]), Ok(Vec::new()));
        assert_eq!(close_echo(&[0x03, 0xE8, b'b', b'y', b'e']), Ok(vec![0x03, 0xE8]));
        assert_eq!(close_echo(&4001u16.to_be_bytes()), Ok(4001u16.to_be_bytes().to_vec()));
        assert!(matches!(close_echo(&[0x03]), Err(WireError::Protocol(_))));
        for reserved in [999u16, 1004, 1005, 1006, 1015, 2999, 5000] {
            assert!(matches!(close_echo(&reserved.to_be_bytes()), Err(WireError::Protocol(_))), "{reserved}");
        }
        assert_eq!(close_echo(&[0x03, 0xE8, 0xFF]), Err(WireError::NotUtf8));
    }

    #[test]
    fn a_reason_is_cut_on_a_character_boundary() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("short", 123), "short");
    }

    #[test]
    fn text_must_be_utf8() {
        assert_eq!(message(true, b"ok".to_vec()), Ok(Incoming::Text("ok".into())));
        assert_eq!(message(true, vec![0xC3]), Err(WireError::NotUtf8));
        assert_eq!(message(false, vec![0xC3]), Ok(Incoming::Binary));
    }
}
