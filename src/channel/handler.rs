//! Carries out channel requests for one run: rate-limit tokens, app events
//! and e-mail guard decisions.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::protocol::{
    APP_EVENTS, ErrorCode, ErrorReply, MAX_EVENT_DETAILS, MAX_FRAME, Request, parse_request,
    reply_line,
};
use super::server::{ChannelError, ServerConfig};
use crate::audit::{Actor, AuditLog, Level};
use crate::guard::{EmailMessage, Guard, GuardError, audit_decision};
use crate::policy::resolve::AuditOptions;
use crate::policy::units::RateSpec;
use crate::ratelimit::{Acquired, Limiter, RateError, clock};

/// An in-memory token bucket on the monotonic clock, for the run's own request budget.
#[derive(Debug)]
struct Budget {
    tokens: f64,
    burst: f64,
    per_second: f64,
    updated: Instant,
}

impl Budget {
    fn new(per_second: f64, burst: f64) -> Self {
        Self {
            tokens: burst,
            burst,
            per_second,
            updated: Instant::now(),
        }
    }

    /// Takes one token, or returns the wait until one is available.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64(
            (1.0 - self.tokens) / self.per_second.max(f64::MIN_POSITIVE),
        ))
    }
}

/// Throttled requests since the last warning, so the log gets one line per second at most.
#[derive(Debug)]
struct ThrottleLog {
    dropped: u64,
    last_warning: Option<Instant>,
}

/// The request logic shared by every connection of one run.
pub struct Handler {
    app: String,
    run_id: String,
    limits: BTreeMap<String, RateSpec>,
    audit_options: AuditOptions,
    audit: Arc<AuditLog>,
    limiter: Limiter,
    guard: Result<Guard, String>,
    requests: Mutex<Budget>,
    events: Mutex<Budget>,
    throttle_log: Mutex<ThrottleLog>,
}

impl Handler {
    /// Prepares the handler from the server configuration.
    pub fn new(config: &ServerConfig) -> Result<Self, ChannelError> {
        let clock = clock::from_env().map_err(RateError::from)?;
        let limiter = Limiter::open(&config.context.ratelimit_dir(), Arc::from(clock))?;
        let guard = match Guard::new(
            &config.policy,
            limiter.clone(),
            &crate::guard::command::cache_dir(&config.context),
        ) {
            Ok(guard) => Ok(guard),
            Err(GuardError::Disabled { .. }) => Err(format!(
                "app {:?} has no `email` section in its policy, so the e-mail guard is not available",
                config.policy.app
            )),
            Err(err) => return Err(err.into()),
        };
        let limits = &config.limits;
        Ok(Self {
            app: config.policy.app.clone(),
            run_id: config.run_id.clone(),
            limits: config.policy.rate_limits.clone(),
            audit_options: config.policy.audit.clone(),
            audit: config.audit.clone(),
            limiter,
            guard,
            requests: Mutex::new(Budget::new(
                limits.requests_per_second,
                limits.request_burst,
            )),
            events: Mutex::new(Budget::new(limits.events_per_second, limits.event_burst)),
            throttle_log: Mutex::new(ThrottleLog {
                dropped: 0,
                last_warning: None,
            }),
        })
    }

    /// Returns the reply to a line longer than the frame limit.
    pub fn too_large(&self) -> Vec<u8> {
        if let Err(reply) = self.take_request_budget(Instant::now()) {
            return reply_line(&Value::Null, Err(reply));
        }
        let message =
            format!("request longer than {MAX_FRAME} bytes; it was skipped up to its newline");
        reply_line(
            &Value::Null,
            Err(ErrorReply::new(ErrorCode::TooLarge, message)),
        )
    }

    /// Carries out one request line (without its newline) and returns the reply line.
    pub fn handle_line(&self, line: &[u8], now: Instant) -> Vec<u8> {
        if let Err(reply) = self.take_request_budget(now) {
            return reply_line(&Value::Null, Err(reply));
        }
        let (id, request) = parse_request(line);
        let outcome = request.and_then(|request| self.handle(request, now));
        if let Err(error) = &outcome {
            tracing::debug!(app = %self.app, run_id = %self.run_id, code = ?error.code, message = %error.message, "request failed");
        }
        reply_line(&id, outcome)
    }

    fn take_request_budget(&self, now: Instant) -> Result<(), ErrorReply> {
        let taken = match self.requests.lock() {
            Ok(mut budget) => budget.take(now),
            Err(_) => Ok(()),
        };
        let Err(wait) = taken else { return Ok(()) };
        self.note_throttled(now);
        Err(throttled("too many requests from this run", wait))
    }

    fn note_throttled(&self, now: Instant) {
        let Ok(mut log) = self.throttle_log.lock() else {
            return;
        };
        log.dropped += 1;
        let due = log
            .last_warning
            .is_none_or(|last| now.saturating_duration_since(last) >= Duration::from_secs(1));
        if due {
            tracing::warn!(app = %self.app, run_id = %self.run_id, throttled = log.dropped, "throttling requests from the sandboxed app");
            log.dropped = 0;
            log.last_warning = Some(now);
        }
    }

