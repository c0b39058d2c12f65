//! The e-mail guard: decides whether one message may be sent.
//!
//! Checks, in order: off-limits recipients (To, Cc and Bcc), the confidence
//! threshold of the message's tier, the suspicious-content patterns, and last
//! the `email_send` bucket, which is consumed only when every other check
//! passes. The decision lists every reason. `guard email` outside a run and
//! the supervisor's request channel inside one both call [`Guard::decide`]
//! and then [`audit_decision`].

pub mod cache;
pub mod command;
pub mod patterns;
pub mod recipients;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::audit::{Actor, AuditError, AuditLog, Level};
use crate::exit::{Code, HasExitCode};
use crate::policy::EmailPolicy;
use crate::policy::Policy;
use crate::policy::resolve::AuditOptions;
use crate::policy::units::RateSpec;
use crate::ratelimit::{Acquired, Limiter, RateError};
use cache::Cache;
use patterns::ContentChecks;

/// The rate-limit bucket every allowed message takes a token from.
pub const EMAIL_BUCKET: &str = "email_send";

/// Maximum number of recipients of one message, across To, Cc and Bcc.
pub const MAX_RECIPIENTS: usize = 100;

/// A guard request that could not be decided.
#[derive(Debug, Error)]
pub enum GuardError {
    #[error(
        "app {app:?} has no `email` section in its policy, so the e-mail guard has nothing to check against"
    )]
    Disabled { app: String },

    #[error("invalid e-mail request: {0}")]
    InvalidMessage(String),

    #[error("invalid suspicious pattern {pattern:?}: {message}")]
    Pattern { pattern: String, message: String },

    #[error("failed to use the guard cache {path}: {source}")]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(transparent)]
    Rate(#[from] RateError),

    #[error(transparent)]
    Audit(#[from] AuditError),
}

impl HasExitCode for GuardError {
    fn exit_code(&self) -> Code {
        match self {
            GuardError::Disabled { .. }
            | GuardError::InvalidMessage(_)
            | GuardError::Pattern { .. } => Code::DataErr,
            GuardError::Cache { .. } => Code::Supervisor,
            GuardError::Rate(err) => err.exit_code(),
            GuardError::Audit(err) => err.exit_code(),
        }
    }
}

/// One message for the guard.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailMessage {
    pub to: Vec<String>,
    #[serde(default)]
    pub cc: Vec<String>,
    #[serde(default)]
    pub bcc: Vec<String>,
    pub subject: String,
    #[serde(default)]
    pub body: String,
    /// Tier of the message; the policy maps it to a minimum confidence.
    pub tier: u32,
    /// Classifier confidence from 0 to 1.
    pub confidence: f64,
}

impl EmailMessage {
    fn validate(&self) -> Result<(), GuardError> {
        let invalid = |message: String| Err(GuardError::InvalidMessage(message));
        if self.to.is_empty() {
            return invalid("at least one To recipient is required".into());
        }
        let count = self.to.len() + self.cc.len() + self.bcc.len();
        if count > MAX_RECIPIENTS {
            return invalid(format!(
                "{count} recipients; at most {MAX_RECIPIENTS} are accepted"
            ));
        }
        for address in self.to.iter().chain(&self.cc).chain(&self.bcc) {
            let bare = recipients::normalize(address);
            if recipients::domain(&bare).is_none() || bare.contains(char::is_whitespace) {
                return invalid(format!("recipient {address:?} is not an e-mail address"));
            }
        }
        if !self.confidence.is_finite() || !(0.0..=1.0).contains(&self.confidence) {
            return invalid(format!("confidence {} is outside 0 to 1", self.confidence));
        }
        Ok(())
    }

    fn recipient_domains(&self) -> Vec<String> {
        let mut domains: Vec<String> = self
            .to
            .iter()
            .chain(&self.cc)
            .chain(&self.bcc)
            .filter_map(|address| {
                recipients::domain(&recipients::normalize(address)).map(str::to_owned)
            })
            .collect();
        domains.sort();
        domains.dedup();
        domains
    }
}

/// Why a message was blocked: a stable code and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    pub code: String,
    pub detail: String,
}

impl Reason {
    /// Builds a reason.
    pub fn new(code: &str, detail: String) -> Self {
        Self {
            code: code.to_owned(),
            detail,
        }
    }
}

/// The guard's decision on one message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decision {
    /// True when the message may be sent; a token was taken from `email_send`.
    pub allowed: bool,
    /// Every reason the message was blocked; empty when allowed.
    pub reasons: Vec<Reason>,
    /// True when the content checks came from the cache.
    #[serde(default)]
    pub cached: bool,
    /// Tokens left in `email_send` after an allowed message, when the bucket exists.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tokens_left: Option<f64>,
    /// When blocked only by the rate limit: seconds until a token is available.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub retry_after_seconds: Option<f64>,
}

impl Decision {
    /// Returns true when the rate limit is the only reason for the block.
    pub fn rate_limited_only(&self) -> bool {
        !self.allowed
            && self
                .reasons
                .iter()
                .all(|reason| reason.code == "rate_limited")
    }
}

/// The guard of one app.
pub struct Guard {
    app: String,
    email: EmailPolicy,
    limits: BTreeMap<String, RateSpec>,
    checks: ContentChecks,
    fingerprint: String,
    cache: Cache,
    limiter: Limiter,
}

