//! Each API query in a worker process of its own: `kubetrail __query-worker`, the collector's own binary
//! (`/proc/self/exe`, so an upgrade on disk never mixes versions).
//!
//! Why a process: limits inside one process hold only where the query yields or allocates through
//! DataFusion's pool. A single long computation (a function folded while planning, a regex over a huge
//! value) ignores a tokio timeout, and an operator that copies large values the pool never sees (a cross
//! join of wide rows) can exhaust memory, where an allocation failure aborts the whole process, webhook
//! included. A process can be killed at any instruction and its memory bounded by the kernel:
//!
//! - **Time.** The collector kills the worker at the time limit (504) or when the client hangs up; the
//!   query's slot is free once the worker is reaped, not before.
//! - **Memory.** The worker sets `RLIMIT_DATA` (heap, anonymous mappings, thread stacks) to the order's
//!   `memory` plus its threads' stacks and a base before it reads the store (the engine's pool gets half of
//!   `memory`); past it an allocation fails, the worker aborts, and the answer is
//!   422 naming the limit. Its OOM score is raised to the maximum, so under memory pressure the kernel
//!   kills a query before the collector.
//! - **Lifetime.** The worker asks for `SIGKILL` when its parent thread ends (`PR_SET_PDEATHSIG`; workers are
//!   started from the query runtime's worker threads, which live as long as the collector's listener) and
//!   does nothing for a parent other than the one its order names. It gets no environment but `TMPDIR`
//!   and reads the store only. It spills to a directory of its own under `DATA/spill` (at most 2 GiB, and at
//!   most a quarter of the disk's free space), removed once it is reaped; it never dumps core.
//!
//! The order goes in as JSON on stdin; the answer comes back on stdout as frames `[tag][u32 LE length]
//! [payload]`: `D` a chunk of the answer, then `K` (done) or `E` (a JSON [`WireError`]). A worker that ends
//! without `K` or `E` died: killed by its memory limit or a signal.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::DirBuilderExt as _;
use std::process::{ExitCode, Stdio};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::job::{Order, Out, WireError};
use super::*;

/// The argument that makes `kubetrail` a query worker (hidden: it reads an order on stdin).
pub const WORKER_ARG: &str = "__query-worker";

/// The data a worker may map unless configured (`query.memory_mb`), beside its thread stacks.
pub const DEFAULT_WORKER_MEMORY: u64 = 4 << 30;

/// The worker's threads: its runtime's workers and blocking threads, each with a query stack.
const WORKER_THREADS: usize = 2;
const WORKER_BLOCKING_THREADS: usize = 2;
/// What the worker maps beside the memory it is given and its threads' stacks (the binary's writable data,
/// the allocator's and the runtime's own).
const WORKER_BASE_BYTES: u64 = 256 << 20;
/// The largest frame: the worker cuts its answer into pieces of at most this, so the collector never holds
/// more than a few of them for a client that does not read.
const MAX_FRAME: usize = 64 << 10;
/// The data directory's directory of the workers' spill directories (`spill/query-N`), each removed when its
/// worker has ended.
pub(super) const SPILL_DIR: &str = "spill";
/// The most a worker's query may spill; never more than a quarter of the disk's free space (two queries at
/// once leave the write-ahead log at least half of it: a reader cannot fill the disk and blind the webhook).
const WORKER_SPILL_BYTES: u64 = 2 << 30;
/// The largest order (a `where` compiled to SQL, at most a few MiB).
const MAX_ORDER: u64 = 16 << 20;
/// How much of a worker's standard error is kept for the log.
const STDERR_KEPT: usize = 4096;

/// The `RLIMIT_DATA` a worker given `memory` sets: that, its threads' stacks and a base.
fn data_limit(memory: u64) -> u64 {
    let stacks =
        (WORKER_THREADS + WORKER_BLOCKING_THREADS) as u64 * limits::QUERY_STACK_BYTES as u64;
    memory + stacks + WORKER_BASE_BYTES
}