    fn handle(&self, request: Request, now: Instant) -> Result<Value, ErrorReply> {
        match request {
            Request::Ping => Ok(json!({ "app": self.app, "run_id": self.run_id })),
            Request::Acquire { bucket, cost } => self.acquire(&bucket, cost),
            Request::Audit {
                event,
                level,
                details,
            } => self.record_event(&event, level.as_deref(), details, now),
            Request::GuardEmail(message) => self.guard_email(&message),
        }
    }

    fn acquire(&self, bucket: &str, cost: u32) -> Result<Value, ErrorReply> {
        match self.limiter.acquire(&self.app, &self.limits, bucket, cost) {
            Ok(Acquired::Granted { tokens }) => Ok(json!({ "granted": true, "tokens": tokens })),
            Ok(Acquired::Denied {
                tokens,
                retry_after,
            }) => {
                let details = json!({
                    "bucket": bucket,
                    "cost": cost,
                    "tokens": tokens,
                    "retry_after_seconds": retry_after.as_secs_f64(),
                    "source": "channel",
                });
                self.append("API_RATE_LIMIT", Level::Warning, Actor::Supervisor, details)?;
                Ok(
                    json!({ "granted": false, "tokens": tokens, "retry_after_seconds": retry_after.as_secs_f64() }),
                )
            }
            Err(err @ (RateError::UnknownBucket { .. } | RateError::Impossible { .. })) => {
                Err(ErrorReply::new(ErrorCode::Impossible, err.to_string()))
            }
            Err(err @ RateError::ZeroCost { .. }) => {
                Err(ErrorReply::new(ErrorCode::Invalid, err.to_string()))
            }
            Err(err) => Err(self.internal(&err)),
        }
    }

    fn record_event(
        &self,
        event: &str,
        level: Option<&str>,
        details: serde_json::Map<String, Value>,
        now: Instant,
    ) -> Result<Value, ErrorReply> {
        if !APP_EVENTS.contains(&event) {
            return Err(ErrorReply::new(
                ErrorCode::Invalid,
                format!(
                    "event type {event:?} is not one the app may record; use one of {}",
                    APP_EVENTS.join(", ")
                ),
            ));
        }
        let level = match level.map(str::to_ascii_uppercase).as_deref() {
            None | Some("INFO") => Level::Info,
            Some("WARNING") => Level::Warning,
            Some("CRITICAL") => Level::Critical,
            Some(other) => {
                return Err(ErrorReply::new(
                    ErrorCode::Invalid,
                    format!("invalid level {other:?}; use INFO, WARNING or CRITICAL"),
                ));
            }
        };
        let details = Value::Object(details);
        let size = details.to_string().len();
        if size > MAX_EVENT_DETAILS {
            return Err(ErrorReply::new(
                ErrorCode::Invalid,
                format!("event details are {size} bytes; at most {MAX_EVENT_DETAILS} are recorded"),
            ));
        }
        let taken = match self.events.lock() {
            Ok(mut budget) => budget.take(now),
            Err(_) => Ok(()),
        };
        if let Err(wait) = taken {
            self.note_throttled(now);
            return Err(throttled("too many audit events from this run", wait));
        }
        let seq = self.append(event, level, Actor::App, details)?;
        Ok(json!({ "recorded": true, "seq": seq }))
    }

    fn guard_email(&self, message: &EmailMessage) -> Result<Value, ErrorReply> {
        let guard = self
            .guard
            .as_ref()
            .map_err(|message| ErrorReply::new(ErrorCode::Invalid, message.clone()))?;
        let decision = match guard.decide(message) {
            Ok(decision) => decision,
            Err(err @ GuardError::InvalidMessage(_)) => {
                return Err(ErrorReply::new(ErrorCode::Invalid, err.to_string()));
            }
            Err(err) => return Err(self.internal(&err)),
        };
        audit_decision(&self.audit, &self.audit_options, message, &decision)
            .map_err(|err| self.internal(&err))?;
        serde_json::to_value(&decision).map_err(|err| self.internal(&err))
    }

    fn append(
        &self,
        event: &str,
        level: Level,
        actor: Actor,
        details: Value,
    ) -> Result<u64, ErrorReply> {
        self.audit
            .append(event, level, actor, details)
            .map_err(|err| self.internal(&err))
    }

    fn internal(&self, err: &dyn std::fmt::Display) -> ErrorReply {
        tracing::error!(app = %self.app, run_id = %self.run_id, error = %err, "failed to carry out a channel request");
        ErrorReply::new(
            ErrorCode::Internal,
            "the supervisor failed to carry out the request; see its log",
        )
    }
}

fn throttled(message: &str, wait: Duration) -> ErrorReply {
    let mut reply = ErrorReply::new(ErrorCode::Throttled, format!("{message}; retry later"));
    reply.retry_after_seconds = Some(wait.as_secs_f64());
    reply
}
