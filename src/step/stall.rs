//! Transfers that stop moving. ureq's timeouts bound whole phases (connecting, waiting for a
//! response's headers), never a body that stops halfway: a peer that keeps its connection open
//! and sends nothing more would hold the step, and its pod, forever. Piece downloads and uploads
//! read through [`Watched`]; a watchdog thread ends the step when no byte moved for the stall
//! limit, with a temporary failure naming the transfer (the step is retried, on a new connection).

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::{ExitCode, StepError};

/// Seconds without a byte moved after which a transfer counts as stalled (default
/// [`DEFAULT_STALL`]); a profile sets it in a step's env.
pub const STALL_ENV: &str = "DAMOCLES_STEP_TRANSFER_STALL_SECONDS";
pub const DEFAULT_STALL: Duration = Duration::from_secs(300);

/// The transfer under way: what it is, when it last moved, which [`Watched`] it is.
struct Transfer {
    what: String,
    moved: Instant,
    id: u64,
}

static CURRENT: Mutex<Option<Transfer>> = Mutex::new(None);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static WATCHDOG: OnceLock<()> = OnceLock::new();
type StallHook = Box<dyn Fn(StepError) + Send + Sync>;
static ON_STALL: OnceLock<StallHook> = OnceLock::new();

/// What ends the process when a transfer stalls: the step binary reports the failure as the
/// step's result, then exits. Without one, the failure is printed and the process exits with
/// the temporary code.
pub fn on_stall(hook: impl Fn(StepError) + Send + Sync + 'static) {
    let _ = ON_STALL.set(Box::new(hook));
}

/// The stall limit: [`STALL_ENV`] when set to a positive number of seconds, else the default.
pub fn stall_limit() -> Duration {
    std::env::var(STALL_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(DEFAULT_STALL, Duration::from_secs)
}

/// A reader whose every byte counts as the transfer `what` moving. Its end (EOF, or dropped)
/// ends the watch: the wait for an answer after an upload is bounded by ureq's own timeout.
pub struct Watched<R> {
    inner: R,
    id: u64,
}

pub fn watched<R: Read>(what: impl Into<String>, inner: R) -> Watched<R> {
    let limit = stall_limit();
    WATCHDOG.get_or_init(|| {
        std::thread::Builder::new()
            .name("transfer-watchdog".into())
            .spawn(move || watchdog(limit))
            .expect("the transfer watchdog thread starts");
    });
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    *lock() = Some(Transfer {
        what: what.into(),
        moved: Instant::now(),
        id,
    });
    Watched { inner, id }
}

fn lock() -> std::sync::MutexGuard<'static, Option<Transfer>> {
    CURRENT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The transfer under way moved just now (only if it is the [`Watched`] `id`, when given).
fn touch(id: Option<u64>) {
    if let Some(transfer) = lock().as_mut().filter(|t| id.is_none_or(|id| t.id == id)) {
        transfer.moved = Instant::now();
    }
}

impl<R> Watched<R> {
    fn finish(&self) {
        let mut current = lock();
        if current.as_ref().is_some_and(|t| t.id == self.id) {
            *current = None;
        }
    }
}

impl<R: Read> Read for Watched<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        if read == 0 && !buf.is_empty() {
            self.finish();
        } else {
            touch(Some(self.id));
        }
        Ok(read)
    }
}

impl<R> Drop for Watched<R> {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A reader over a watched transfer's bytes whose every read is the transfer's progress too:
/// add-piece reads a deal's payload from the network, then the zeros that fill its piece, during
/// which (minutes for a small payload in a 32 GiB piece) the network is rightly silent.
pub struct Consuming<R>(pub R);

impl<R: Read> Read for Consuming<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.0.read(buf)?;
        touch(None);
        Ok(read)
    }
}

/// The failure of a transfer that did not move for `limit`.
fn stalled(what: &str, limit: Duration) -> StepError {
    StepError::temporary(format!(
        "{what}: no byte moved for {}s, the peer stalled; the step is retried on a new \
         connection ({STALL_ENV} sets the limit)",
        limit.as_secs()
    ))
}

fn watchdog(limit: Duration) {
    let tick = (limit / 10).clamp(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        std::thread::sleep(tick);
        let failure = lock()
            .as_ref()
            .filter(|t| t.moved.elapsed() >= limit)
            .map(|t| stalled(&t.what, limit));
        if let Some(failure) = failure {
            match ON_STALL.get() {
                Some(hook) => hook(failure),
                None => {
                    eprintln!("damocles-step: {}", failure.message);
                    std::process::exit(ExitCode::Temporary as i32);
                }
            }
        }
    }
}
