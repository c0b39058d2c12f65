//! The supervisor's side of the request channel: a Unix socket server on its
//! own threads, one thread per connection.
//!
//! A run binds the socket before the app starts but starts the threads only
//! when the first connection arrives ([`Server::bind`], then [`Server::serve`]
//! from the supervisor's event loop), so an app that never uses the channel
//! costs no thread.
//!
//! Every line, well-formed or not, first takes a token from the run's request
//! budget, so a flooding app gets cheap `throttled` replies and cannot flood
//! the audit log or slow the supervisor. Audit events from the app have a
//! second, smaller budget.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use thiserror::Error;

use super::handler::Handler;
use super::peer::PeerCheck;
use super::protocol::{ErrorCode, ErrorReply, MAX_FRAME, reply_line};
use crate::audit::AuditLog;
use crate::context::Context;
use crate::exit::{Code, HasExitCode};
use crate::guard::GuardError;
use crate::policy::Policy;
use crate::ratelimit::RateError;

/// How long a reply may wait for a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Bounds on what one run may ask of the server.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Requests per second from the whole run, any kind.
    pub requests_per_second: f64,
    /// Requests the run may send at once before the per-second rate applies.
    pub request_burst: f64,
    /// App audit events per second.
    pub events_per_second: f64,
    /// App audit events at once.
    pub event_burst: f64,
    /// Connections open at the same time.
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            requests_per_second: 100.0,
            request_burst: 400.0,
            events_per_second: 10.0,
            event_burst: 50.0,
            max_connections: 64,
        }
    }
}

/// The settings the supervisor passes to [`Server::start`].
pub struct ServerConfig {
    /// The vault and policy locations of this invocation.
    pub context: Context,
    /// The run's resolved policy: its rate limits and e-mail settings.
    pub policy: Policy,
    /// The run id, for logs.
    pub run_id: String,
    /// The app's audit log, opened for this run.
    pub audit: Arc<AuditLog>,
    /// Path of the socket to create, in a directory private to the run.
    pub socket_path: PathBuf,
    /// The rule that decides which connecting processes are served.
    pub peer: PeerCheck,
    /// Request budgets and connection bound.
    pub limits: ServerLimits,
}

