//! A segment file cut short under its mapping.
//!
//! Segments are written and read through shared file mappings. When something outside the
//! exchange truncates a mapped segment (`truncate`, a botched copy over it), every page past
//! the new end is gone, and the next load or store there raises SIGBUS, whose default action
//! kills the process with every lead in flight and no word of why. The journal's mappings are
//! therefore registered here, and a SIGBUS handler covers them: a fault at an address beyond the
//! end of a covered file (`BUS_ADRERR`) has that page replaced by a private zero page, so the
//! store goes nowhere and a load reads zeroes (which read as the end of the records), and the
//! process goes on. What was written there is lost in any case; the journal's own check notices
//! the file's size within [`super::writer::SPARE_RETRY`], says so on stderr, and refuses new
//! leads (`journal.segment_lost`). A fault anywhere else, or of another kind (a memory error),
//! is left to the default action after one line on stderr.
//!
//! The handler only reads atomics and makes the async-signal-safe system calls `mmap`,
//! `write` and `sigaction`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Once;

/// Most mappings covered at once: the writer's mapped segments and the readers' (one each).
/// A mapping made while all are taken is not covered (a fault in it kills the process).
pub const MAX_COVERED: usize = 256;

/// `si_code` of a SIGBUS for an address with no backing (past the end of a mapped file).
const BUS_ADRERR: libc::c_int = 2;

/// One covered range: `start` is 0 when the slot is free; `len` is 0 while the slot is being
/// taken or given back, so a half-written slot covers nothing.
struct Slot {
    start: AtomicUsize,
    len: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Slot = Slot {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
};
static SLOTS: [Slot; MAX_COVERED] = [FREE; MAX_COVERED];
static PAGE: AtomicUsize = AtomicUsize::new(4096);
static FAULTS: AtomicU64 = AtomicU64::new(0);
static INSTALL: Once = Once::new();

/// Pages of covered mappings replaced after a fault, since the process started.
pub fn pages_replaced() -> u64 {
    FAULTS.load(Ordering::Relaxed)
}

/// A covered mapping; dropping it ends the cover (before the mapping is unmapped: declare it
/// first in the struct that owns both).
#[derive(Debug)]
pub struct Cover(Option<usize>);

impl Drop for Cover {
    fn drop(&mut self) {
        if let Some(i) = self.0 {
            SLOTS[i].len.store(0, Ordering::SeqCst);
            SLOTS[i].start.store(0, Ordering::SeqCst);
        }
    }
}

/// Cover `[ptr, ptr + len)`, a shared mapping of a journal file.
pub fn cover(ptr: *const u8, len: usize) -> Cover {
    install();
    let start = ptr as usize;
    if start == 0 || len == 0 {
        return Cover(None);
    }
    for (i, slot) in SLOTS.iter().enumerate() {
        if slot
            .start
            .compare_exchange(0, start, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
        {
            slot.len.store(len, Ordering::SeqCst);
            return Cover(Some(i));
        }
    }
    Cover(None)
}

fn install() {
    INSTALL.call_once(|| {
        // SAFETY: `sysconf` has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if let Ok(page) = usize::try_from(page) {
            if page.is_power_of_two() {
                PAGE.store(page, Ordering::Relaxed);
            }
        }
        // SAFETY: a zeroed `sigaction` is a valid starting value; the handler has the
        // `SA_SIGINFO` signature and touches only atomics and async-signal-safe calls.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                on_sigbus;
            sa.sa_sigaction = handler as libc::sighandler_t;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
        }
    });
}

fn covered(addr: usize) -> bool {
    SLOTS.iter().any(|s| {
        let start = s.start.load(Ordering::SeqCst);
        let len = s.len.load(Ordering::SeqCst);
        start != 0 && addr >= start && addr - start < len
    })
}

fn say(msg: &[u8]) {
    // SAFETY: `write` is async-signal-safe; the buffer is valid for its length.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
    }
}

extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid `siginfo_t` to an `SA_SIGINFO` handler.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    if code == BUS_ADRERR && covered(addr) {
        let page = PAGE.load(Ordering::Relaxed);
        let at = addr & !(page - 1);
        // SAFETY: the page lies inside a live mapping the journal owns (it is covered), so
        // replacing it unmaps nothing anyone else holds; the store or load that faulted is
        // retried on the new page.
        let r = unsafe {
            libc::mmap(
                at as *mut libc::c_void,
                page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if r != libc::MAP_FAILED {
            if FAULTS.fetch_add(1, Ordering::Relaxed) == 0 {
                say(
                    b"gavel: journal: a mapped segment file was cut short by something else; \
                      what is written past its end is lost\n",
                );
            }
            return;
        }
    }
    say(b"gavel: SIGBUS: a memory-mapped file could not be read or written (cut short, or an I/O error)\n");
    // SAFETY: restoring the default action is async-signal-safe; returning retries the access,
    // which now ends the process as SIGBUS does by default.
    unsafe {
        libc::signal(libc::SIGBUS, libc::SIG_DFL);
    }
}
