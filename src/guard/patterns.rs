//! The guard's content checks: built-in suspicious patterns, links to IP
//! literals, punycode hosts and look-alikes of the recipients' domains, and
//! the policy's own regular expressions.
//!
//! The built-in patterns are kept as data so the list can be read and
//! extended in one place. Each is matched case-insensitively against the
//! subject and the body together.

use regex::Regex;

use super::{GuardError, Reason};

/// A built-in pattern: the reason code it produces, its regex and what it looks for.
struct Builtin {
    code: &'static str,
    pattern: &'static str,
    what: &'static str,
}

const BUILTINS: &[Builtin] = &[
    Builtin {
        code: "credential_request",
        pattern: r"(?i)\b(send|share|provide|confirm|verify|enter|reply with|give|tell)\b[^.?!\n]{0,60}\b(password|passcode|passphrase|pin|credentials?|(verification|security|login|one[- ]time|2fa|mfa|otp|authentication|sms) codes?|the code (you|we) (received|sent|got))\b",
        what: "asks for a password or a one-time code",
    },
    Builtin {
        code: "gift_card_request",
        pattern: r"(?i)\b(buy|purchase|get|send|pick up)\b[^.?!\n]{0,60}\b(gift ?cards?|itunes cards?|steam cards?|google play cards?)\b",
        what: "asks for gift cards",
    },
    Builtin {
        code: "wire_transfer_request",
        pattern: r"(?i)\b(wire|transfer|send|remit)\b[^.?!\n]{0,60}(\b(funds|money|payment)\b|[$€£] ?\d|\b\d+ ?(usd|eur|gbp|dollars|euros)\b)[^.?!\n]{0,80}\b(account|iban|routing|swift|bic|bank|wallet|bitcoin|btc|crypto)",
        what: "asks for a wire transfer",
    },
    Builtin {
        code: "payment_request",
        pattern: r"(?i)\b(please|kindly|need you to|can you|could you)\b[^.?!\n]{0,40}\b(pay|make (a|the) payment|settle|send (the )?(money|funds|payment))\b",
        what: "asks for a payment",
    },
];

const URGENCY: &str = r"(?i)\b(urgent(ly)?|immediately|asap|right away|right now|within (the|an|one) hour|today only|act now|final notice|before (it'?s too late|end of day)|time[- ]sensitive)\b";
const PAYMENT_WORDS: &str = r"(?i)\b(pay|payment|invoice|wire|transfer|gift ?cards?|bank|funds|money|bitcoin|crypto)\b|[$€£] ?\d";
const LINK_HOST: &str =
    r"(?i)\b(?:https?|ftp)://(?:[^\s/@]*@)?(\[[0-9a-f:.]+\]|[^\s/:?#<>()\[\]]+)";

/// The compiled content checks of one policy.
#[derive(Debug)]
pub struct ContentChecks {
    builtins: Vec<(&'static str, &'static str, Regex)>,
    urgency: Regex,
    payment_words: Regex,
    link_host: Regex,
    policy: Vec<(String, Regex)>,
}

impl ContentChecks {
    /// Compiles the built-in patterns and the policy's `suspicious_patterns`.
    pub fn new(policy_patterns: &[String]) -> Result<Self, GuardError> {
        let builtin = |pattern: &str| {
            Regex::new(pattern).map_err(|err| GuardError::Pattern {
                pattern: pattern.to_owned(),
                message: err.to_string(),
            })
        };
        let mut builtins = Vec::new();
        for entry in BUILTINS {
            builtins.push((entry.code, entry.what, builtin(entry.pattern)?));
        }
        let mut policy = Vec::new();
        for pattern in policy_patterns {
            let regex = compile_policy_pattern(pattern).map_err(|message| GuardError::Pattern {
                pattern: pattern.clone(),
                message,
            })?;
            policy.push((pattern.clone(), regex));
        }
        Ok(Self {
            builtins,
            urgency: builtin(URGENCY)?,
            payment_words: builtin(PAYMENT_WORDS)?,
            link_host: builtin(LINK_HOST)?,
            policy,
        })
    }

    /// Returns a reason for every check that `subject` and `body` fail.
    pub fn check(&self, subject: &str, body: &str, recipient_domains: &[String]) -> Vec<Reason> {
        let text = format!("{subject}\n{body}");
        let mut reasons = Vec::new();

        for (code, what, regex) in &self.builtins {
            if let Some(found) = regex.find(&text) {
                reasons.push(Reason::new(
                    code,
                    format!("the message {what}: {:?}", excerpt(found.as_str())),
                ));
            }
        }

        if let Some(urgent) = self.urgency.find(&text)
            && let Some(payment) = self.payment_words.find(&text)
        {
            reasons.push(Reason::new(
                "urgent_payment",
                format!(
                    "the message pairs urgency ({:?}) with payment ({:?})",
                    urgent.as_str(),
                    payment.as_str()
                ),
            ));
        }

        for capture in self.link_host.captures_iter(&text) {
            let Some(host) = capture.get(1) else { continue };
            reasons.extend(check_host(host.as_str(), recipient_domains));
        }

        for (pattern, regex) in &self.policy {
            if let Some(found) = regex.find(&text) {
                reasons.push(Reason::new(
                    "policy_pattern",
                    format!(
                        "the message matches the policy pattern {pattern:?}: {:?}",
                        excerpt(found.as_str())
                    ),
                ));
            }
        }
        dedup(reasons)
    }
}

