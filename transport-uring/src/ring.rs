//! The ring: submission, completion, and the receive buffers the kernel picks from.
//!
//! Every `unsafe` of the crate that touches the ring is here or in the one
//! caller that hands the kernel a send buffer. The rule that keeps them sound:
//! memory named by an operation is freed only after that operation's last
//! completion has been reaped. The receive pool belongs to `Ring` and is
//! freed in its `Drop`, after every operation has ended (or never, if the
//! kernel will not say that they have).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use io_uring::types::{CancelBuilder, Fd, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring, Probe};

/// Size of one receive buffer.
pub const BUFFER_SIZE: usize = 16 * 1024;
/// Receive buffers in the pool (8 MiB of address space; pages are touched as used).
const BUFFERS: u16 = 512;
const GROUP: u16 = 0;
/// `IORING_RECVSEND_POLL_FIRST`: wait for data before trying to receive. A
/// connection is received again right after its last bytes were taken, so the
/// first try would find nothing.
const RECV_POLL_FIRST: u16 = 1;

/// What an operation was, kept in the low bits of its `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Wake = 0,
    Accept = 1,
    Recv = 2,
    Send = 3,
    Connect = 4,
    Provide = 5,
    Cancel = 6,
}

const OP_BITS: u32 = 3;

/// Attempts at handing the queue to the kernel before a descriptor is closed early.
const SUBMIT_TRIES: usize = 8;

fn user_data(op: Op, key: u64) -> u64 {
    (key << OP_BITS) | op as u64
}

fn op_of(user_data: u64) -> Op {
    match user_data & ((1 << OP_BITS) - 1) {
        0 => Op::Wake,
        1 => Op::Accept,
        2 => Op::Recv,
        3 => Op::Send,
        4 => Op::Connect,
        5 => Op::Provide,
        _ => Op::Cancel,
    }
}

/// One completion, copied out of the queue.
#[derive(Debug, Clone, Copy)]
pub struct Completion {
    pub op: Op,
    pub key: u64,
    /// The result: a count or a new descriptor, or `-errno`.
    pub result: i32,
    /// The receive buffer the kernel filled, if any; hand it back with [`Ring::give_back`].
    pub buffer: Option<u16>,
}

impl Completion {
    pub fn error(&self) -> Option<io::Error> {
        (self.result < 0).then(|| io::Error::from_raw_os_error(-self.result))
    }
}

/// Checks that this kernel offers what the loop needs, with a small ring.
pub fn probe() -> io::Result<()> {
    let ring = IoUring::new(8)?;
    check(&ring)
}

fn check(ring: &IoUring) -> io::Result<()> {
    let params = ring.params();
    if !params.is_feature_nodrop() || !params.is_feature_ext_arg() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the kernel's io_uring is too old (needs Linux 6.0 or later)",
        ));
    }
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    // SendZc arrived with Linux 6.0, with synchronous cancel.
    for (code, name) in [
        (opcode::Accept::CODE, "accept"),
        (opcode::Recv::CODE, "recv"),
        (opcode::Send::CODE, "send"),
        (opcode::PollAdd::CODE, "poll"),
        (opcode::ProvideBuffers::CODE, "provided buffers"),
        (opcode::AsyncCancel::CODE, "cancel"),
        (opcode::SendZc::CODE, "Linux 6.0 operations"),
    ] {
        if !probe.is_supported(code) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("the kernel's io_uring lacks {name} (needs Linux 6.0 or later)"),
            ));
        }
    }
    Ok(())
}

pub struct Ring {
    ring: IoUring,
    /// Created disabled, for the thread that will run it; see [`Ring::start`].
    disabled: bool,
    /// Operations submitted whose last completion has not been reaped.
    in_flight: usize,
    /// `BUFFERS` buffers of `BUFFER_SIZE` bytes, from a leaked `Box<[u8]>`.
    pool: NonNull<u8>,
    /// Completions reaped while making room in a full queue, not yet handed out.
    stash: Vec<Completion>,
}

// SAFETY: `pool` is owned by the ring alone, like a `Box`; nothing else holds the
// pointer, so moving the ring (and its `IoUring`, which is `Send`) to another thread
// moves the only access with it.
#[allow(unsafe_code)]
unsafe impl Send for Ring {}

impl Ring {
    /// A ring for one thread: the one that calls [`Ring::start`] (and every
    /// method after it). Where the kernel allows (Linux 6.1), completions are
    /// processed only when that thread waits for them (`DEFER_TASKRUN`),
    /// instead of interrupting it.
    pub fn new(entries: u32) -> io::Result<Ring> {
        let ring = IoUring::builder()
            .setup_cqsize(entries * 4)
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_r_disabled()
            .build(entries)
            .map(|ring| (ring, true))
            .or_else(|e| match e.raw_os_error() {
                Some(libc::EINVAL) => IoUring::builder()
                    .setup_cqsize(entries * 4)
                    .build(entries)
                    .map(|ring| (ring, false)),
                _ => Err(e),
            });
        let (ring, disabled) = ring?;
        check(&ring)?;
        let pool = Box::into_raw(vec![0u8; pool_len()].into_boxed_slice());
        Ok(Ring {
            ring,
            disabled,
            in_flight: 0,
            pool: NonNull::new(pool.cast::<u8>()).expect("a boxed slice is never null"),
            stash: Vec::new(),
        })
    }