/// Runs `order` in a worker process started from `exe`, sending its answer to `out`. `slot` is held until
/// the worker has been reaped, however this future ends (done, timed out, dropped when the client hung up).
pub(super) async fn run(
    exe: PathBuf,
    order: Order,
    out: Out,
    slot: tokio::sync::OwnedSemaphorePermit,
    runtime: tokio::runtime::Handle,
) -> Result<(), ApiError> {
    let memory = order.memory;
    let internal = |what: &str, e: &dyn std::fmt::Display| {
        tracing::error!(exe = %exe.display(), error = %e, "{what}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, what.to_string())
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&order.spill)
        .map_err(|e| internal("could not make a query's spill directory", &e))?;
    let mut command = tokio::process::Command::new(&exe);
    command
        .arg0("kubetrail")
        .arg(WORKER_ARG)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Should the reaping task below never run (the runtime shutting down), the worker dies anyway.
        .kill_on_drop(true);
    let spawned = command.spawn();
    let mut worker = Reaped {
        child: None,
        slot: Some(slot),
        spill: Some(order.spill.clone()),
        runtime,
    };
    let mut child = spawned.map_err(|e| internal("could not start a query worker", &e))?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(internal("a query worker has no pipes", &"stdio"));
    };
    worker.child = Some(child);
    let stderr = tokio::spawn(head(stderr));
    // A worker that dies before reading its order closes stdin: what it says is read below.
    let _ = stdin.write_all(&job::to_json(&order)).await;
    drop(stdin);
    if let Some(result) = frames(stdout, &out).await {
        // Done: the worker exits now; its slot is free once it has (not later, in the background).
        worker.end().await;
        return result;
    }
    // No last frame: the worker died, or broke the protocol.
    worker.kill();
    let status = worker.wait().await;
    let said = stderr.await.unwrap_or_default();
    worker.end().await;
    Err(died(status, &said, memory))
}

/// The answer to a worker that ended without a last frame.
fn died(status: Option<std::process::ExitStatus>, said: &str, memory: u64) -> ApiError {
    use std::os::unix::process::ExitStatusExt as _;
    if said.contains("memory allocation of") {
        return ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "the query needed more than the {} MiB of memory a query may use: narrow it with \
                 since/until or a filter",
                memory >> 20
            ),
        );
    }
    if let Some(9) = status.and_then(|s| s.signal()) {
        // Not the collector's kill (it never reads the status of a worker it killed): the kernel's, out of
        // memory (a container's limit below the query's).
        return ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the query's worker process was killed, most likely for want of memory: narrow the query with \
             since/until or a filter, or lower query.memory_mb below the memory the collector may use",
        );
    }
    let how = match status {
        Some(s) => match s.signal() {
            Some(sig) => format!("signal {sig}"),
            None => format!("exit status {}", s.code().unwrap_or(-1)),
        },
        None => "an unknown status".into(),
    };
    tracing::error!(status = %how, stderr = %said, "a query worker died");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("the query's worker process ended abnormally ({how})"),
    )
}

/// Forwards the worker's `D` frames to `out` until its last frame: its result, or `None` when the worker
/// ended without one.
async fn frames(stdout: tokio::process::ChildStdout, out: &Out) -> Option<Result<(), ApiError>> {
    let mut r = tokio::io::BufReader::with_capacity(64 << 10, stdout);
    loop {
        let mut head = [0u8; 5];
        r.read_exact(&mut head).await.ok()?;
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > MAX_FRAME {
            tracing::error!(len, "a query worker sent an oversized frame");
            return None;
        }
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload).await.ok()?;
        match head[0] {
            b'D' => {
                if out.send(payload.into()).await.is_err() {
                    // Nobody reads the answer any more: the caller ends (and kills) the worker.
                    return Some(Ok(()));
                }
            }
            b'K' => return Some(Ok(())),
            b'E' => {
                let e = serde_json::from_slice::<WireError>(&payload)
                    .map(ApiError::from)
                    .unwrap_or_else(|_| {
                        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
                    });
                if e.status.is_server_error() {
                    tracing::error!(status = %e.status, error = %e.body["error"], "query failed");
                }
                return Some(Err(e));
            }
            tag => {
                tracing::error!(tag, "a query worker sent an unknown frame");
                return None;
            }
        }
    }
}

