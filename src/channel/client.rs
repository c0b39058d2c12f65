//! The app's side of the request channel, and `safe-exec client`.
//!
//! The supervisor puts the socket path in `SAFE_EXEC_SOCKET`. Replies with
//! the `throttled` error code are retried after the wait the supervisor
//! names, up to [`THROTTLE_PATIENCE`], because throttling is no verdict on
//! the request itself.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use thiserror::Error;

use super::protocol::{ErrorCode, ErrorReply, MAX_FRAME};
use crate::cli::{ClientAuditArgs, ClientCommand, ClientGuardCommand, ClientRateCommand};
use crate::commands::rate::{format_wait, parse_wait};
use crate::commands::{Failure, Outcome};
use crate::exit::{Code, HasExitCode};
use crate::guard::command::{exit_code, message_from_args};

/// Environment variable holding the socket path inside a run.
pub const SOCKET_ENV: &str = "SAFE_EXEC_SOCKET";

/// How long the client keeps retrying throttled requests.
pub const THROTTLE_PATIENCE: Duration = Duration::from_secs(30);

/// A request that got no reply, or an error reply.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("not inside a safe-exec run: {SOCKET_ENV} is not set")]
    NoSocket,
    #[error("failed to reach the supervisor at {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the connection to the supervisor failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the supervisor sent an invalid reply: {0}")]
    BadReply(String),
    #[error("the supervisor rejected the request: {message}")]
    Rejected {
        code: ErrorCode,
        message: String,
        retry_after_seconds: Option<f64>,
    },
}

impl HasExitCode for ClientError {
    fn exit_code(&self) -> Code {
        match self {
            ClientError::NoSocket => Code::Usage,
            ClientError::Connect { .. } | ClientError::Io(_) | ClientError::BadReply(_) => {
                Code::Supervisor
            }
            ClientError::Rejected { code, .. } => match code {
                ErrorCode::Malformed
                | ErrorCode::TooLarge
                | ErrorCode::Impossible
                | ErrorCode::Invalid => Code::DataErr,
                ErrorCode::Throttled => Code::TempFail,
                ErrorCode::Refused => Code::NoPerm,
                ErrorCode::Internal => Code::Supervisor,
            },
        }
    }
}

/// One connection to the supervisor.
#[derive(Debug)]
pub struct Client {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    next_id: u64,
}

impl Client {
    /// Connects to the socket at `path`.
    pub fn connect(path: &Path) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.to_owned(),
            source,
        })?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Self {
            writer: stream,
            reader,
            next_id: 1,
        })
    }

    /// Connects to the socket named by `SAFE_EXEC_SOCKET`.
    pub fn from_env() -> Result<Self, ClientError> {
        let path = std::env::var_os(SOCKET_ENV).ok_or(ClientError::NoSocket)?;
        Self::connect(Path::new(&path))
    }

    /// Sends `request` (an object with `op`) and returns the `result` of the reply.
    pub fn call(&mut self, mut request: Value) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        if let Some(object) = request.as_object_mut() {
            object.insert("id".into(), json!(id));
        }
        let mut line =
            serde_json::to_vec(&request).map_err(|err| ClientError::BadReply(err.to_string()))?;
        line.push(b'\n');
        self.writer.write_all(&line)?;

        let mut reply_text = String::new();
        let read = std::io::Read::take(&mut self.reader, MAX_FRAME as u64 * 4)
            .read_line(&mut reply_text)?;
        if read == 0 {
            return Err(ClientError::BadReply(
                "the supervisor closed the connection".into(),
            ));
        }
        let reply: Value = serde_json::from_str(&reply_text)
            .map_err(|err| ClientError::BadReply(err.to_string()))?;
        if reply.get("ok").and_then(Value::as_bool) == Some(true) {
            return Ok(reply.get("result").cloned().unwrap_or(Value::Null));
        }
        let error: ErrorReply = reply
            .get("error")
            .cloned()
            .and_then(|error| serde_json::from_value(error).ok())
            .ok_or_else(|| ClientError::BadReply(reply_text.trim().to_owned()))?;
        Err(ClientError::Rejected {
            code: error.code,
            message: error.message,
            retry_after_seconds: error.retry_after_seconds,
        })
    }

    /// Like [`Client::call`], but waits and retries while the reply is `throttled`.
    pub fn call_patiently(&mut self, request: Value) -> Result<Value, ClientError> {
        let deadline = Instant::now() + THROTTLE_PATIENCE;
        loop {
            match self.call(request.clone()) {
                Err(ClientError::Rejected {
                    code: ErrorCode::Throttled,
                    retry_after_seconds,
                    ..
                }) if Instant::now() < deadline => {
                    let wait = Duration::from_secs_f64(
                        retry_after_seconds.unwrap_or(0.05).clamp(0.001, 1.0),
                    );
                    std::thread::sleep(wait);
                }
                other => return other,
            }
        }
    }
}

