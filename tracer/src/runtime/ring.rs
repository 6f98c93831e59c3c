//! The event ring, emptied by a thread of its own: it only copies records out, in batches, so
//! the kernel's ring keeps draining while the run loop is busy (building a summary for an
//! interval, a scrape or a snapshot) and however many threads the target has. The run loop
//! applies the batches in order.

use std::{
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use tokio::sync::mpsc;

/// A batch is sent once it holds this many bytes of records...
const BATCH_BYTES: usize = 256 << 10;
/// ...and batches wait for the run loop up to this many (128 MiB): past that the reader waits
/// too, the kernel's ring fills, and what it cannot take is counted as dropped.
const QUEUED_BATCHES: usize = 512;
/// The reader looks at the ring at least this often (wakeups are batched by the kernel side).
const POLL: Duration = Duration::from_millis(50);

/// Records copied off the ring, in order.
#[derive(Default)]
pub(super) struct Batch {
    data: Vec<u8>,
    /// Where each record ends in `data`.
    ends: Vec<usize>,
}

impl Batch {
    fn push(&mut self, record: &[u8]) {
        self.data.extend_from_slice(record);
        self.ends.push(self.data.len());
    }

    pub(super) fn records(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(s, &e)| &self.data[s..e])
    }

    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }
}

/// The reader thread and the batches it sends.
pub(super) struct RingReader {
    batches: mpsc::Receiver<Batch>,
    /// Requests to read the ring now, and the last one the reader answered.
    sync: Arc<Sync>,
    /// Batches taken off the channel while the reader was stopping, to be applied first.
    kept: std::collections::VecDeque<Batch>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RingReader {
    /// Starts reading `ring`; `last` is the most records read once told to stop (what the ring
    /// can hold: a target still running keeps filling it).
    pub(super) fn start(ring: RingBuf<MapData>, last: usize) -> std::io::Result<RingReader> {
        let (tx, batches) = mpsc::channel(QUEUED_BATCHES);
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let sync = Arc::new(Sync::new()?);
        let asked = Arc::clone(&sync);
        let thread = std::thread::Builder::new()
            .name("tracer-ring".into())
            .spawn(move || read(ring, &tx, &stopping, &asked, last))?;
        Ok(RingReader {
            batches,
            sync,
            kept: std::collections::VecDeque::new(),
            stop,
            thread: Some(thread),
        })
    }

    /// The next batch, in order (those a sync set aside first); never, once the reader has
    /// stopped and every batch was taken.
    pub(super) async fn next(&mut self) -> Batch {
        if let Some(b) = self.kept.pop_front() {
            return b;
        }
        match self.batches.recv().await {
            Some(b) => b,
            None => std::future::pending().await,
        }
    }

    /// A batch already read, if any.
    pub(super) fn try_next(&mut self) -> Option<Batch> {
        self.kept
            .pop_front()
            .or_else(|| self.batches.try_recv().ok())
    }

    /// Has the reader take everything the ring holds now, and waits until it has: every event
    /// before this moment is then in a batch ([`RingReader::try_next`]).
    pub(super) fn sync(&mut self) {
        let want = self.sync.asked.fetch_add(1, Ordering::AcqRel) + 1;
        self.sync.wake();
        while self.sync.answered.load(Ordering::Acquire) < want {
            match self.batches.try_recv() {
                Ok(b) => self.kept.push_back(b),
                Err(mpsc::error::TryRecvError::Disconnected) => return,
                Err(mpsc::error::TryRecvError::Empty) => {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
    }

    /// Reads what the ring holds now and stops; the batches left are then taken with
    /// [`RingReader::try_next`].
    pub(super) fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.sync.wake();
        // Its last batches may wait for room: the channel is emptied while it finishes.
        if let Some(thread) = self.thread.take() {
            while !thread.is_finished() {
                match self.batches.try_recv() {
                    Ok(b) => self.kept.push_back(b),
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            let _ = thread.join();
        }
        while let Ok(b) = self.batches.try_recv() {
            self.kept.push_back(b);
        }
    }
}

impl Drop for RingReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// Requests to read the ring at once: a counter of requests and of answers, and an eventfd
/// that wakes the reader from its wait.
struct Sync {
    asked: AtomicU64,
    answered: AtomicU64,
    event: OwnedFd,
}

impl Sync {
    fn new() -> std::io::Result<Sync> {
        // SAFETY: eventfd has no pointer arguments; the descriptor returned is ours.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Sync {
            asked: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            // SAFETY: a new descriptor, owned by nobody else.
            event: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    fn wake(&self) {
        let one = 1u64;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd.
        unsafe { libc::write(self.event.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    /// Empties the eventfd after a wakeup.
    fn clear(&self) {
        let mut n = 0u64;
        // SAFETY: reads 8 bytes into a valid u64 from our non-blocking eventfd.
        unsafe { libc::read(self.event.as_raw_fd(), (&raw mut n).cast(), 8) };
    }
}

/// The reader thread: copies records into batches until told to stop, then what the ring
/// holds (at most `last` records) and ends.
fn read(
    mut ring: RingBuf<MapData>,
    tx: &mpsc::Sender<Batch>,
    stop: &AtomicBool,
    sync: &Sync,
    last: usize,
) {
    let fd = ring.as_raw_fd();
    run_first();
    loop {
        let stopping = stop.load(Ordering::Acquire);
        // Requests up to here are answered by this pass over the ring.
        let asked = sync.asked.load(Ordering::Acquire);
        let mut taken = 0;
        let mut batch = Batch::default();
        while let Some(record) = ring.next() {
            batch.push(&record);
            taken += 1;
            if batch.data.len() >= BATCH_BYTES
                && tx.blocking_send(std::mem::take(&mut batch)).is_err()
            {
                return;
            }
            if stopping && taken >= last {
                break;
            }
        }
        if batch.len() > 0 && tx.blocking_send(batch).is_err() {
            return;
        }
        sync.answered.store(asked, Ordering::Release);
        if stopping {
            return;
        }
        wait_readable(fd, sync, POLL);
    }
}

/// Makes the calling thread run before the target's: a target with hundreds of threads busy
/// allocating would otherwise leave it one share of the CPU in hundreds, and the ring would
/// overflow. Real-time (`SCHED_FIFO`, the lowest priority) where allowed, else the highest
/// nice. The reader sleeps whenever the ring is empty and only copies when it is not, so it
/// takes no more than the events cost to copy.
fn run_first() {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: 0 is the calling thread; `param` is a valid sched_param.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        // SAFETY: gettid and setpriority on the calling thread.
        unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, -20);
        }
    }
}

/// Waits until the ring has records (the kernel's wakeup), a request comes, or `timeout`
/// passes.
fn wait_readable(fd: RawFd, sync: &Sync, timeout: Duration) {
    let mut fds = [
        libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: sync.event.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    // SAFETY: two valid pollfds; an error or interruption only ends the wait early.
    unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout.as_millis() as i32) };
    if fds[1].revents != 0 {
        sync.clear();
    }
}
