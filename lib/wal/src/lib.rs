//! A write-ahead log of opaque records in a directory of segment files, written
//! once for the collector's spool and the agent's WAL.
//!
//! - Appends go through one writer thread that commits them in groups: every
//!   append waiting when a write starts shares its fsync, so a busy log syncs
//!   once per group, not once per request. [`Wal::append`] returns only after
//!   its record is written (and synced, with [`Fsync::Always`]).
//! - The log is bounded: past `max_bytes` of unconsumed records, appends are
//!   refused with [`AppendError::Full`] and the caller pushes back on its sender.
//!   The bound holds for memory too: an append reserves its bytes before it is
//!   queued for the writer, so records waiting in the queue count against
//!   `max_bytes` and a full log refuses at once instead of queueing more.
//! - The number of segment files is bounded (`max_segments`, sealed ones not yet
//!   removed plus the open one): past it, an append that would need a new file
//!   is refused with [`AppendError::TooManySegments`]. So whatever queue the
//!   consumer keeps its sealed segments in holds at most `max_segments` of them.
//! - The open segment is sealed when it reaches `segment_bytes`, when it is
//!   `seal_after` old, or when asked ([`Wal::seal`]); sealed segments are handed to the consumer in order, which
//!   removes each one ([`Wal::remove`]) once what it holds is safe elsewhere.
//! - On open, every segment left by an earlier run (a crash included) is handed
//!   to the consumer first, so nothing appended and acknowledged is lost.
//! - One process at a time: the directory is locked.

pub mod segment;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

pub use segment::{Contents, Damage, Segment};

/// When appended records are synced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Before an append returns: an acknowledged record survives power loss.
    Always,
    /// At most this long after an append returns: a crash of the machine (not
    /// of the process) can lose the records of the last interval.
    Every(Duration),
}

/// How a log behaves.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Bound on unconsumed bytes (records, their framing and the segments' headers),
    /// those queued for the writer included.
    pub max_bytes: u64,
    /// The open segment is sealed once it is this large.
    pub segment_bytes: u64,
    /// The sync policy.
    pub fsync: Fsync,
    /// The open segment is sealed once it is this old (and holds anything), so
    /// the consumer sees new data within this delay even while it is busy.
    pub seal_after: Option<Duration>,
    /// Bound on segment files (sealed and not yet removed, plus the open one):
    /// it bounds the consumer's queue of sealed segments. See [`DEFAULT_MAX_SEGMENTS`].
    pub max_segments: u64,
}

/// A default for [`WalOptions::max_segments`]. Segments are sealed at least every
/// `seal_after` (a second in the binaries) while data arrives, so during a long
/// outage of the consumer's destination the count grows with time, not bytes:
/// 65,536 is 18 hours of one-second segments, and the consumer's handles on them
/// (a path and two integers each, ~100 bytes) stay under 7 MB.
pub const DEFAULT_MAX_SEGMENTS: u64 = 1 << 16;

/// Why a log could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A file operation failed.
    #[error("WAL directory {dir}: {action}: {source}")]
    Io {
        /// The directory.
        dir: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// Another process holds the directory.
    #[error("WAL directory {0} is in use by another process (its lock file is held)")]
    Locked(PathBuf),
}

/// Why an append was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The log holds `max_bytes` already; retry once the consumer caught up.
    #[error("the WAL is full ({pending} of {max} bytes waiting to be delivered)")]
    Full {
        /// Bytes waiting.
        pending: u64,
        /// The bound.
        max: u64,
    },
    /// The log holds `max_segments` segment files and this append would need another;
    /// retry once the consumer caught up.
    #[error("the WAL is full ({segments} of {max} segment files waiting to be delivered)")]
    TooManySegments {
        /// Segment files on disk.
        segments: u64,
        /// The bound.
        max: u64,
    },
    /// Writing failed (disk full, I/O error): the record was not kept.
    #[error("writing the WAL failed: {0}")]
    Io(String),
    /// The payload is larger than a record may be.
    #[error("a record of {0} bytes is over the WAL's limit of {max} bytes", max = segment::MAX_RECORD)]
    TooLarge(usize),
    /// The writer has stopped (the process is shutting down).
    #[error("the WAL is closed")]
    Closed,
}

