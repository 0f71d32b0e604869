//! Keeping secrets given in SQL out of what `clipql sql` prints.
//!
//! A table's S3 credentials can be written in its `OPTIONS (...)`. Our own
//! errors never repeat option values, but SQL parsing errors quote the token
//! they stopped at, and in a mistyped list (a missing comma, a missing key)
//! that token can be a secret. So before anything is printed, every string
//! in an `OPTIONS` list is masked, except option names and the values of
//! options known not to be secret (`aws.region`, `aws.endpoint`, ...).

use std::sync::Mutex;

/// Options whose values are not secret and help to read an error.
const PUBLIC_OPTIONS: &[&str] = &[
    "aws.region",
    "aws.endpoint",
    "aws.allow_http",
    "aws.max_retries",
    "aws.retry_timeout_secs",
    "aws.profile",
    "aws.skip_signature",
    "aws.virtual_hosted_style_request",
];

static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Remembers the strings of `sql`'s `OPTIONS` lists that must never be
/// printed (see the module docs).
pub fn remember_secrets(sql: &str) {
    let found = option_secrets(sql);
    if let Ok(mut secrets) = SECRETS.lock() {
        secrets.extend(found);
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
    }
}

/// `text` with every remembered secret masked.
pub fn redact(text: &str) -> String {
    let mut out = text.to_string();
    if let Ok(secrets) = SECRETS.lock() {
        for secret in secrets.iter() {
            out = out.replace(secret.as_str(), "***");
        }
    }
    out
}

/// An option name: `word.word...`, letters, digits and `_`.
fn is_option_name(s: &str) -> bool {
    s.contains('.')
        && s.split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
}

enum Token {
    Str(String),
    Word(String),
    Open,
    Close,
    Other,
}

fn tokens(sql: &str) -> Vec<Token> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\'' | '"' => {
                let quote = c;
                let mut s = String::new();
                i += 1;
                while i < chars.len() {
                    if chars[i] == quote {
                        if chars.get(i + 1) == Some(&quote) {
                            s.push(quote);
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    s.push(chars[i]);
                    i += 1;
                }
                i += 1;
                out.push(if quote == '\'' {
                    Token::Str(s)
                } else {
                    Token::Word(s)
                });
            }
            '(' => {
                out.push(Token::Open);
                i += 1;
            }
            ')' => {
                out.push(Token::Close);
                i += 1;
            }
            c if c.is_alphanumeric() || c == '_' || c == '.' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || "_.".contains(chars[i])) {
                    i += 1;
                }
                out.push(Token::Word(chars[start..i].iter().collect()));
            }
            _ => {
                if !c.is_whitespace() {
                    out.push(Token::Other);
                }
                i += 1;
            }
        }
    }
    out
}

/// The strings in `sql`'s `OPTIONS (...)` lists that may be secret.
fn option_secrets(sql: &str) -> Vec<String> {
    let tokens = tokens(sql);
    let mut secrets = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let is_options = matches!(&tokens[i], Token::Word(w) if w.eq_ignore_ascii_case("options"));
        if !(is_options && matches!(tokens.get(i + 1), Some(Token::Open))) {
            i += 1;
            continue;
        }
        i += 2;
        let mut previous_name: Option<String> = None;
        while i < tokens.len() && !matches!(tokens[i], Token::Close) {
            match &tokens[i] {
                Token::Str(s) | Token::Word(s) if is_option_name(s) && previous_name.is_none() => {
                    previous_name = Some(s.to_ascii_lowercase());
                }
                Token::Str(s) | Token::Word(s) => {
                    let public = previous_name
                        .as_deref()
                        .is_some_and(|n| PUBLIC_OPTIONS.contains(&n));
                    // Shorter strings are no secret, and masking them would
                    // garble the message.
                    if !public && s.chars().count() >= 4 {
                        secrets.push(s.clone());
                    }
                    previous_name = None;
                }
                Token::Other => {}
                Token::Open | Token::Close => previous_name = None,
            }
            i += 1;
        }
    }
    secrets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_option_values_but_names_and_public_values() {
        let sql = "CREATE EXTERNAL TABLE t STORED AS IMAGE LOCATION 's3://b/' OPTIONS (\
                   'aws.access_key_id' 'AKIDEXAMPLE', 'aws.secret_access_key' 'wJalr/K7MDENG+bPxRfi', \
                   'aws.region' 'eu-west-1', aws.session_token = 'it''s a token', 'aws.endpoint' 'http://h:9')";
        let secrets = option_secrets(sql);
        assert_eq!(
            secrets,
            ["AKIDEXAMPLE", "wJalr/K7MDENG+bPxRfi", "it's a token"]
        );
        // A mistyped list: the secret is where a name should be.
        let sql = "... OPTIONS ('aws.access_key_id' 'AKID' 'SECRETVALUE', 'aws.bogus' 'x')";
        assert_eq!(option_secrets(sql), ["AKID", "SECRETVALUE"]);
        assert!(option_secrets("SELECT 'not an option' FROM t").is_empty());
    }
}