/// Compiles one of a policy's `suspicious_patterns`, case-insensitively, and
/// returns the regex error text when it is invalid.
pub fn compile_policy_pattern(pattern: &str) -> Result<Regex, String> {
    regex::RegexBuilder::new(pattern)
        .case_insensitive(true)
        .size_limit(1 << 20)
        .build()
        .map_err(|err| {
            // The syntax error repeats the pattern over several lines; keep the last line, which names the fault.
            let text = err.to_string();
            let last = text.lines().last().unwrap_or(&text).trim();
            last.strip_prefix("error: ").unwrap_or(last).to_owned()
        })
}

fn check_host(raw_host: &str, recipient_domains: &[String]) -> Vec<Reason> {
    let host = raw_host.trim_end_matches('.').to_lowercase();
    let mut reasons = Vec::new();
    if is_ip_literal(&host) {
        reasons.push(Reason::new(
            "ip_literal_link",
            format!("a link points to the IP address {host}"),
        ));
        return reasons;
    }
    if host.split('.').any(|label| label.starts_with("xn--")) || !host.is_ascii() {
        reasons.push(Reason::new(
            "punycode_domain",
            format!("a link points to the internationalised domain {host}, which can imitate another name"),
        ));
    }
    for domain in recipient_domains {
        if is_lookalike(&host, domain) {
            reasons.push(Reason::new(
                "lookalike_domain",
                format!(
                    "a link points to {host}, which looks like the recipient's domain {domain}"
                ),
            ));
        }
    }
    reasons
}

fn is_ip_literal(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>().is_ok()
        || (host.chars().all(|c| c.is_ascii_digit() || c == '.') && host.contains('.'))
        || (!host.is_empty() && host.chars().all(|c| c.is_ascii_digit()))
}

/// Returns true when `host` is not `domain` (nor a subdomain of it) but
/// resembles it: the same name under another top-level domain, the name with
/// extra words, one edit away, or equal once look-alike characters are mapped.
pub fn is_lookalike(host: &str, domain: &str) -> bool {
    let host = host.to_lowercase();
    let domain = domain.to_lowercase();
    if host == domain || host.ends_with(&format!(".{domain}")) {
        return false;
    }
    let (host_name, host_tld) = split_registrable(&host);
    let (name, tld) = split_registrable(&domain);
    if name.len() < 4 {
        return false;
    }
    if host_name == name {
        return host_tld != tld;
    }
    let host_words: Vec<&str> = host_name.split('-').collect();
    if host_words.len() > 1 && host_words.contains(&name) {
        return true;
    }
    skeleton(host_name) == skeleton(name) || edit_distance(host_name, name) == 1
}

/// Splits `a.b.example.com` into (`example`, `com`).
fn split_registrable(host: &str) -> (&str, &str) {
    let mut labels = host.rsplit('.');
    let tld = labels.next().unwrap_or("");
    let name = labels.next().unwrap_or("");
    (name, tld)
}

/// Maps characters commonly swapped for one another in phishing domains.
fn skeleton(name: &str) -> String {
    name.replace("rn", "m")
        .replace("vv", "w")
        .chars()
        .map(|c| match c {
            '0' => 'o',
            '1' | 'i' | '|' => 'l',
            '3' => 'e',
            '5' => 's',
            '@' => 'a',
            other => other,
        })
        .collect()
}

/// Optimal string alignment distance: insertions, deletions, substitutions
/// and swaps of adjacent characters each count one.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut table = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in table.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in table[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (table[i - 1][j] + 1)
                .min(table[i][j - 1] + 1)
                .min(table[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(table[i - 2][j - 2] + 1);
            }
            table[i][j] = best;
        }
    }
    table[a.len()][b.len()]
}

fn excerpt(text: &str) -> String {
    let mut short: String = text.chars().take(80).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short
}

fn dedup(reasons: Vec<Reason>) -> Vec<Reason> {
    let mut seen = std::collections::BTreeSet::new();
    reasons
        .into_iter()
        .filter(|reason| seen.insert((reason.code.clone(), reason.detail.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookalikes() {
        assert!(is_lookalike("examp1e.com", "example.com"));
        assert!(is_lookalike("example.net", "example.com"));
        assert!(is_lookalike("example-login.com", "example.com"));
        assert!(is_lookalike("exmaple.com", "example.com"));
        assert!(is_lookalike("login.exarnple.com", "example.com"));
        assert!(!is_lookalike("example.com", "example.com"));
        assert!(!is_lookalike("mail.example.com", "example.com"));
        assert!(!is_lookalike("python.org", "example.com"));
    }

    #[test]
    fn ip_literals() {
        assert!(is_ip_literal("192.168.1.10"));
        assert!(is_ip_literal("[::1]"));
        assert!(is_ip_literal("3232235777"));
        assert!(!is_ip_literal("example.com"));
    }
}
