//! The run's own pseudo-terminal, relayed by the supervisor.
//!
//! When the caller's stdin is a terminal the app gets a fresh pty instead of
//! the caller's terminal, so nothing it pushes with TIOCSTI or TIOCLINUX can
//! reach the caller's shell. The caller's terminal is put in raw mode for the
//! run and restored afterwards; window size changes are copied over.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::pty::{OpenptyResult, Winsize, openpty};
use nix::sys::termios::{self, SetArg, Termios};

/// Returns true when `fd` is a terminal.
pub fn is_terminal(fd: BorrowedFd<'_>) -> bool {
    nix::unistd::isatty(fd).unwrap_or(false)
}

/// Reads the window size of the terminal on `fd`.
pub fn window_size(fd: BorrowedFd<'_>) -> Option<Winsize> {
    let mut size = Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one Winsize into the live local.
    let result = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (result == 0).then_some(size)
}

/// Sets the window size of the terminal on `fd`; the kernel then signals its foreground group.
pub fn set_window_size(fd: BorrowedFd<'_>, size: &Winsize) {
    // SAFETY: TIOCSWINSZ reads one Winsize from the live reference.
    unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, size) };
}

/// A pty pair: the master stays with the supervisor, the slave goes to the app.
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Opens a pty with the caller's terminal settings and window size.
pub fn open(caller: BorrowedFd<'_>) -> Result<Pty, Errno> {
    let size = window_size(caller);
    let settings = termios::tcgetattr(caller).ok();
    let OpenptyResult { master, slave } = openpty(size.as_ref(), settings.as_ref())?;
    Ok(Pty { master, slave })
}

/// Restores the caller's terminal settings when dropped.
pub struct RawModeGuard<'a> {
    fd: BorrowedFd<'a>,
    saved: Termios,
}

impl<'a> RawModeGuard<'a> {
    /// Puts the terminal on `fd` into raw mode.
    pub fn enter(fd: BorrowedFd<'a>) -> Result<Self, Errno> {
        let saved = termios::tcgetattr(fd)?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw)?;
        Ok(Self { fd, saved })
    }
}

impl Drop for RawModeGuard<'_> {
    fn drop(&mut self) {
        if let Err(err) = termios::tcsetattr(self.fd.as_fd(), SetArg::TCSAFLUSH, &self.saved) {
            tracing::warn!(error = %err, "failed to restore the terminal settings; run `reset`");
        }
    }
}