    /// Makes the calling thread the ring's only user and provides the pool.
    #[allow(unsafe_code)]
    pub fn start(&mut self) -> io::Result<()> {
        if self.disabled {
            self.ring.submitter().register_enable_rings()?;
            self.disabled = false;
        }
        let entry =
            opcode::ProvideBuffers::new(self.pool.as_ptr(), BUFFER_SIZE as i32, BUFFERS, GROUP, 0)
                .build()
                .user_data(user_data(Op::Provide, 0));
        // SAFETY: the pool lives until `Drop`, which first waits out every operation.
        unsafe { self.push(entry) };
        Ok(())
    }

    /// Queues `entry`, handing the queue to the kernel first if it is full.
    ///
    /// # Safety
    /// Memory the entry names must stay valid, and not be moved, read or
    /// written by us against the kernel's use, until its last completion.
    #[allow(unsafe_code)]
    unsafe fn push(&mut self, entry: squeue::Entry) {
        loop {
            // SAFETY: forwarded from the caller.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                self.in_flight += 1;
                return;
            }
            match self.ring.submit() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => self.reap(),
                Err(_) => {} // EINTR and the like: try again
            }
        }
    }

    /// Receives into a buffer the kernel picks from the pool.
    #[allow(unsafe_code)]
    pub fn recv(&mut self, fd: RawFd, key: u64) {
        let entry = opcode::Recv::new(Fd(fd), std::ptr::null_mut(), BUFFER_SIZE as u32)
            .buf_group(GROUP)
            .ioprio(RECV_POLL_FIRST)
            .build()
            .flags(squeue::Flags::BUFFER_SELECT)
            .user_data(user_data(Op::Recv, key));
        // SAFETY: the entry names no memory but the pool, which outlives every operation.
        unsafe { self.push(entry) };
    }

    /// Sends `len` bytes at `bytes`.
    ///
    /// # Safety
    /// The bytes must stay valid and unchanged until the send's completion is reaped.
    #[allow(unsafe_code)]
    pub unsafe fn send(&mut self, fd: RawFd, key: u64, bytes: *const u8, len: usize) {
        let len = u32::try_from(len).unwrap_or(u32::MAX); // a short send is resumed
        let entry = opcode::Send::new(Fd(fd), bytes, len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(user_data(Op::Send, key));
        // SAFETY: forwarded from the caller.
        unsafe { self.push(entry) };
    }

    /// Accepts one connection on `fd`.
    #[allow(unsafe_code)]
    pub fn accept(&mut self, fd: RawFd, key: u64) {
        let entry = opcode::Accept::new(Fd(fd), std::ptr::null_mut(), std::ptr::null_mut())
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(user_data(Op::Accept, key));
        // SAFETY: an accept that asks for no peer address names no memory.
        unsafe { self.push(entry) };
    }

    /// Completes once `fd` is writable (a connect has ended) or fails.
    #[allow(unsafe_code)]
    pub fn wait_connected(&mut self, fd: RawFd, key: u64) {
        let entry = opcode::PollAdd::new(Fd(fd), libc::POLLOUT as u32)
            .build()
            .user_data(user_data(Op::Connect, key));
        // SAFETY: a poll names no memory.
        unsafe { self.push(entry) };
    }

    /// Receives on the loop's wake-up socket.
    #[allow(unsafe_code)]
    pub fn wait_wake(&mut self, fd: RawFd) {
        let entry = opcode::Recv::new(Fd(fd), std::ptr::null_mut(), BUFFER_SIZE as u32)
            .buf_group(GROUP)
            .build()
            .flags(squeue::Flags::BUFFER_SELECT)
            .user_data(user_data(Op::Wake, 0));
        // SAFETY: the entry names no memory but the pool, which outlives every operation.
        unsafe { self.push(entry) };
    }

    /// Cancels every operation on `fd`.
    #[allow(unsafe_code)]
    pub fn cancel_fd(&mut self, fd: RawFd) {
        let entry = opcode::AsyncCancel2::new(CancelBuilder::fd(Fd(fd)).all())
            .build()
            .user_data(user_data(Op::Cancel, 0));
        // SAFETY: a cancel names no memory.
        unsafe { self.push(entry) };
    }

    /// Cancels every operation on `fd` and hands the cancel, with everything
    /// queued before it, to the kernel now. True once the kernel has taken them
    /// all: it then holds its own reference to the socket for every operation
    /// on `fd`, and the descriptor may be closed. False if it would not take
    /// them; the descriptor must then stay open until those operations end.
    pub fn cancel_fd_now(&mut self, fd: RawFd) -> bool {
        self.cancel_fd(fd);
        for _ in 0..SUBMIT_TRIES {
            if self.ring.submission().is_empty() {
                return true;
            }
            match self.ring.submit() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => self.reap(),
                Err(_) => {} // EINTR and the like: try again
            }
        }
        self.ring.submission().is_empty()
    }

    /// The bytes the kernel received into `buffer`.
    #[allow(unsafe_code)]
    pub fn buffer(&self, buffer: u16, len: usize) -> &[u8] {
        assert!(buffer < BUFFERS && len <= BUFFER_SIZE);
        // SAFETY: in the pool; the kernel handed this buffer back in a completion and
        // writes it again only once `give_back` (which needs `&mut self`) returns it.
        unsafe {
            std::slice::from_raw_parts(
                self.pool.as_ptr().add(usize::from(buffer) * BUFFER_SIZE),
                len,
            )
        }
    }

    /// Returns a buffer to the pool for later receives.
    #[allow(unsafe_code)]
    pub fn give_back(&mut self, buffer: u16) {
        assert!(buffer < BUFFERS);
        // SAFETY (pointer arithmetic): within the pool.
        let addr = unsafe { self.pool.as_ptr().add(usize::from(buffer) * BUFFER_SIZE) };
        let entry = opcode::ProvideBuffers::new(addr, BUFFER_SIZE as i32, 1, GROUP, buffer)
            .build()
            .user_data(user_data(Op::Provide, 0));
        // SAFETY: the pool outlives every operation, and nothing of ours reads this
        // buffer until the kernel hands it out again.
        unsafe { self.push(entry) };
    }

    /// Takes ownership of a descriptor a completed accept returned.
    #[allow(unsafe_code)]
    pub fn accepted(&self, fd: i32) -> OwnedFd {
        debug_assert!(fd >= 0);
        // SAFETY: the kernel just created this descriptor for us; nothing else owns it.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    /// Hands what is queued to the kernel without waiting.
    pub fn submit(&mut self) -> io::Result<()> {
        self.ring.submit().map(drop)
    }

    /// Submits what is queued and waits for one completion, at most `timeout`.
    pub fn submit_and_wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        if !self.stash.is_empty() {
            self.ring.submit()?;
            return Ok(());
        }
        let timespec = timeout.map(Timespec::from);
        let args = SubmitArgs::new();
        let result = match &timespec {
            Some(ts) => self
                .ring
                .submitter()
                .submit_with_args(1, &args.timespec(ts)),
            None => self.ring.submitter().submit_with_args(1, &args),
        };
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Moves every completion reaped so far into `into`.
    pub fn completions(&mut self, into: &mut Vec<Completion>) {
        self.reap();
        into.append(&mut self.stash);
    }

    fn reap(&mut self) {
        for entry in self.ring.completion() {
            // No operation of ours is multishot; the flag is read all the same.
            if !cqueue::more(entry.flags()) {
                self.in_flight -= 1;
            }
            let user_data = entry.user_data();
            self.stash.push(Completion {
                op: op_of(user_data),
                key: user_data >> OP_BITS,
                result: entry.result(),
                buffer: cqueue::buffer_select(entry.flags()),
            });
        }
    }

    /// Cancels every operation and waits until each has completed, at most a
    /// few seconds; true if none is left. Completions are dropped (accepted
    /// descriptors closed).
    pub fn cancel_all(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        let _ = self.ring.submit(); // only submitted operations can be cancelled
        let _ = self.ring.submitter().register_sync_cancel(
            Some(Timespec::from(Duration::from_secs(1))),
            CancelBuilder::any(),
        );
        let mut done = Vec::new();
        while self.in_flight > 0 && Instant::now() < deadline {
            let _ = self.submit_and_wait(Some(Duration::from_millis(50)));
            self.completions(&mut done);
            for completion in done.drain(..) {
                if completion.op == Op::Accept && completion.result >= 0 {
                    drop(self.accepted(completion.result));
                }
            }
            if self.in_flight > 0 {
                let _ = self.ring.submitter().register_sync_cancel(
                    Some(Timespec::from(Duration::from_millis(50))),
                    CancelBuilder::any(),
                );
            }
        }
        self.in_flight == 0
    }
}

fn pool_len() -> usize {
    usize::from(BUFFERS) * BUFFER_SIZE
}

impl Drop for Ring {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        if self.in_flight == 0 || self.cancel_all() {
            let pool = std::ptr::slice_from_raw_parts_mut(self.pool.as_ptr(), pool_len());
            // SAFETY: from `Box::into_raw` in `new`, freed once; no operation is left
            // that could write into it. Otherwise the pool is leaked on purpose.
            drop(unsafe { Box::from_raw(pool) });
        }
    }
}