impl Guard {
    /// Prepares the guard of `policy`, with its cache in `cache_dir`.
    pub fn new(
        policy: &Policy,
        limiter: Limiter,
        cache_dir: &std::path::Path,
    ) -> Result<Self, GuardError> {
        if !policy.email.enabled {
            return Err(GuardError::Disabled {
                app: policy.app.clone(),
            });
        }
        let checks = ContentChecks::new(&policy.email.suspicious_patterns)?;
        let fingerprint = serde_json::to_vec(&policy.email)
            .map(|bytes| hex::encode(Sha256::digest(bytes)))
            .unwrap_or_default();
        Ok(Self {
            app: policy.app.clone(),
            email: policy.email.clone(),
            limits: policy.rate_limits.clone(),
            checks,
            fingerprint,
            cache: Cache::open(cache_dir)?,
            limiter,
        })
    }

    /// Decides whether `message` may be sent, taking an `email_send` token when it may.
    pub fn decide(&self, message: &EmailMessage) -> Result<Decision, GuardError> {
        message.validate()?;
        let key = self.cache_key(message);
        let cached = self.cache.get(&self.app, &key)?;
        let (reasons, from_cache) = match cached {
            Some(reasons) => (reasons, true),
            None => {
                let reasons = self.classify(message);
                self.cache
                    .put(&self.app, &key, &reasons, self.email.cache_ttl)?;
                (reasons, false)
            }
        };
        let mut decision = Decision {
            allowed: false,
            reasons,
            cached: from_cache,
            tokens_left: None,
            retry_after_seconds: None,
        };
        if !decision.reasons.is_empty() {
            return Ok(decision);
        }

        if !self.limits.contains_key(EMAIL_BUCKET) {
            decision.allowed = true;
            return Ok(decision);
        }
        match self
            .limiter
            .acquire(&self.app, &self.limits, EMAIL_BUCKET, 1)?
        {
            Acquired::Granted { tokens } => {
                decision.allowed = true;
                decision.tokens_left = Some(tokens);
            }
            Acquired::Denied { retry_after, .. } => {
                decision.reasons.push(Reason::new(
                    "rate_limited",
                    format!(
                        "the {EMAIL_BUCKET} bucket is empty; the next token is available in {}",
                        humantime::format_duration(Duration::from_secs(
                            retry_after.as_secs().max(1)
                        ))
                    ),
                ));
                decision.retry_after_seconds = Some(retry_after.as_secs_f64());
            }
        }
        Ok(decision)
    }

    fn classify(&self, message: &EmailMessage) -> Vec<Reason> {
        let fields: [(&str, &[String]); 3] = [
            ("to", &message.to),
            ("cc", &message.cc),
            ("bcc", &message.bcc),
        ];
        let mut reasons = recipients::check_off_limits(&fields, &self.email.off_limits);

        match self.email.thresholds.get(&message.tier) {
            Some(&threshold) if message.confidence < threshold => reasons.push(Reason::new(
                "below_threshold",
                format!(
                    "confidence {} is below the threshold {threshold} of tier {}",
                    message.confidence, message.tier
                ),
            )),
            Some(_) => {}
            None => reasons.push(Reason::new(
                "unknown_tier",
                format!(
                    "tier {} has no confidence threshold in the policy (configured tiers: {})",
                    message.tier,
                    self.email
                        .thresholds
                        .keys()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }

        reasons.extend(self.checks.check(
            &message.subject,
            &message.body,
            &message.recipient_domains(),
        ));
        reasons
    }

    fn cache_key(&self, message: &EmailMessage) -> String {
        let canonical = json!({
            "policy": self.fingerprint,
            "to": message.to,
            "cc": message.cc,
            "bcc": message.bcc,
            "subject": message.subject,
            "body": message.body,
            "tier": message.tier,
            "confidence": message.confidence,
        });
        hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
    }
}

/// Writes the EMAIL_SENT or EMAIL_BLOCKED record of a decision (EMAIL_SENT
/// only when `log_all_sends` is set), plus API_RATE_LIMIT when the rate limit blocked it.
pub fn audit_decision(
    log: &AuditLog,
    options: &AuditOptions,
    message: &EmailMessage,
    decision: &Decision,
) -> Result<(), AuditError> {
    let mut details = json!({
        "to": message.to,
        "cc": message.cc,
        "bcc": message.bcc,
        "tier": message.tier,
        "confidence": message.confidence,
        "reasons": decision.reasons,
        "cached": decision.cached,
    });
    if options.store_drafts {
        details["draft"] = json!({ "subject": message.subject, "body": message.body });
    }

    if decision.allowed {
        if options.log_all_sends {
            log.append("EMAIL_SENT", Level::Info, Actor::Supervisor, details)?;
        }
        return Ok(());
    }
    log.append("EMAIL_BLOCKED", Level::Warning, Actor::Supervisor, details)?;
    if let Some(retry_after) = decision.retry_after_seconds {
        log.append(
            "API_RATE_LIMIT",
            Level::Warning,
            Actor::Supervisor,
            json!({ "bucket": EMAIL_BUCKET, "cost": 1, "retry_after_seconds": retry_after, "source": "guard" }),
        )?;
    }
    Ok(())
}
