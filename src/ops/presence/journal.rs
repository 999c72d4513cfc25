//! The lone node's journal file: each batch of status changes is one line appended with one
//! `write`, and that is what makes it durable (it survives the process being killed, as the
//! store's own commits do with `synchronous = normal`: neither waits for the disk). The store
//! catches up from it in the background (`memory::apply`), many batches per transaction.
//!
//! Lines go to numbered segment files, `presence-<n>.journal` in `<data_dir>/journal/`. A new
//! segment starts every `SEGMENT_LINES` lines; a segment is removed once every line of it is in
//! the store. At start, whatever segments are left (a crash) are read and recorded before
//! anything else reads the store: a line cut short by the crash was never acknowledged and is
//! dropped. Recording a line twice changes nothing, so a crash between the store's commit and
//! the segment's removal loses nothing and repeats nothing.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::domain::roster::NewEvent;
use crate::domain::{AccountId, DeviceId, Status};
use crate::store::PresenceBatch;

/// Lines per segment file before the next one starts.
const SEGMENT_LINES: u64 = 4096;

/// One line: the batch in plain values (statuses by rank).
#[derive(Serialize, Deserialize)]
struct Line {
    /// `[device, status, at]`
    d: Vec<(String, i64, i64)>,
    /// `[account, best, visible]`
    a: Vec<(i64, i64, i64)>,
    /// `[app, seq, uid, status, at]`
    e: Vec<(String, u64, String, i64, i64)>,
}

impl Line {
    fn of(batch: &PresenceBatch) -> Line {
        Line {
            d: batch
                .devices
                .iter()
                .map(|(id, status, at)| (id.as_str().to_owned(), status.rank(), *at))
                .collect(),
            a: batch.accounts.iter().map(|(id, best, shown)| (id.0, best.rank(), shown.rank())).collect(),
            e: batch
                .events
                .iter()
                .map(|(event, at)| {
                    (event.app_id.to_string(), event.seq, event.uid.to_string(), event.status.rank(), *at)
                })
                .collect(),
        }
    }

    fn batch(self) -> Option<PresenceBatch> {
        let mut devices = Vec::with_capacity(self.d.len());
        for (id, status, at) in self.d {
            devices.push((DeviceId::parse(&id)?, Status::from_rank(status), at));
        }
        let accounts = self
            .a
            .into_iter()
            .map(|(id, best, shown)| (AccountId(id), Status::from_rank(best), Status::from_rank(shown)))
            .collect();
        let events = self
            .e
            .into_iter()
            .map(|(app, seq, uid, status, at)| {
                let event = NewEvent {
                    app_id: Arc::from(app),
                    seq,
                    uid: Arc::from(uid),
                    status: Status::from_rank(status),
                };
                (event, at)
            })
            .collect();
        Some(PresenceBatch { devices, accounts, events })
    }
}

/// Where a line went: its segment.
pub type Segment = u64;

/// The open journal: appends to the newest segment.
pub struct Journal {
    dir: PathBuf,
    file: File,
    segment: Segment,
    lines: u64,
    buffer: Vec<u8>,
}

fn segment_path(dir: &Path, segment: Segment) -> PathBuf {
    dir.join(format!("presence-{segment:020}.journal"))
}

