//! A precise wake-up for the event loop.
//!
//! `epoll_wait` takes its timeout in whole milliseconds (mio rounds up), so an auction closing
//! on its deadline would be noticed up to a millisecond late, all of it counted as the engine's
//! overhead. A `timerfd` armed for the earliest deadline wakes the loop to the microsecond.

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

pub struct TimerFd {
    fd: RawFd,
    /// The instant the timer is armed for, to avoid re-arming for the same deadline.
    armed: Option<Instant>,
    /// A reference pair to turn `Instant`s into CLOCK_MONOTONIC timespecs.
    base_instant: Instant,
    base_mono_ns: i128,
}

fn monotonic_ns() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

impl TimerFd {
    pub fn new(registry: &Registry, token: Token) -> io::Result<TimerFd> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let t = TimerFd {
            fd,
            armed: None,
            base_instant: Instant::now(),
            base_mono_ns: monotonic_ns(),
        };
        registry.register(&mut SourceFd(&t.fd), token, Interest::READABLE)?;
        Ok(t)
    }

    /// Wake the loop at `at` (absolute). Earlier arming is replaced.
    pub fn arm(&mut self, at: Instant) {
        if self.armed == Some(at) {
            return;
        }
        let offset = if at >= self.base_instant {
            at.duration_since(self.base_instant).as_nanos() as i128
        } else {
            -(self.base_instant.duration_since(at).as_nanos() as i128)
        };
        // An absolute time of zero would disarm the timer: never ask for less than 1 ns.
        let abs = (self.base_mono_ns + offset).max(1);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (abs / 1_000_000_000) as libc::time_t,
                tv_nsec: (abs % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: `fd` is our timerfd and `spec` a valid itimerspec.
        let rc = unsafe {
            libc::timerfd_settime(
                self.fd,
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        self.armed = if rc == 0 { Some(at) } else { None };
    }

    /// Clear the readiness after the timer fired.
    pub fn acknowledge(&mut self) {
        let mut buf = [0u8; 8];
        // SAFETY: reading 8 bytes into an 8-byte buffer from our own non-blocking fd.
        let _ = unsafe { libc::read(self.fd, buf.as_mut_ptr() as *mut libc::c_void, 8) };
        self.armed = None;
    }
}

impl Drop for TimerFd {
    fn drop(&mut self) {
        // SAFETY: closing the fd this struct owns, once.
        unsafe { libc::close(self.fd) };
    }
}