/// Runs `safe-exec client ...`.
pub fn run_command(command: ClientCommand) -> Outcome {
    let mut client = Client::from_env()?;
    match command {
        ClientCommand::Rate(ClientRateCommand::Acquire { bucket, cost, wait }) => {
            acquire(&mut client, &bucket, cost, wait)
        }
        ClientCommand::Audit(args) => audit(&mut client, args),
        ClientCommand::Guard(ClientGuardCommand::Email(args)) => {
            let json = args.json;
            let message = message_from_args(args)?;
            let mut request = serde_json::to_value(&message)
                .map_err(|err| Failure::new(Code::DataErr, err.to_string()))?;
            request["op"] = json!("guard_email");
            let result = client.call_patiently(request)?;
            let decision: crate::guard::Decision = decision_from(&result)?;
            crate::guard::command::print_decision(&decision, json);
            Ok(exit_code(&decision))
        }
    }
}

fn acquire(client: &mut Client, bucket: &str, cost: u32, wait: Option<String>) -> Outcome {
    let deadline = match wait {
        Some(text) => Some(Instant::now() + parse_wait(&text)?),
        None => None,
    };
    loop {
        let result =
            client.call_patiently(json!({ "op": "acquire", "bucket": bucket, "cost": cost }))?;
        let tokens = result.get("tokens").and_then(Value::as_f64).unwrap_or(0.0);
        if result.get("granted").and_then(Value::as_bool) == Some(true) {
            println!("granted {cost} from {bucket}; {tokens:.2} left");
            return Ok(0);
        }
        let retry_after = Duration::from_secs_f64(
            result
                .get("retry_after_seconds")
                .and_then(Value::as_f64)
                .unwrap_or(1.0)
                .max(0.0),
        );
        let remaining = deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()));
        if remaining.is_some_and(|remaining| remaining >= retry_after) {
            std::thread::sleep(retry_after.max(Duration::from_millis(1)));
            continue;
        }
        return Err(Failure::new(
            Code::TempFail,
            format!(
                "rate limited: {bucket} has {tokens:.2} tokens; {cost} available in {}",
                format_wait(retry_after)
            ),
        ));
    }
}

fn audit(client: &mut Client, args: ClientAuditArgs) -> Outcome {
    let mut details = Map::new();
    for pair in &args.details {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(Failure::new(
                Code::Usage,
                format!("invalid --detail {pair:?}; write KEY=VALUE"),
            ));
        };
        details.insert(key.to_owned(), Value::String(value.to_owned()));
    }
    client.call_patiently(
        json!({ "op": "audit", "event": args.event, "level": args.level, "details": details }),
    )?;
    Ok(0)
}

fn decision_from(result: &Value) -> Result<crate::guard::Decision, Failure> {
    serde_json::from_value(result.clone()).map_err(|err| {
        Failure::new(
            Code::Supervisor,
            format!("the supervisor sent an invalid decision: {err}"),
        )
    })
}