/// The first [`STDERR_KEPT`] bytes of what the worker writes to standard error (the rest is read and
/// dropped, so the worker never blocks on it).
async fn head(mut stderr: tokio::process::ChildStderr) -> String {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stderr.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = STDERR_KEPT.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// A worker, its query's slot and its spill directory: dropped, the worker is killed, and once it is reaped
/// its spill directory is removed and the slot is free.
struct Reaped {
    child: Option<tokio::process::Child>,
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
    spill: Option<PathBuf>,
    runtime: tokio::runtime::Handle,
}

impl Reaped {
    fn kill(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
    }

    /// The worker's exit status, once it has exited.
    async fn wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.wait().await.ok()
    }

    /// Waits for the worker to exit, removes its spill directory and frees the slot.
    async fn end(mut self) {
        let _ = self.wait().await;
        self.child = None;
        if let Some(dir) = self.spill.take() {
            let _ = tokio::fs::remove_dir_all(dir).await;
        }
        self.slot = None;
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let (child, spill, slot) = (self.child.take(), self.spill.take(), self.slot.take());
        if child.is_none() && spill.is_none() {
            return;
        }
        self.runtime.spawn(async move {
            if let Some(mut child) = child {
                // Exited already: killing a process not yet reaped is harmless (its pid is not reused
                // before).
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
            if let Some(dir) = spill {
                let _ = tokio::fs::remove_dir_all(dir).await;
            }
            drop(slot);
        });
    }
}

/// The worker process: reads its order, bounds itself, runs the job and writes the answer as frames. Called
/// by `kubetrail`'s `main` when its first argument is [`WORKER_ARG`].
pub fn main() -> ExitCode {
    // Die with the thread that started us; then make sure that one is still there.
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().take(MAX_ORDER).read_to_end(&mut input) {
        eprintln!("kubetrail query worker: reading the order: {e}");
        return ExitCode::from(2);
    }
    let order: Order = match serde_json::from_slice(&input) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("kubetrail query worker: the order is not valid: {e}");
            return ExitCode::from(2);
        }
    };
    let parent = rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u32);
    if parent != Some(order.parent) {
        eprintln!("kubetrail query worker: started by another process than the order's");
        return ExitCode::from(2);
    }
    let limit = data_limit(order.memory);
    if let Err(e) = rustix::process::setrlimit(
        rustix::process::Resource::Data,
        rustix::process::Rlimit {
            current: Some(limit),
            maximum: Some(limit),
        },
    ) {
        eprintln!("kubetrail query worker: cannot limit its memory: {e}");
        return ExitCode::from(2);
    }
    // The first process the kernel kills when memory runs out. Best effort: a kernel without procfs has no
    // OOM scores to compare either.
    let _ = std::fs::write("/proc/self/oom_score_adj", "1000");
    // Its memory holds audit events: it never leaves in a core dump (one at its memory limit was 900 MB of
    // them, outside the data directory and its retention), and no other process of the user may read it.
    let no_core = rustix::process::Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    if let Err(e) =
        rustix::process::setrlimit(rustix::process::Resource::Core, no_core).and_then(|()| {
            rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        })
    {
        eprintln!("kubetrail query worker: cannot forbid core dumps: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .max_blocking_threads(WORKER_BLOCKING_THREADS)
        .thread_stack_size(limits::QUERY_STACK_BYTES)
        .thread_name("kubetrail-query-worker")
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kubetrail query worker: cannot start its runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let written = runtime.block_on(async move {
        let (tx, mut rx) = tokio::sync::mpsc::channel(CHUNKS_AHEAD);
        let resources = kubetrail_engine::Resources {
            // The pool spills or refuses well before the process meets its limit.
            memory: (order.memory / 2).min(kubetrail_engine::MEMORY_LIMIT as u64) as usize,
            spill_dir: Some(order.spill.clone()),
            max_spill: spill_budget(&order.spill),
        };
        let Order {
            source, scope, job, ..
        } = order;
        let task =
            tokio::spawn(async move { job.run(&source, scope.into(), &resources, tx).await });
        let mut stdout = std::io::BufWriter::with_capacity(64 << 10, std::io::stdout().lock());
        while let Some(chunk) = rx.recv().await {
            for piece in chunk.chunks(MAX_FRAME) {
                frame(&mut stdout, b'D', piece)?;
            }
        }
        let result = task.await.unwrap_or_else(|e| {
            eprintln!("kubetrail query worker: the query failed: {e}");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error",
            ))
        });
        match result {
            Ok(()) => frame(&mut stdout, b'K', &[])?,
            Err(e) => frame(&mut stdout, b'E', &job::to_json(&WireError::from(e)))?,
        }
        stdout.flush()
    });
    // Nothing left to wait for: the answer is out.
    runtime.shutdown_background();
    match written {
        Ok(()) => ExitCode::SUCCESS,
        // The collector stopped reading (its client hung up): it is about to kill us.
        Err(_) => ExitCode::from(3),
    }
}

/// What a query spilling into `dir` may write: [`WORKER_SPILL_BYTES`], and no more than a quarter of what
/// its file system has free (nothing when that is unknown).
fn spill_budget(dir: &std::path::Path) -> u64 {
    let free = rustix::fs::statvfs(dir).map_or(0, |s| s.f_bavail.saturating_mul(s.f_frsize));
    WORKER_SPILL_BYTES.min(free / 4)
}

fn frame(w: &mut impl std::io::Write, tag: u8, payload: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(payload.len()).map_err(std::io::Error::other)?;
    w.write_all(&[tag])?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(payload)
}

#[cfg(test)]
mod tests {
    #[test]
    fn spilling_leaves_the_disk_three_quarters_of_its_free_space() {
        let dir = tempfile::tempdir().unwrap();
        let s = rustix::fs::statvfs(dir.path()).unwrap();
        let free = s.f_bavail * s.f_frsize;
        let budget = super::spill_budget(dir.path());
        assert!(budget > 0 && budget <= super::WORKER_SPILL_BYTES && budget <= free / 4);
        assert_eq!(super::spill_budget(&dir.path().join("missing")), 0);
    }
}
