//! Recipient addresses and the policy's off-limits list.
//!
//! An off-limits entry is an exact address or a pattern with `*` wildcards
//! such as `*@lawfirm.example` or `*@*.lawfirm.example`; matching ignores
//! case. Addresses may be written as `Name <addr@domain>`.

use super::Reason;

/// Returns the bare, lowercased address of `text` (`Name <a@b>` or `a@b`).
pub fn normalize(text: &str) -> String {
    let trimmed = text.trim();
    let bare = match (trimmed.rfind('<'), trimmed.rfind('>')) {
        (Some(open), Some(close)) if open < close => &trimmed[open + 1..close],
        _ => trimmed,
    };
    bare.trim().trim_end_matches('.').to_lowercase()
}

/// Returns the domain part of a normalized address.
pub fn domain(address: &str) -> Option<&str> {
    address
        .rsplit_once('@')
        .map(|(_, domain)| domain)
        .filter(|domain| !domain.is_empty())
}

/// Returns one reason per recipient that matches an off-limits entry.
pub fn check_off_limits(fields: &[(&str, &[String])], off_limits: &[String]) -> Vec<Reason> {
    let patterns: Vec<String> = off_limits
        .iter()
        .map(|pattern| pattern.trim().to_lowercase())
        .collect();
    let mut reasons = Vec::new();
    for (field, addresses) in fields {
        for raw in *addresses {
            let address = normalize(raw);
            if let Some(pattern) = patterns
                .iter()
                .find(|pattern| wildcard_match(pattern, &address))
            {
                reasons.push(Reason::new(
                    "off_limits",
                    format!("{field} recipient {address} matches the off-limits entry {pattern}"),
                ));
            }
        }
    }
    reasons
}

/// Matches `text` against `pattern`, where `*` stands for any run of characters.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == '*' {
            backtrack = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star, matched)) = backtrack {
            p = star + 1;
            t = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_display_names() {
        assert_eq!(normalize("Bob Smith <Bob@Example.COM>"), "bob@example.com");
        assert_eq!(normalize("  ann@x.org "), "ann@x.org");
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*@lawfirm.example", "a@lawfirm.example"));
        assert!(!wildcard_match(
            "*@lawfirm.example",
            "a@notlawfirm.example.com"
        ));
        assert!(wildcard_match(
            "*@*.lawfirm.example",
            "a@mail.lawfirm.example"
        ));
        assert!(!wildcard_match(
            "*@lawfirm.example",
            "a@mail.lawfirm.example"
        ));
        assert!(wildcard_match(
            "sensitive@example.com",
            "sensitive@example.com"
        ));
    }
}
