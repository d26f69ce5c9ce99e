//! The one delivery engine. Alerts (`alerting::outbox`) and sinks (`shipping::worker`) are each a [`Source`]
//! of items with durable positions, sent to a [`Destination`] that answers every attempt with the sinks'
//! [`Outcome`]. What delivery means is written once, here:
//!
//! - one thread with a current-thread runtime per destination, so a slow or dead one never holds back
//!   another nor ingestion;
//! - the replay queue first (`<name>.replay.jsonl`: dead letters put back by [`replay`], read through its
//!   own byte cursor), then the source;
//! - an attempt's [`Outcome`]: delivered; retried without limit, after the server's Retry-After (seconds or
//!   an HTTP date, read by `kubetrail_sinks::http`; at most [`MAX_RETRY_AFTER`]) or exponential backoff with
//!   jitter (1 s doubling to [`MAX_BACKOFF`]); or refused for what it is: appended to the dead-letter file
//!   `<name>.dlq.jsonl` (fsynced) before the position moves. Nothing is dropped: at least once;
//! - the counters of every destination in one metrics family per kind ([`Metrics`]), labelled by
//!   destination.
//!
//! A position moves only after its items were delivered or dead-lettered, so a crash (even `kill -9`) sends
//! the items in flight again.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use kubetrail_sinks::Outcome;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// The longest wait between attempts the engine chooses itself.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// The most of a server's Retry-After that is honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);
/// How long an idle worker waits before looking for new items.
pub const IDLE: Duration = Duration::from_millis(100);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// Where items come from: a durable queue (the log through a cursor, a JSON-lines file through a byte offset).
pub trait Source: Send + 'static {
    type Item: Send;
    /// The next items and the position after them, or `None` when nothing waits. An empty list with a
    /// position skips what lies before it (items this destination does not want, unreadable records).
    fn next(&mut self, stop: &AtomicBool) -> anyhow::Result<Option<(Vec<Self::Item>, u64)>>;
    /// Every item before `position` is delivered or dead-lettered: never read again.
    fn commit(&mut self, position: u64) -> anyhow::Result<()>;
    /// Called about every 50 ms while an attempt waits and once per round: status files, disk budgets.
    fn tick(&mut self) {}
    /// Called once when the worker stops.
    fn finish(&mut self) {}
}

/// Where items go: a protocol over a client. It never retries on its own.
pub trait Destination: Send + 'static {
    type Item: Send;
    /// Once before the first attempt, retried with backoff until it succeeds (create tables, templates).
    fn prepare(&mut self) -> impl Future<Output = Result<(), String>> {
        async { Ok(()) }
    }
    /// Once per round after `prepare`: frequent upkeep (the archive's manifests). An error is counted and
    /// logged, and does not stop delivery.
    fn tick(&mut self) -> impl Future<Output = Result<(), String>> {
        async { Ok(()) }
    }
    /// Once when the worker stops.
    fn finish(&mut self) -> impl Future<Output = ()> {
        async {}
    }
    /// One attempt.
    fn send(&self, items: &[&Self::Item]) -> impl Future<Output = Outcome>;
    /// The dead-letter line (one JSON object) of an item refused for `reason`.
    fn dead_letter(&self, item: &Self::Item, reason: &str) -> serde_json::Value;
    /// An item again, from a dead-letter line [`replay`] put in the replay queue; `None` skips the line.
    fn replayed(&self, line: &[u8]) -> Option<Self::Item>;
    /// Items the destination accepted (latency, logs).
    fn delivered(&self, _items: &[&Self::Item]) {}
    /// Items the destination refused for good, with why, once they are dead-lettered.
    fn refused(&self, _items: &[(&Self::Item, String)]) {}
}

/// The counters of one kind of destination (alerts, sinks), one series per destination.
#[derive(Debug, Clone)]
pub struct Metrics {
    names: Names,
    delivered: Family<Vec<(String, String)>, Counter>,
    retried: Family<Vec<(String, String)>, Counter>,
    failed: Family<Vec<(String, String)>, Counter>,
    dead_lettered: Family<Vec<(String, String)>, Counter>,
}

/// The names and help texts of a kind's series (without the registry's `kubetrail_` prefix and the
/// `_total` that counters get).
#[derive(Debug, Clone, Copy)]
pub struct Names {
    pub delivered: (&'static str, &'static str),
    pub retried: (&'static str, &'static str),
    pub failed: (&'static str, &'static str),
    pub dead_lettered: (&'static str, &'static str),
}

