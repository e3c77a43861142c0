//! Standard output of the commands that print a report (`check`, `demo`, `buyer-check`,
//! `journal`, and the operator tools `gavel-load` and `gavel-mock-buyers`). `std`'s
//! `println!` panics when stdout cannot be written (a full disk, a file size limit, a closed
//! pipe), and a write error silently dropped would leave a cut export that exits 0. Here the
//! first failure is kept, later output is dropped, and [`finish`] turns the failure into a
//! one-line error and exit code 1. A closed pipe (`gavel journal export | head`) is the reader
//! having had enough, not a failure.

use std::fmt;
use std::io::{self, Write};
use std::sync::Mutex;

/// The first error met writing stdout through [`print`].
static FAILED: Mutex<Option<io::Error>> = Mutex::new(None);

/// `print!` to stdout, keeping the first error instead of panicking.
pub fn print(args: fmt::Arguments<'_>) {
    let mut failed = FAILED.lock().unwrap_or_else(|p| p.into_inner());
    if failed.is_some() {
        return;
    }
    if let Err(e) = io::stdout().lock().write_fmt(args) {
        *failed = Some(e);
    }
}

/// Flush stdout and take the first error met writing it through [`print`].
pub fn take_error() -> Option<io::Error> {
    let flushed = io::stdout().lock().flush();
    let mut failed = FAILED.lock().unwrap_or_else(|p| p.into_inner());
    failed.take().or(flushed.err())
}

/// The exit code of a command that ran to `code` and met `error` writing its output: a
/// failure other than a closed pipe is told on `err`, and a success becomes 1.
pub fn finish(code: i32, error: Option<io::Error>, err: &mut dyn Write) -> i32 {
    finish_as("gavel", code, error, err)
}

/// [`finish`] for a program whose error lines start with `prefix` (the operator tools'
/// start with `error`).
pub fn finish_as(prefix: &str, code: i32, error: Option<io::Error>, err: &mut dyn Write) -> i32 {
    match error {
        Some(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            let _ = writeln!(err, "{prefix}: cannot write the output: {e}");
            if code == 0 {
                1
            } else {
                code
            }
        }
        _ => code,
    }
}

/// A writer that keeps the first error met, for commands that stop at a write error and
/// leave the exit code to [`finish`].
pub struct Tracked<W: Write> {
    inner: W,
    error: Option<io::Error>,
}

impl<W: Write> Tracked<W> {
    /// Wrap `inner`.
    pub fn new(inner: W) -> Self {
        Tracked { inner, error: None }
    }

    /// Flush, then the first error met (the flush's own included).
    pub fn finish(mut self) -> Option<io::Error> {
        if self.error.is_none() {
            if let Err(e) = self.inner.flush() {
                self.error = Some(e);
            }
        }
        self.error
    }

    fn keep<T>(&mut self, r: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &r {
            if self.error.is_none() {
                self.error = Some(io::Error::new(e.kind(), e.to_string()));
            }
        }
        r
    }
}

impl<W: Write> Write for Tracked<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(e) = &self.error {
            return Err(io::Error::new(e.kind(), e.to_string()));
        }
        let r = self.inner.write(buf);
        self.keep(r)
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(e) = &self.error {
            return Err(io::Error::new(e.kind(), e.to_string()));
        }
        let r = self.inner.flush();
        self.keep(r)
    }
}

/// `println!` through [`print`].
#[macro_export]
#[doc(hidden)]
macro_rules! out_println {
    () => { $crate::out::print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::out::print(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` through [`print`].
#[macro_export]
#[doc(hidden)]
macro_rules! out_print {
    ($($arg:tt)*) => { $crate::out::print(format_args!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose every write fails with `kind`.
    struct Failing(io::ErrorKind);

    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::new(self.0, "refused"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::new(self.0, "refused"))
        }
    }

    #[test]
    fn a_full_disk_fails_a_command_that_succeeded() {
        let mut t = Tracked::new(io::BufWriter::new(Failing(io::ErrorKind::StorageFull)));
        // Buffered: the write succeeds, the flush at the end fails.
        assert!(t.write_all(b"line\n").is_ok());
        let mut err = Vec::new();
        assert_eq!(finish(0, t.finish(), &mut err), 1);
        let err = String::from_utf8_lossy(&err);
        assert!(err.starts_with("gavel: cannot write the output: "), "{err}");
        assert_eq!(err.lines().count(), 1);
    }

    #[test]
    fn a_tool_tells_the_failure_under_its_own_prefix() {
        let mut err = Vec::new();
        let full = Some(io::Error::from(io::ErrorKind::StorageFull));
        assert_eq!(finish_as("error", 0, full, &mut err), 1);
        let err = String::from_utf8_lossy(&err);
        assert!(err.starts_with("error: cannot write the output: "), "{err}");
        let mut err = Vec::new();
        let closed = Some(io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!(finish_as("error", 130, closed, &mut err), 130);
        assert!(err.is_empty());
    }

    #[test]
    fn a_closed_pipe_is_not_a_failure_and_a_failure_keeps_its_code() {
        let mut t = Tracked::new(Failing(io::ErrorKind::BrokenPipe));
        assert!(t.write_all(b"x").is_err());
        let mut err = Vec::new();
        assert_eq!(finish(0, t.finish(), &mut err), 0);
        assert!(err.is_empty());
        let mut t = Tracked::new(Failing(io::ErrorKind::StorageFull));
        assert!(t.write_all(b"x").is_err());
        // Later writes fail too, without reaching the writer again.
        assert!(t.write_all(b"y").is_err());
        assert_eq!(finish(2, t.finish(), &mut err), 2);
    }
}
