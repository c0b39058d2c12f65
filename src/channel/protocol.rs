//! The request protocol: one JSON object per line each way.
//!
//! A request is an object with an `op` field and, optionally, an `id` that
//! the reply echoes so a client may pipeline requests on one connection:
//!
//! ```text
//! {"id":1,"op":"acquire","bucket":"email_send","cost":1}
//! {"id":1,"ok":true,"result":{"granted":true,"tokens":9.0}}
//! {"id":2,"op":"audit","event":"SMS_SENT","level":"INFO","details":{"to":"+15550100"}}
//! {"id":3,"op":"guard_email","to":["a@example.com"],"subject":"Hi","body":"...","tier":1,"confidence":0.97}
//! {"id":4,"op":"ping"}
//! ```
//!
//! A failed request gets `{"id":…,"ok":false,"error":{"code":…,"message":…}}`.
//! A line longer than [`MAX_FRAME`] bytes gets the `too_large`
//! error and skipped up to its newline.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::guard::EmailMessage;

/// Maximum length of a request line, newline included, in bytes.
pub const MAX_FRAME: usize = 64 * 1024;

/// The most bytes of `details` one app event may carry, serialized.
pub const MAX_EVENT_DETAILS: usize = 8 * 1024;

/// Event types the app may record; the supervisor's own types (RUN_START,
/// PREFLIGHT, RUN_END, CLEANUP and the rest) are rejected.
pub const APP_EVENTS: &[&str] = &[
    "AUTH_SUCCESS",
    "AUTH_FAILURE",
    "EMAIL_SENT",
    "EMAIL_BLOCKED",
    "SMS_SENT",
    "SMS_ESCALATION",
    "API_CALL",
    "API_RATE_LIMIT",
    "SECURITY_VIOLATION",
    "CREDENTIAL_ACCESS",
];

/// One request, after the `id` is taken out.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Take `cost` tokens from a bucket of the run's app.
    Acquire {
        bucket: String,
        #[serde(default = "one")]
        cost: u32,
    },
    /// Record an app event.
    Audit {
        event: String,
        #[serde(default)]
        level: Option<String>,
        #[serde(default)]
        details: Map<String, Value>,
    },
    /// Ask the e-mail guard about one message.
    GuardEmail(EmailMessage),
    /// Check that the supervisor answers.
    Ping,
}

fn one() -> u32 {
    1
}

/// Error codes of failed requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not a JSON object, no known `op`, or wrong fields.
    Malformed,
    /// The line is longer than [`MAX_FRAME`].
    TooLarge,
    /// The run sent too many requests; retry after `retry_after_seconds`.
    Throttled,
    /// The peer is not a process of this run, or too many connections are open.
    Refused,
    /// The request names a bucket the policy lacks, or asks for more than the bucket holds.
    Impossible,
    /// The request is well-formed but its values are not accepted.
    Invalid,
    /// The supervisor failed to carry out a valid request.
    Internal,
}

/// A request's error as sent to the client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub retry_after_seconds: Option<f64>,
}

impl ErrorReply {
    /// Builds an error reply.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_seconds: None,
        }
    }
}

/// Splits a request line into its `id` and the request, or an error reply.
pub fn parse_request(line: &[u8]) -> (Value, Result<Request, ErrorReply>) {
    let mut value: Value = match serde_json::from_slice(line) {
        Ok(value) => value,
        Err(err) => {
            return (
                Value::Null,
                Err(ErrorReply::new(
                    ErrorCode::Malformed,
                    format!("invalid JSON: {err}"),
                )),
            );
        }
    };
    let Some(object) = value.as_object_mut() else {
        return (
            Value::Null,
            Err(ErrorReply::new(
                ErrorCode::Malformed,
                "a request must be a JSON object",
            )),
        );
    };
    let id = object.remove("id").unwrap_or(Value::Null);
    let request = serde_json::from_value::<Request>(value)
        .map_err(|err| ErrorReply::new(ErrorCode::Malformed, format!("invalid request: {err}")));
    (id, request)
}

/// Builds the reply line (with its newline) for a result or an error.
pub fn reply_line(id: &Value, outcome: Result<Value, ErrorReply>) -> Vec<u8> {
    let reply = match outcome {
        Ok(result) => serde_json::json!({ "id": id, "ok": true, "result": result }),
        Err(error) => serde_json::json!({ "id": id, "ok": false, "error": error }),
    };
    let mut line = serde_json::to_vec(&reply).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests_and_ids() {
        let (id, request) = parse_request(br#"{"id":7,"op":"acquire","bucket":"b"}"#);
        assert_eq!(id, Value::from(7));
        assert!(matches!(request, Ok(Request::Acquire { cost: 1, .. })));

        let (_, request) = parse_request(
            br#"{"op":"guard_email","to":["a@b.c"],"subject":"s","tier":1,"confidence":1}"#,
        );
        assert!(matches!(request, Ok(Request::GuardEmail(_))));
    }

    #[test]
    fn rejects_unknown_fields_and_ops() {
        let (_, request) = parse_request(
            br#"{"op":"guard_email","to":["a@b.c"],"subject":"s","tier":1,"confidence":1,"x":1}"#,
        );
        assert!(request.is_err());
        let (_, request) = parse_request(br#"{"op":"acquire","bucket":"b","extra":1}"#);
        assert!(request.is_err());
        let (_, request) = parse_request(br#"{"op":"reset"}"#);
        assert!(request.is_err());
        let (_, request) = parse_request(b"[1,2]");
        assert!(request.is_err());
    }
}