impl Metrics {
    /// The families of a kind, to be registered under `names`.
    pub fn new(names: Names) -> Metrics {
        Metrics {
            names,
            delivered: Family::default(),
            retried: Family::default(),
            failed: Family::default(),
            dead_lettered: Family::default(),
        }
    }

    /// Registers the families (clones: they share their values) in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        for ((name, help), family) in [
            (self.names.delivered, &self.delivered),
            (self.names.retried, &self.retried),
            (self.names.failed, &self.failed),
            (self.names.dead_lettered, &self.dead_lettered),
        ] {
            registry.register(name, help, family.clone());
        }
    }

    /// One destination's counters, with these labels (`[("destination", name)]`).
    pub fn stats(&self, labels: &[(&str, &str)]) -> Arc<Stats> {
        let labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Arc::new(Stats {
            delivered: self.delivered.get_or_create(&labels).clone(),
            retried: self.retried.get_or_create(&labels).clone(),
            failed: self.failed.get_or_create(&labels).clone(),
            dead_lettered: self.dead_lettered.get_or_create(&labels).clone(),
            failing: AtomicBool::new(false),
            last_error: Mutex::new(None),
            last_success: Mutex::new(None),
        })
    }
}

/// One destination's progress, shared with `/metrics` and status files.
#[derive(Debug)]
pub struct Stats {
    /// Items delivered.
    pub delivered: Counter,
    /// Items sent again after a retriable failure.
    pub retried: Counter,
    /// Attempts that failed (preparing included).
    pub failed: Counter,
    /// Items refused for good.
    pub dead_lettered: Counter,
    /// Set while the destination cannot take items (an attempt to retry, preparing, reading the queue);
    /// cleared by the next progress (items delivered or dead-lettered).
    failing: AtomicBool,
    last_error: Mutex<Option<String>>,
    last_success: Mutex<Option<String>>,
}

impl Stats {
    /// The last failure's reason, until the next delivery.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().expect("not poisoned").clone()
    }

    /// When items were last delivered (RFC 3339).
    pub fn last_success(&self) -> Option<String> {
        self.last_success.lock().expect("not poisoned").clone()
    }

    /// Whether the destination cannot take items now: an attempt waits to be retried, or it cannot prepare
    /// or read its queue. Cleared by the next progress (items delivered or dead-lettered).
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::SeqCst)
    }

    /// A failed attempt or upkeep: counted, and the reason kept for status.
    fn fail(&self, reason: &str) {
        self.failed.inc();
        *self.last_error.lock().expect("not poisoned") = Some(reason.to_string());
    }

    /// A failure that holds items back.
    fn stuck(&self, reason: &str) {
        self.fail(reason);
        self.failing.store(true, Ordering::SeqCst);
    }

    fn progressed(&self) {
        self.failing.store(false, Ordering::SeqCst);
    }

    fn succeed(&self, n: usize) {
        self.progressed();
        self.delivered.inc_by(n as u64);
        *self.last_success.lock().expect("not poisoned") = Some(jiff::Timestamp::now().to_string());
        *self.last_error.lock().expect("not poisoned") = None;
    }
}

/// A destination's files: `DIR/<name>.dlq.jsonl` and the replay queue `DIR/<name>.replay.jsonl` with its
/// cursor `DIR/<name>.replay.cursor`.
#[derive(Debug, Clone)]
pub struct Files {
    pub dlq: PathBuf,
    pub replay: LinesQueue,
}

impl Files {
    pub fn new(dir: &Path, name: &str) -> Files {
        Files {
            dlq: dir.join(format!("{name}.dlq.jsonl")),
            replay: LinesQueue::new(
                dir.join(format!("{name}.replay.jsonl")),
                dir.join(format!("{name}.replay.cursor")),
            ),
        }
    }
}

/// A JSON-lines file read through a durable byte offset (`alerts.jsonl`, replay queues). Only complete lines
/// are read: a line still being written waits.
#[derive(Debug, Clone)]
pub struct LinesQueue {
    pub file: PathBuf,
    pub cursor: PathBuf,
}