impl AppendError {
    /// The log is full (of bytes or of segments): the caller should push back and retry later.
    pub fn is_full(&self) -> bool {
        matches!(self, Self::Full { .. } | Self::TooManySegments { .. })
    }
}

enum Command {
    /// A framed size already reserved in `Shared::queued`, the payload, and where to answer.
    Append(u64, Vec<u8>, oneshot::Sender<Result<(), AppendError>>),
    Seal(oneshot::Sender<()>),
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    max_bytes: u64,
    max_segments: u64,
    /// Unconsumed bytes: sealed segments not yet removed, plus the open one.
    pending: AtomicU64,
    /// Framed bytes of appends queued for the writer and not yet written: they are
    /// reserved before queueing, so `pending + queued` never passes `max_bytes`.
    queued: AtomicU64,
    /// Appends refused because the log was full (bytes or segments).
    refused: AtomicU64,
    /// Segments on disk, the open one included.
    segments: AtomicU64,
}

/// A handle on a log; clones share it.
#[derive(Debug, Clone)]
pub struct Wal {
    commands: std_mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

impl Wal {
    /// Opens (creating if needed) the log in `dir`. Every sealed segment is
    /// handed to `on_sealed`, starting with those an earlier run left; it runs on
    /// the writer thread before [`Wal::seal`] returns, so it must be quick.
    pub fn open(
        dir: &Path,
        options: WalOptions,
        on_sealed: impl Fn(Segment) + Send + 'static,
    ) -> Result<Self, WalError> {
        let io = |action: &'static str| move |source| WalError::Io { dir: dir.to_owned(), action, source };
        std::fs::create_dir_all(dir).map_err(io("creating it"))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .map_err(io("opening its lock file"))?;
        if lock.try_lock().is_err() {
            return Err(WalError::Locked(dir.to_owned()));
        }
        let mut found: Vec<Segment> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io("listing it"))? {
            let entry = entry.map_err(io("listing it"))?;
            let Some(id) = entry.file_name().to_str().and_then(segment::parse_name) else { continue };
            let bytes = entry.metadata().map_err(io("reading a segment's size"))?.len();
            found.push(Segment { id, path: entry.path(), bytes });
        }
        found.sort_by_key(|s| s.id);
        let next_id = found.last().map_or(1, |s| s.id + 1);
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            max_bytes: options.max_bytes,
            max_segments: options.max_segments,
            pending: AtomicU64::new(found.iter().map(|s| s.bytes).sum()),
            queued: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            segments: AtomicU64::new(found.len() as u64),
        });
        // The handover of what an earlier run left happens on the writer thread, first of
        // all: `on_sealed` may wait there for its consumer (a bounded queue) without blocking
        // the caller, which may be an async runtime's thread starting that very consumer.
        // Unbounded, but what it holds is bounded: each command's payload bytes are reserved
        // against `max_bytes` before it is sent (see `append`), and seal commands come one per
        // waiting `seal` call.
        let (commands, rx) = std_mpsc::channel();
        let writer = Writer {
            shared: shared.clone(),
            options,
            next_id,
            open: None,
            on_sealed: Box::new(on_sealed),
            _lock: lock,
            unsynced: None,
        };
        std::thread::Builder::new()
            .name("tally-wal-writer".into())
            .spawn(move || {
                for s in found {
                    (writer.on_sealed)(s);
                }
                writer.run(rx)
            })
            .map_err(io("starting its writer thread"))?;
        Ok(Self { commands, shared })
    }

    /// Appends a record; returns once it is written per the sync policy.
    pub async fn append(&self, payload: Vec<u8>) -> Result<(), AppendError> {
        if payload.len() > segment::MAX_RECORD as usize {
            return Err(AppendError::TooLarge(payload.len()));
        }
        let size = segment::RECORD_HEADER + payload.len() as u64;
        self.reserve(size)?;
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Append(size, payload, tx)).is_err() {
            self.shared.queued.fetch_sub(size, Ordering::Relaxed);
            return Err(AppendError::Closed);
        }
        rx.await.unwrap_or(Err(AppendError::Closed))
    }

    /// Reserves `size` framed bytes for an append about to be queued, or refuses
    /// with [`AppendError::Full`] if the log (written and queued) cannot take them.
    fn reserve(&self, size: u64) -> Result<(), AppendError> {
        let s = &self.shared;
        let mut queued = s.queued.load(Ordering::Relaxed);
        loop {
            let waiting = s.pending.load(Ordering::Relaxed) + queued;
            if waiting + size > s.max_bytes {
                s.refused.fetch_add(1, Ordering::Relaxed);
                return Err(AppendError::Full { pending: waiting, max: s.max_bytes });
            }
            match s.queued.compare_exchange_weak(queued, queued + size, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(now) => queued = now,
            }
        }
    }

    /// Seals the open segment, if it holds anything; returns once it was handed over.
    pub async fn seal(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Seal(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Deletes a consumed segment.
    pub fn remove(&self, segment: &Segment) -> std::io::Result<()> {
        std::fs::remove_file(&segment.path)?;
        self.shared.pending.fetch_sub(segment.bytes, Ordering::Relaxed);
        self.shared.segments.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }

    /// Bytes appended and not yet consumed.
    pub fn pending_bytes(&self) -> u64 {
        self.shared.pending.load(Ordering::Relaxed)
    }

    /// Segments on disk, the open one included.
    pub fn segments(&self) -> u64 {
        self.shared.segments.load(Ordering::Relaxed)
    }

    /// Bytes of appends queued for the writer and not yet written (they count in the bound).
    pub fn queued_bytes(&self) -> u64 {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// Appends refused since the log was opened because it was full (of bytes or segments).
    pub fn refused_full(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }
}

struct Open {
    file: File,
    id: u64,
    bytes: u64,
    opened: Instant,
}

struct Writer {
    shared: Arc<Shared>,
    options: WalOptions,
    next_id: u64,
    open: Option<Open>,
    on_sealed: Box<dyn Fn(Segment) + Send>,
    _lock: File,
    /// Since when written records wait for a sync (with `Fsync::Every`).
    unsynced: Option<Instant>,
}

/// Most appends committed by one write and sync.
const GROUP: usize = 1024;

impl Writer {
    fn run(mut self, commands: std_mpsc::Receiver<Command>) {
        loop {
            let first = match self.deadline() {
                None => commands.recv().map_err(|_| std_mpsc::RecvTimeoutError::Disconnected),
                Some(deadline) => commands.recv_timeout(deadline.saturating_duration_since(Instant::now())),
            };
            let first = match first {
                Ok(c) => c,
                Err(std_mpsc::RecvTimeoutError::Timeout) => {
                    self.on_time();
                    continue;
                }
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut group = vec![first];
            while group.len() < GROUP {
                match commands.try_recv() {
                    Ok(c) => group.push(c),
                    Err(_) => break,
                }
            }
            self.commit(group);
        }
        self.sync_now();
    }

    /// The next time something is due: a periodic sync, or sealing an old segment.
    fn deadline(&self) -> Option<Instant> {
        let sync = match (self.options.fsync, self.unsynced) {
            (Fsync::Every(every), Some(since)) => Some(since + every),
            _ => None,
        };
        let seal = self.options.seal_after.zip(self.open.as_ref()).map(|(after, o)| o.opened + after);
        sync.into_iter().chain(seal).min()
    }

    fn on_time(&mut self) {
        let now = Instant::now();
        if let (Fsync::Every(every), Some(since)) = (self.options.fsync, self.unsynced) {
            if since + every <= now {
                self.sync_now();
            }
        }
        if self.options.seal_after.zip(self.open.as_ref()).is_some_and(|(after, o)| o.opened + after <= now) {
            self.seal();
        }
    }

    /// Writes a group of appends with one write and one sync, then answers them.
    fn commit(&mut self, group: Vec<Command>) {
        let mut buf = Vec::new();
        let mut waiting = Vec::new();
        let mut seals = Vec::new();
        let mut reserved = 0;
        // A new file is needed (and may be refused) only when no segment is open.
        let segments = self.shared.segments.load(Ordering::Relaxed);
        let no_room = self.open.is_none() && segments >= self.shared.max_segments;
        for command in group {
            match command {
                Command::Append(size, payload, reply) => {
                    reserved += size;
                    if no_room {
                        self.shared.refused.fetch_add(1, Ordering::Relaxed);
                        let max = self.shared.max_segments;
                        let _ = reply.send(Err(AppendError::TooManySegments { segments, max }));
                        continue;
                    }
                    // The reservation could not know whether this append opens a segment (and
                    // pays its header): checked again here, with the header.
                    let header = if self.open.is_none() { segment::MAGIC.len() as u64 } else { 0 };
                    let pending = self.shared.pending.load(Ordering::Relaxed) + header + buf.len() as u64;
                    if pending + size > self.shared.max_bytes {
                        self.shared.refused.fetch_add(1, Ordering::Relaxed);
                        let _ = reply.send(Err(AppendError::Full { pending, max: self.shared.max_bytes }));
                        continue;
                    }
                    segment::frame(&payload, &mut buf);
                    waiting.push(reply);
                }
                Command::Seal(reply) => seals.push(reply),
            }
        }
        let result = if buf.is_empty() { Ok(()) } else { self.write(&buf) };
        // Written bytes moved to `pending` first: the sum may over-count for a moment, never under-count.
        self.shared.queued.fetch_sub(reserved, Ordering::Relaxed);
        let full = self.open.as_ref().is_some_and(|o| o.bytes >= self.options.segment_bytes);
        if full || !seals.is_empty() {
            self.seal();
        }
        for reply in waiting {
            let _ = reply.send(result.clone());
        }
        for reply in seals {
            let _ = reply.send(());
        }
    }

    fn write(&mut self, buf: &[u8]) -> Result<(), AppendError> {
        let fail = |e: std::io::Error| AppendError::Io(e.to_string());
        if self.open.is_none() {
            self.open = Some(self.create().map_err(fail)?);
        }
        let open = self.open.as_mut().expect("just opened");
        if let Err(e) = open.file.write_all(buf) {
            // Part of the group may be on disk; the segment is sealed as it is and
            // the reader drops the cut-short record, which nobody was told was kept.
            self.seal();
            return Err(fail(e));
        }
        open.bytes += buf.len() as u64;
        self.shared.pending.fetch_add(buf.len() as u64, Ordering::Relaxed);
        match self.options.fsync {
            Fsync::Always => {
                if let Err(e) = open.file.sync_data() {
                    self.seal();
                    return Err(fail(e));
                }
            }
            Fsync::Every(_) => {
                self.unsynced.get_or_insert_with(Instant::now);
            }
        }
        Ok(())
    }

    fn create(&mut self) -> std::io::Result<Open> {
        let id = self.next_id;
        let path = self.shared.dir.join(segment::file_name(id));
        let mut file = OpenOptions::new().create_new(true).write(true).open(&path)?;
        file.write_all(segment::MAGIC)?;
        file.sync_data()?;
        // The new name must survive a power loss too.
        File::open(&self.shared.dir)?.sync_all()?;
        self.next_id += 1;
        self.shared.pending.fetch_add(segment::MAGIC.len() as u64, Ordering::Relaxed);
        self.shared.segments.fetch_add(1, Ordering::Relaxed);
        Ok(Open { file, id, bytes: segment::MAGIC.len() as u64, opened: Instant::now() })
    }

    fn sync_now(&mut self) {
        if let (Some(open), Some(_)) = (&self.open, self.unsynced.take()) {
            if let Err(e) = open.file.sync_data() {
                tracing::error!(error = %e, dir = %self.shared.dir.display(), "syncing the WAL failed");
            }
        }
    }

    fn seal(&mut self) {
        self.sync_now();
        if let Some(open) = self.open.take() {
            let path = self.shared.dir.join(segment::file_name(open.id));
            (self.on_sealed)(Segment { id: open.id, path, bytes: open.bytes });
        }
    }
}

#[cfg(test)]
mod tests;