/// A server that could not be started.
#[derive(Debug, Error)]
pub enum ChannelError {
    #[error("failed to create the request socket {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to set up the request server: {0}")]
    Setup(String),
    #[error(transparent)]
    Rate(#[from] RateError),
    #[error(transparent)]
    Guard(#[from] GuardError),
}

impl HasExitCode for ChannelError {
    fn exit_code(&self) -> Code {
        Code::Supervisor
    }
}

type Connections = Arc<Mutex<HashMap<u64, (UnixStream, Option<JoinHandle<()>>)>>>;

/// A request server; [`Server::stop`] (or drop) shuts it down.
pub struct Server {
    socket_path: PathBuf,
    stopping: Arc<AtomicBool>,
    wake: Option<OwnedFd>,
    /// The bound socket and its handler until `serve` starts the accept thread.
    idle: Option<AcceptState>,
    accept_thread: Option<JoinHandle<()>>,
    connections: Connections,
}

impl Server {
    /// Binds the socket (mode 0600) and starts serving on a new thread.
    pub fn start(config: ServerConfig) -> Result<Server, ChannelError> {
        let mut server = Self::bind(config)?;
        server.serve()?;
        Ok(server)
    }

    /// Binds the socket (mode 0600) and builds the handler, without a thread
    /// yet: connections wait in the socket's backlog until `serve`.
    pub fn bind(config: ServerConfig) -> Result<Server, ChannelError> {
        let bind_error = |source| ChannelError::Bind {
            path: config.socket_path.clone(),
            source,
        };
        let listener = UnixListener::bind(&config.socket_path).map_err(bind_error)?;
        std::fs::set_permissions(&config.socket_path, std::fs::Permissions::from_mode(0o600))
            .map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let (wake_read, wake_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .map_err(|err| {
                ChannelError::Setup(format!("failed to create the wake-up pipe: {err}"))
            })?;

        let handler = Arc::new(Handler::new(&config)?);
        let stopping = Arc::new(AtomicBool::new(false));
        let connections: Connections = Arc::default();
        let state = AcceptState {
            listener,
            wake: wake_read,
            handler,
            peer: config.peer,
            stopping: stopping.clone(),
            connections: connections.clone(),
            max_connections: config.limits.max_connections,
        };
        tracing::info!(run_id = %config.run_id, socket = %config.socket_path.display(), "request channel bound");
        Ok(Server {
            socket_path: config.socket_path,
            stopping,
            wake: Some(wake_write),
            idle: Some(state),
            accept_thread: None,
            connections,
        })
    }

    /// Returns the bound socket while nothing serves it yet. When it is
    /// readable, a client is waiting and the caller should call `serve`.
    pub fn waiting_socket(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.idle.as_ref().map(|state| state.listener.as_fd())
    }

    /// Starts the accept thread; does nothing when it runs already.
    pub fn serve(&mut self) -> Result<(), ChannelError> {
        let Some(state) = self.idle.take() else {
            return Ok(());
        };
        let accept_thread = std::thread::Builder::new()
            .name("channel-accept".into())
            .spawn(move || {
                // The supervisor reads its signals through a signalfd, which
                // receives a signal only while every thread blocks it.
                // Connection threads inherit this mask.
                let _ = nix::sys::signal::SigSet::all().thread_block();
                state.run();
            })
            .map_err(|err| {
                ChannelError::Setup(format!("failed to start the accept thread: {err}"))
            })?;
        tracing::info!(socket = %self.socket_path.display(), "request channel serving");
        self.accept_thread = Some(accept_thread);
        Ok(())
    }

    /// Returns the socket path, for `SAFE_EXEC_SOCKET`.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// Stops accepting, closes every connection, waits for the threads and
    /// removes the socket.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if self.stopping.swap(true, Ordering::SeqCst) && self.accept_thread.is_none() {
            return;
        }
        // Never served: dropping the listener closes the waiting connections.
        self.idle = None;
        if let Some(wake) = self.wake.take() {
            let _ = nix::unistd::write(&wake, b"x");
        }
        if let Some(thread) = self.accept_thread.take() {
            let _ = thread.join();
        }
        let open: Vec<(UnixStream, Option<JoinHandle<()>>)> = match self.connections.lock() {
            Ok(mut connections) => connections.drain().map(|(_, entry)| entry).collect(),
            Err(_) => Vec::new(),
        };
        for (stream, thread) in open {
            let _ = stream.shutdown(std::net::Shutdown::Both);
            if let Some(thread) = thread {
                let _ = thread.join();
            }
        }
        if let Err(err) = std::fs::remove_file(&self.socket_path)
            && err.kind() != ErrorKind::NotFound
        {
            tracing::warn!(socket = %self.socket_path.display(), error = %err, "failed to remove the request socket");
        }
        tracing::info!(socket = %self.socket_path.display(), "request channel stopped");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct AcceptState {
    listener: UnixListener,
    wake: OwnedFd,
    handler: Arc<Handler>,
    peer: PeerCheck,
    stopping: Arc<AtomicBool>,
    connections: Connections,
    max_connections: usize,
}

impl AcceptState {
    fn run(self) {
        let next_id = AtomicU64::new(0);
        while !self.stopping.load(Ordering::SeqCst) {
            let mut fds = [
                PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.wake.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(err) => {
                    tracing::error!(error = %err, "poll on the request socket failed; the channel stops");
                    return;
                }
            }
            if fds[1].any().unwrap_or(false) || self.stopping.load(Ordering::SeqCst) {
                return;
            }
            match self.listener.accept() {
                Ok((stream, _)) => self.admit(stream, next_id.fetch_add(1, Ordering::Relaxed)),
                Err(err)
                    if err.kind() == ErrorKind::WouldBlock
                        || err.kind() == ErrorKind::Interrupted => {}
                Err(err) => {
                    // Out of descriptors or memory: wait a little instead of spinning.
                    tracing::warn!(error = %err, "failed to accept a request connection");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    fn admit(&self, mut stream: UnixStream, id: u64) {
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        if let Err(reason) = self.peer.admit(&stream) {
            tracing::warn!(reason = %reason, "refused a request connection");
            let _ = stream.write_all(&reply_line(
                &serde_json::Value::Null,
                Err(ErrorReply::new(ErrorCode::Refused, reason)),
            ));
            return;
        }

        let Ok(mut connections) = self.connections.lock() else {
            return;
        };
        connections
            .retain(|_, (_, thread)| thread.as_ref().is_some_and(|thread| !thread.is_finished()));
        if connections.len() >= self.max_connections {
            let message = format!(
                "too many open connections (at most {}); close one and retry",
                self.max_connections
            );
            let _ = stream.write_all(&reply_line(
                &serde_json::Value::Null,
                Err(ErrorReply::new(ErrorCode::Refused, message)),
            ));
            return;
        }
        let Ok(registered) = stream.try_clone() else {
            return;
        };
        let handler = self.handler.clone();
        let registry = self.connections.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("channel-conn-{id}"))
            .spawn(move || {
                serve_connection(stream, &handler);
                if let Ok(mut connections) = registry.lock() {
                    connections.remove(&id);
                }
            });
        match spawned {
            Ok(thread) => {
                connections.insert(id, (registered, Some(thread)));
            }
            Err(err) => tracing::error!(error = %err, "failed to start a connection thread"),
        }
    }
}

/// Reads request lines from `stream` and replies to each until the client closes.
fn serve_connection(stream: UnixStream, handler: &Handler) {
    let Ok(mut reader) = stream.try_clone() else {
        return;
    };
    let mut writer = stream;
    let mut line: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = vec![0u8; 16 * 1024];
    let mut discarding = false;

    loop {
        let count = match reader.read(&mut chunk) {
            Ok(0) => return,
            Ok(count) => count,
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let mut data = &chunk[..count];
        while !data.is_empty() {
            let newline = data.iter().position(|&byte| byte == b'\n');
            let (part, rest, complete) = match newline {
                Some(index) => (&data[..index], &data[index + 1..], true),
                None => (data, &data[data.len()..], false),
            };
            data = rest;
            if !discarding {
                line.extend_from_slice(part);
            }
            if !discarding && line.len() >= MAX_FRAME {
                let reply = handler.too_large();
                if writer.write_all(&reply).is_err() {
                    return;
                }
                line.clear();
                discarding = !complete;
                continue;
            }
            if !complete {
                continue;
            }
            if discarding {
                discarding = false;
                continue;
            }
            if !line.iter().all(u8::is_ascii_whitespace) {
                let reply = handler.handle_line(&line, Instant::now());
                if writer.write_all(&reply).is_err() {
                    return;
                }
            }
            line.clear();
        }
    }
}