impl LinesQueue {
    pub fn new(file: PathBuf, cursor: PathBuf) -> LinesQueue {
        LinesQueue { file, cursor }
    }

    /// The offset of the next line to read (0 without a cursor file, or with one that is not a number, such
    /// as one a crash left empty: the queue is read again from its start, at least once).
    pub fn position(&self) -> anyhow::Result<u64> {
        match std::fs::read_to_string(&self.cursor) {
            Ok(s) => Ok(s.trim().parse().unwrap_or_else(|_| {
                // Cursors are replaced atomically: this is damage, not a crash. Sending again beats going silent.
                tracing::error!(cursor = %self.cursor.display(), "not a queue cursor: reading the queue again from its start (items may be sent twice)");
                0
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e).with_context(|| format!("failed to read `{}`", self.cursor.display())),
        }
    }

    /// Up to `max` complete lines from the cursor (without their newlines) and the offset after them;
    /// `None` when none is complete.
    pub fn read(&self, max: usize) -> anyhow::Result<Option<(Vec<Vec<u8>>, u64)>> {
        let position = self.position()?;
        let mut f = match File::open(&self.file) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| format!("failed to open `{}`", self.file.display()));
            }
        };
        if f.metadata()?.len() <= position {
            return Ok(None);
        }
        f.seek(SeekFrom::Start(position))?;
        let mut reader = BufReader::new(f);
        let mut lines = Vec::new();
        let mut next = position;
        while lines.len() < max {
            let mut line = Vec::new();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 || !line.ends_with(b"\n") {
                break;
            }
            next += n as u64;
            line.pop();
            lines.push(line);
        }
        Ok((next > position).then_some((lines, next)))
    }

    /// Moves the cursor to `position`, atomically (written aside, synced, renamed over).
    pub fn commit(&self, position: u64) -> anyhow::Result<()> {
        let tmp = self.cursor.with_extension("cursor.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(format!("{position}\n").as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.cursor)
        };
        write().with_context(|| format!("failed to write `{}`", self.cursor.display()))
    }
}

/// Appends `lines` (JSON objects) to `path` and syncs it.
pub fn append_lines(path: &Path, lines: &[serde_json::Value]) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    for l in lines {
        serde_json::to_writer(&mut buf, l)?;
        buf.push(b'\n');
    }
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("failed to open `{}`", path.display()))?;
    f.write_all(&buf)
        .and_then(|()| f.sync_data())
        .with_context(|| format!("failed to write `{}`", path.display()))
}

/// Every dead-letter line in `dir`, with the destination's name (from the file name), in file order.
pub fn dead_letters(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(e) => e
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with(".dlq.jsonl"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("failed to list `{}`", dir.display())),
    };
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let name = f
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .trim_end_matches(".dlq.jsonl")
            .to_string();
        let text = std::fs::read_to_string(&f)
            .with_context(|| format!("failed to read `{}`", f.display()))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            out.push((name.clone(), line.to_string()));
        }
    }
    Ok(out)
}

/// Puts the dead letters of `destination` (every destination's when `None`) in `dir` back in their replay
/// queues, sent before new items; each dead-letter file is kept aside as
/// `<name>.dlq.replayed-<time>.jsonl`. How many were queued.
pub fn replay(dir: &Path, destination: Option<&str>) -> anyhow::Result<usize> {
    let stamp = format!(
        "{}-{}",
        jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ"),
        std::process::id()
    );
    let mut names: Vec<String> = dead_letters(dir)?
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| destination.is_none_or(|want| want == name))
        .collect();
    names.dedup();
    let mut n = 0;
    for name in names {
        let files = Files::new(dir, &name);
        // Set aside first, then queue what was set aside: a dead letter a worker appends meanwhile starts a
        // new file, which the next replay takes.
        let mut aside = dir.join(format!("{name}.dlq.replayed-{stamp}.jsonl"));
        let mut k = 1;
        while aside.exists() {
            aside = dir.join(format!("{name}.dlq.replayed-{stamp}-{k}.jsonl"));
            k += 1;
        }
        std::fs::rename(&files.dlq, &aside)
            .with_context(|| format!("failed to set `{}` aside", files.dlq.display()))?;
        let text = std::fs::read_to_string(&aside)
            .with_context(|| format!("failed to read `{}`", aside.display()))?;
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        if lines.is_empty() {
            continue;
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&files.replay.file)
            .with_context(|| format!("failed to open `{}`", files.replay.file.display()))?;
        f.write_all(format!("{}\n", lines.join("\n")).as_bytes())?;
        f.sync_data()?;
        n += lines.len();
    }
    Ok(n)
}