/// The segments in `dir`, oldest first.
fn segments(dir: &Path) -> io::Result<Vec<Segment>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(number) = name.strip_prefix("presence-").and_then(|rest| rest.strip_suffix(".journal")) {
            if let Ok(number) = number.parse() {
                found.push(number);
            }
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// What a previous run left: its batches in order, and the segments they came from (to remove
/// once they are recorded).
pub struct Leftover {
    pub batches: Vec<PresenceBatch>,
    segments: Vec<Segment>,
    dir: PathBuf,
}

impl Leftover {
    /// Reads what the segments in `dir` hold (creating `dir` if needed). A line cut short, or one
    /// that does not read, ends its segment: nothing after it in that segment was acknowledged.
    pub fn read(dir: &Path) -> io::Result<Leftover> {
        fs::create_dir_all(dir)?;
        let segments = segments(dir)?;
        let mut batches = Vec::new();
        for &segment in &segments {
            let reader = io::BufReader::new(File::open(segment_path(dir, segment))?);
            for line in reader.split(b'\n') {
                let line = line?;
                let Some(batch) = serde_json::from_slice::<Line>(&line).ok().and_then(Line::batch) else {
                    tracing::warn!(
                        segment,
                        "journal line cut short or unreadable: the rest of its segment is dropped"
                    );
                    break;
                };
                batches.push(batch);
            }
        }
        Ok(Leftover { batches, segments, dir: dir.to_owned() })
    }

    /// The segments are in the store: removes them.
    pub fn recorded(self) -> io::Result<()> {
        for segment in self.segments {
            fs::remove_file(segment_path(&self.dir, segment))?;
        }
        Ok(())
    }

    /// The first segment number after these.
    fn next(&self) -> Segment {
        self.segments.last().map_or(0, |last| last + 1)
    }
}

impl Journal {
    /// Opens a new segment after what `leftover` held (which must be recorded by now).
    pub fn open(leftover: &Leftover) -> io::Result<Journal> {
        let dir = leftover.dir.clone();
        let segment = leftover.next();
        let file = OpenOptions::new().create(true).append(true).open(segment_path(&dir, segment))?;
        Ok(Journal { dir, file, segment, lines: 0, buffer: Vec::new() })
    }

    /// Appends the batch as one line with one write; returns the segment it went to.
    pub fn append(&mut self, batch: &PresenceBatch) -> io::Result<Segment> {
        if self.lines >= SEGMENT_LINES {
            let next = self.segment + 1;
            self.file = OpenOptions::new().create(true).append(true).open(segment_path(&self.dir, next))?;
            (self.segment, self.lines) = (next, 0);
        }
        self.buffer.clear();
        serde_json::to_writer(&mut self.buffer, &Line::of(batch))?;
        self.buffer.push(b'\n');
        self.file.write_all(&self.buffer)?;
        self.lines += 1;
        Ok(self.segment)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Every line of the segments before `segment` is in the store: removes those files.
pub fn recorded_before(dir: &Path, segment: Segment) -> io::Result<()> {
    for older in segments(dir)?.into_iter().take_while(|older| *older < segment) {
        fs::remove_file(segment_path(dir, older))?;
    }
    Ok(())
}

/// Every line is in the store (the node is stopping, nothing more is appended): removes all.
pub fn recorded_all(dir: &Path) -> io::Result<()> {
    recorded_before(dir, Segment::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(seq: u64) -> PresenceBatch {
        let device = DeviceId::parse("d0123456789abcdef01234567").unwrap();
        let event = NewEvent { app_id: Arc::from("app_1"), seq, uid: Arc::from("u_1"), status: Status::Away };
        PresenceBatch {
            devices: vec![(device, Status::Away, 100 + seq as i64)],
            accounts: vec![(AccountId(7), Status::Away, Status::Away)],
            events: vec![(event, 100 + seq as i64)],
        }
    }

    #[test]
    fn what_was_appended_is_read_back_in_order_and_removed_once_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let empty = Leftover::read(dir.path()).unwrap();
        assert!(empty.batches.is_empty());
        let mut journal = Journal::open(&empty).unwrap();
        for seq in 1..=3 {
            journal.append(&batch(seq)).unwrap();
        }
        drop(journal);
        let leftover = Leftover::read(dir.path()).unwrap();
        assert_eq!(leftover.batches, vec![batch(1), batch(2), batch(3)]);
        let next = Journal::open(&leftover).unwrap();
        assert_eq!(next.segment, 1, "a new run starts a new segment");
        leftover.recorded().unwrap();
        assert!(Leftover::read(dir.path()).unwrap().batches.is_empty());
    }

    #[test]
    fn a_line_cut_short_by_a_crash_is_dropped_with_nothing_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(&Leftover::read(dir.path()).unwrap()).unwrap();
        journal.append(&batch(1)).unwrap();
        journal.append(&batch(2)).unwrap();
        let path = segment_path(dir.path(), 0);
        let mut text = fs::read(&path).unwrap();
        text.truncate(text.len() - 10); // the second line, cut
        fs::write(&path, &text).unwrap();
        assert_eq!(Leftover::read(dir.path()).unwrap().batches, vec![batch(1)]);
    }

    #[test]
    fn full_segments_roll_over_and_recorded_ones_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(&Leftover::read(dir.path()).unwrap()).unwrap();
        let mut last = 0;
        for seq in 0..SEGMENT_LINES + 2 {
            last = journal.append(&batch(seq)).unwrap();
        }
        assert_eq!(last, 1);
        assert_eq!(segments(dir.path()).unwrap(), vec![0, 1]);
        recorded_before(dir.path(), last).unwrap();
        assert_eq!(segments(dir.path()).unwrap(), vec![1]);
        let leftover = Leftover::read(dir.path()).unwrap();
        assert_eq!(leftover.batches.len(), 2);
        recorded_all(dir.path()).unwrap();
        assert!(segments(dir.path()).unwrap().is_empty());
    }
}