/// `d` give or take 20%.
pub fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    let factor = 0.8 + f64::from(nanos % 1000) / 1000.0 * 0.4;
    d.mul_f64(factor)
}

/// How long to wait after a failed attempt: the server's Retry-After (capped), else the backoff with jitter.
pub fn wait_after(retry_after: Option<Duration>, backoff: Duration) -> Duration {
    match retry_after {
        Some(a) => a.min(MAX_RETRY_AFTER),
        None => jitter(backoff),
    }
}

/// One destination's delivery: a source, a destination, their files and counters.
#[derive(Debug)]
pub struct Worker<S, D> {
    /// For logs and the thread's name.
    pub name: String,
    pub source: S,
    pub destination: D,
    pub files: Files,
    pub stats: Arc<Stats>,
    /// Replayed dead letters sent per attempt.
    pub replay_batch: usize,
}

enum Sent {
    Done,
    Stopped,
}

impl<I: Send, S: Source<Item = I>, D: Destination<Item = I>> Worker<S, D> {
    /// Runs the worker on its own thread until `stop`.
    pub fn spawn(self, stop: Arc<AtomicBool>) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name(self.name.clone())
            .spawn(move || self.run(&stop))
    }

    fn run(mut self, stop: &AtomicBool) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(destination = %self.name, error = %e, "delivery cannot start");
                return;
            }
        };
        let mut backoff = FIRST_BACKOFF;
        let mut prepared = false;
        while !stop.load(Ordering::SeqCst) {
            self.source.tick();
            if !prepared {
                match rt.block_on(self.destination.prepare()) {
                    Ok(()) => {
                        prepared = true;
                        backoff = FIRST_BACKOFF;
                        tracing::info!(destination = %self.name, "destination ready");
                    }
                    Err(e) => {
                        self.stats.stuck(&format!("cannot prepare: {e}"));
                        tracing::warn!(destination = %self.name, error = %e, "destination not ready; retrying");
                        self.wait(jitter(backoff), stop);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
            if let Err(e) = rt.block_on(self.destination.tick()) {
                self.stats.fail(&e);
                tracing::warn!(destination = %self.name, error = %e, "upkeep failed; retrying");
            }
            match self.round(stop, &rt) {
                Ok(true) => {}
                Ok(false) => std::thread::sleep(IDLE),
                Err(e) => {
                    let e = format!("{e:#}");
                    tracing::error!(destination = %self.name, error = %e, "delivery failed; retrying");
                    self.stats.stuck(&e);
                    self.wait(Duration::from_secs(1), stop);
                }
            }
        }
        rt.block_on(self.destination.finish());
        self.source.finish();
    }

    /// Replayed dead letters first, else the source's next items. Whether there was anything.
    fn round(&mut self, stop: &AtomicBool, rt: &tokio::runtime::Runtime) -> anyhow::Result<bool> {
        if let Some((lines, next)) = self.files.replay.read(self.replay_batch)? {
            let items: Vec<I> = lines
                .iter()
                .filter_map(|l| {
                    let item = self.destination.replayed(l);
                    if item.is_none() {
                        tracing::warn!(destination = %self.name, queue = %self.files.replay.file.display(), "a replayed line that is no dead letter is skipped");
                    }
                    item
                })
                .collect();
            if let Sent::Stopped = self.deliver(&items, stop, rt)? {
                return Ok(false);
            }
            self.files.replay.commit(next)?;
            return Ok(true);
        }
        let Some((items, next)) = self.source.next(stop)? else {
            return Ok(false);
        };
        if let Sent::Stopped = self.deliver(&items, stop, rt)? {
            return Ok(false);
        }
        self.source.commit(next)?;
        Ok(true)
    }

    /// Sends `items` until each is delivered or dead-lettered (or `stop`).
    fn deliver(
        &mut self,
        items: &[I],
        stop: &AtomicBool,
        rt: &tokio::runtime::Runtime,
    ) -> anyhow::Result<Sent> {
        let mut todo: Vec<usize> = (0..items.len()).collect();
        let mut backoff = FIRST_BACKOFF;
        while !todo.is_empty() {
            if stop.load(Ordering::SeqCst) {
                return Ok(Sent::Stopped);
            }
            let batch: Vec<&I> = todo.iter().map(|&i| &items[i]).collect();
            let (retry, after, reason) = match rt.block_on(self.destination.send(&batch)) {
                Outcome::Delivered => {
                    self.accepted(&batch);
                    return Ok(Sent::Done);
                }
                Outcome::Dead { reason } => {
                    let dead: Vec<(&I, String)> =
                        batch.iter().map(|i| (*i, reason.clone())).collect();
                    self.dead_letter(&dead)?;
                    return Ok(Sent::Done);
                }
                Outcome::Partial { retry, dead } => {
                    // Indices are into `batch`; one out of range or repeated (a destination's bug) is ignored,
                    // and an item both dead and to retry is dead.
                    let mut settled = vec![false; batch.len()];
                    let dead: Vec<(&I, String)> = dead
                        .into_iter()
                        .filter(|(i, _)| {
                            *i < batch.len() && !std::mem::replace(&mut settled[*i], true)
                        })
                        .map(|(i, r)| (batch[i], r))
                        .collect();
                    self.dead_letter(&dead)?;
                    let retry: Vec<usize> = retry
                        .into_iter()
                        .filter(|&i| i < batch.len() && !std::mem::replace(&mut settled[i], true))
                        .collect();
                    let accepted: Vec<&I> = batch
                        .iter()
                        .zip(&settled)
                        .filter(|(_, s)| !**s)
                        .map(|(b, _)| *b)
                        .collect();
                    if !accepted.is_empty() {
                        self.accepted(&accepted);
                    }
                    let n = retry.len();
                    let retry: Vec<usize> = retry.into_iter().map(|i| todo[i]).collect();
                    (retry, None, format!("{n} records to send again"))
                }
                Outcome::Retry { after, reason } => (todo.clone(), after, reason),
            };
            if retry.is_empty() {
                return Ok(Sent::Done);
            }
            self.stats.retried.inc_by(retry.len() as u64);
            self.stats.stuck(&reason);
            let wait = wait_after(after, backoff);
            tracing::warn!(destination = %self.name, items = retry.len(), wait_ms = wait.as_millis() as u64, "not delivered ({reason}); retrying");
            self.wait(wait, stop);
            backoff = (backoff * 2).min(MAX_BACKOFF);
            todo = retry;
        }
        Ok(Sent::Done)
    }

    fn accepted(&self, items: &[&I]) {
        self.stats.succeed(items.len());
        self.destination.delivered(items);
    }

    fn dead_letter(&self, dead: &[(&I, String)]) -> anyhow::Result<()> {
        if dead.is_empty() {
            return Ok(());
        }
        let lines: Vec<serde_json::Value> = dead
            .iter()
            .map(|(item, reason)| self.destination.dead_letter(item, reason))
            .collect();
        append_lines(&self.files.dlq, &lines)?;
        self.destination.refused(dead);
        self.stats.dead_lettered.inc_by(dead.len() as u64);
        self.stats.progressed();
        tracing::error!(destination = %self.name, items = dead.len(), reason = %dead[0].1, "refused for good; dead-lettered");
        Ok(())
    }

    /// Waits before the next attempt, ticking the source meanwhile (status files, disk budget).
    fn wait(&mut self, d: Duration, stop: &AtomicBool) {
        let until = Instant::now() + d;
        loop {
            self.source.tick();
            let now = Instant::now();
            if now >= until || stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50).min(until - now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// Items 0..n from memory; positions are indices.
    struct Memory {
        items: Vec<u32>,
        committed: Arc<Mutex<u64>>,
        /// A file that must exist whenever the position moves (the dead letters, written first).
        written_first: Option<PathBuf>,
    }

    impl Source for Memory {
        type Item = u32;

        fn next(&mut self, _stop: &AtomicBool) -> anyhow::Result<Option<(Vec<u32>, u64)>> {
            let from = *self.committed.lock().unwrap() as usize;
            if from >= self.items.len() {
                return Ok(None);
            }
            let to = (from + 3).min(self.items.len());
            Ok(Some((self.items[from..to].to_vec(), to as u64)))
        }

        fn commit(&mut self, position: u64) -> anyhow::Result<()> {
            if let Some(f) = &self.written_first {
                assert!(
                    f.exists(),
                    "the position moved before {} was written",
                    f.display()
                );
            }
            *self.committed.lock().unwrap() = position;
            Ok(())
        }
    }

    /// Answers from a script, then delivers; records what each attempt carried.
    struct Scripted {
        answers: Mutex<VecDeque<Outcome>>,
        attempts: Arc<Mutex<Vec<Vec<u32>>>>,
    }

    impl Destination for Scripted {
        type Item = u32;

        async fn send(&self, items: &[&u32]) -> Outcome {
            self.attempts
                .lock()
                .unwrap()
                .push(items.iter().map(|i| **i).collect());
            self.answers
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Outcome::Delivered)
        }

        fn dead_letter(&self, item: &u32, reason: &str) -> serde_json::Value {
            serde_json::json!({"item": item, "reason": reason})
        }

        fn replayed(&self, line: &[u8]) -> Option<u32> {
            let v: serde_json::Value = serde_json::from_slice(line).ok()?;
            v["item"].as_u64().map(|i| i as u32)
        }
    }

    struct Run {
        committed: Arc<Mutex<u64>>,
        attempts: Arc<Mutex<Vec<Vec<u32>>>>,
        stats: Arc<Stats>,
        files: Files,
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    fn start(dir: &Path, n: u32, answers: Vec<Outcome>) -> Run {
        start_checked(dir, n, answers, false)
    }

    fn start_checked(dir: &Path, n: u32, answers: Vec<Outcome>, dead_first: bool) -> Run {
        let committed = Arc::new(Mutex::new(0));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let names = Names {
            delivered: ("d", "d"),
            retried: ("r", "r"),
            failed: ("f", "f"),
            dead_lettered: ("x", "x"),
        };
        let stats = Metrics::new(names).stats(&[("destination", "t")]);
        let files = Files::new(dir, "t");
        let stop = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            name: "t".into(),
            source: Memory {
                items: (0..n).collect(),
                committed: committed.clone(),
                written_first: dead_first.then(|| files.dlq.clone()),
            },
            destination: Scripted {
                answers: Mutex::new(answers.into()),
                attempts: attempts.clone(),
            },
            files: files.clone(),
            stats: stats.clone(),
            replay_batch: 10,
        };
        let thread = Some(worker.spawn(stop.clone()).unwrap());
        Run {
            committed,
            attempts,
            stats,
            files,
            stop,
            thread,
        }
    }

    impl Run {
        /// Waits (bounded) until `done` holds.
        fn until(&self, what: &str, done: impl Fn(&Run) -> bool) {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !done(self) {
                assert!(Instant::now() < deadline, "timed out waiting for {what}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        fn stop(mut self) -> Run {
            self.stop.store(true, Ordering::SeqCst);
            self.thread.take().unwrap().join().unwrap();
            self
        }
    }

    #[test]
    fn retries_until_delivered_and_only_then_moves_on() {
        let dir = tempfile::tempdir().unwrap();
        let run = start(
            dir.path(),
            3,
            vec![Outcome::retry("down"), Outcome::retry("still down")],
        );
        run.until("delivery", |r| *r.committed.lock().unwrap() == 3);
        let run = run.stop();
        assert_eq!(*run.attempts.lock().unwrap(), vec![vec![0, 1, 2]; 3]);
        assert_eq!(run.stats.delivered.get(), 3);
        assert_eq!(run.stats.retried.get(), 6);
        assert_eq!(run.stats.failed.get(), 2);
        assert_eq!(run.stats.last_error(), None, "cleared by the delivery");
        assert!(!run.files.dlq.exists());
    }

    #[test]
    fn partial_answers_dead_letter_some_resend_others_and_replay_brings_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let run = start(
            dir.path(),
            3,
            vec![Outcome::Partial {
                retry: vec![2],
                dead: vec![(0, "mapping".into())],
            }],
        );
        run.until("delivery", |r| *r.committed.lock().unwrap() == 3);
        let run = run.stop();
        // Item 1 went through, 2 was sent again alone, 0 is a dead letter.
        assert_eq!(*run.attempts.lock().unwrap(), vec![vec![0, 1, 2], vec![2]]);
        assert_eq!(run.stats.delivered.get(), 2);
        assert_eq!(run.stats.dead_lettered.get(), 1);
        let letters = dead_letters(dir.path()).unwrap();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].0, "t");
        assert!(letters[0].1.contains("\"mapping\""), "{letters:?}");

        assert_eq!(replay(dir.path(), Some("other")).unwrap(), 0);
        assert_eq!(replay(dir.path(), None).unwrap(), 1);
        assert!(dead_letters(dir.path()).unwrap().is_empty(), "set aside");
        let again = start(dir.path(), 3, Vec::new());
        *again.committed.lock().unwrap() = 3;
        again.until("the replayed item", |r| {
            r.files.replay.position().unwrap() > 0 && r.stats.delivered.get() == 1
        });
        let again = again.stop();
        assert_eq!(*again.attempts.lock().unwrap(), vec![vec![0]]);
    }

    #[test]
    fn a_refused_batch_is_dead_lettered_before_the_position_moves() {
        let dir = tempfile::tempdir().unwrap();
        let run = start_checked(
            dir.path(),
            2,
            vec![Outcome::Dead {
                reason: "HTTP 400".into(),
            }],
            true,
        );
        run.until("the position", |r| *r.committed.lock().unwrap() == 2);
        let run = run.stop();
        assert_eq!(run.stats.dead_lettered.get(), 2);
        assert_eq!(dead_letters(dir.path()).unwrap().len(), 2);
    }

    #[test]
    fn stopping_mid_retry_keeps_the_items_for_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let run = start(
            dir.path(),
            2,
            vec![Outcome::Retry {
                after: Some(Duration::from_secs(3600)),
                reason: "503".into(),
            }],
        );
        run.until("the first attempt", |r| r.stats.failed.get() == 1);
        let run = run.stop();
        assert_eq!(*run.committed.lock().unwrap(), 0, "nothing acknowledged");
        assert_eq!(run.stats.last_error().as_deref(), Some("503"));
    }

    #[test]
    fn waits_follow_retry_after_up_to_the_cap_else_backoff_with_jitter() {
        assert_eq!(
            wait_after(Some(Duration::from_secs(7)), FIRST_BACKOFF),
            Duration::from_secs(7)
        );
        assert_eq!(
            wait_after(Some(Duration::from_secs(86_400)), FIRST_BACKOFF),
            MAX_RETRY_AFTER
        );
        let w = wait_after(None, Duration::from_secs(10));
        assert!(
            w >= Duration::from_secs(8) && w <= Duration::from_secs(12),
            "{w:?}"
        );
    }

    #[test]
    fn a_queue_reads_complete_lines_only() {
        let dir = tempfile::tempdir().unwrap();
        let q = LinesQueue::new(dir.path().join("q.jsonl"), dir.path().join("q.cursor"));
        assert!(q.read(10).unwrap().is_none(), "no file yet");
        std::fs::write(&q.file, "{\"a\":1}\n{\"b\":2}\n{\"c\"").unwrap();
        let (lines, next) = q.read(10).unwrap().unwrap();
        assert_eq!(lines, vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]);
        q.commit(next).unwrap();
        assert!(q.read(10).unwrap().is_none(), "the torn line waits");
        std::fs::write(&q.file, "{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n").unwrap();
        assert_eq!(q.read(10).unwrap().unwrap().0, vec![b"{\"c\":3}".to_vec()]);
        // A cursor a crash left empty reads the queue again rather than stalling it.
        std::fs::write(&q.cursor, "").unwrap();
        assert_eq!(q.position().unwrap(), 0);
        assert_eq!(q.read(10).unwrap().unwrap().0.len(), 3);
    }

    #[test]
    fn a_partial_answer_that_names_an_item_twice_or_both_ways_settles_it_once_and_dead_wins() {
        let dir = tempfile::tempdir().unwrap();
        let run = start(
            dir.path(),
            3,
            vec![Outcome::Partial {
                retry: vec![1, 1, 2, 9],
                dead: vec![(2, "bad".into()), (2, "bad".into()), (7, "nonsense".into())],
            }],
        );
        run.until("delivery", |r| *r.committed.lock().unwrap() == 3);
        let run = run.stop();
        assert_eq!(*run.attempts.lock().unwrap(), vec![vec![0, 1, 2], vec![1]]);
        assert_eq!(run.stats.dead_lettered.get(), 1);
        assert_eq!(run.stats.delivered.get(), 2);
    }
}
