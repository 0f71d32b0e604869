//! Keeping secrets given in SQL out of what `clipql sql` prints.
//!
//! A table's S3 credentials can be written in its `OPTIONS (...)`. Our own
//! errors never repeat option values, but SQL parsing errors quote the token
//! they stopped at, and in a mistyped list (a missing comma, a missing key)
//! that token can be a secret. So before anything is printed, every string
//! in an `OPTIONS` list is masked, except option names and the values of
//! options known not to be secret (`aws.region`, `aws.endpoint`, ...).

use std::sync::Mutex;

use datafusion::sql::sqlparser::dialect::{
    Dialect, GenericDialect, MySqlDialect, PostgreSqlDialect,
};
use datafusion::sql::sqlparser::tokenizer::{Token as SqlToken, Tokenizer};

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
        secrets.sort();
        secrets.dedup();
    }
}

/// `text` with every remembered secret masked.
pub fn redact(text: &str) -> String {
    match SECRETS.lock() {
        Ok(secrets) => redact_with(&secrets, text),
        // A panic while the list was held: print nothing that might hold one.
        Err(_) => "(an error message, not shown: it may hold a secret)".into(),
    }
}

/// `text` with each of `secrets` masked, the longest first (so a secret
/// inside a longer one never leaves the rest of the longer one shown).
fn redact_with(secrets: &[String], text: &str) -> String {
    let mut secrets: Vec<&String> = secrets.iter().collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_string();
    for secret in secrets {
        out = out.replace(secret.as_str(), "***");
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
    /// A string: its value, and how it is written (quotes and escapes),
    /// which is how a parser error quotes it.
    Str(String, String),
    Word(String),
    Open,
    Close,
    Other,
}

/// The dialects whose tokenizers read `sql`: the one `clipql sql` parses
/// with (generic), and two whose comments and strings differ (`#`
/// comments, `E'...'` and `$$...$$` strings). A string any of them sees in
/// an `OPTIONS` list is masked.
fn dialects() -> [Box<dyn Dialect>; 3] {
    [
        Box::new(GenericDialect {}),
        Box::new(PostgreSqlDialect {}),
        Box::new(MySqlDialect {}),
    ]
}

/// `sql` as `dialect`'s own tokenizer (sqlparser's, the one DataFusion
/// parses with) reads it, so comments, escapes and dollar quoting are
/// understood as the parser understands them. `None` when it cannot be
/// tokenized (an unterminated string, say).
fn tokens(sql: &str, dialect: &dyn Dialect) -> Option<Vec<Token>> {
    let raw: Vec<SqlToken> = Tokenizer::new(dialect, sql)
        .tokenize()
        .ok()?
        .into_iter()
        .filter(|t| !matches!(t, SqlToken::Whitespace(_)))
        .collect();
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let token = match &raw[i] {
            // `aws.region` is three tokens, `aws` `.` `region`: one name.
            SqlToken::Word(w) if w.quote_style.is_none() => {
                let mut name = w.value.clone();
                while let (Some(SqlToken::Period), Some(SqlToken::Word(next))) =
                    (raw.get(i + 1), raw.get(i + 2))
                {
                    name.push('.');
                    name.push_str(&next.value);
                    i += 2;
                }
                Token::Word(name)
            }
            SqlToken::Word(w) => Token::Word(w.value.clone()),
            SqlToken::Number(n, _) => Token::Word(n.clone()),
            SqlToken::LParen => Token::Open,
            SqlToken::RParen => Token::Close,
            SqlToken::Comma
            | SqlToken::Eq
            | SqlToken::DoubleEq
            | SqlToken::Period
            | SqlToken::SemiColon
            | SqlToken::Colon => Token::Other,
            SqlToken::SingleQuotedString(v)
            | SqlToken::DoubleQuotedString(v)
            | SqlToken::TripleSingleQuotedString(v)
            | SqlToken::TripleDoubleQuotedString(v)
            | SqlToken::SingleQuotedByteStringLiteral(v)
            | SqlToken::DoubleQuotedByteStringLiteral(v)
            | SqlToken::SingleQuotedRawStringLiteral(v)
            | SqlToken::DoubleQuotedRawStringLiteral(v)
            | SqlToken::NationalStringLiteral(v)
            | SqlToken::EscapedStringLiteral(v)
            | SqlToken::UnicodeStringLiteral(v)
            | SqlToken::HexStringLiteral(v) => Token::Str(v.clone(), raw[i].to_string()),
            SqlToken::DollarQuotedString(d) => Token::Str(d.value.clone(), raw[i].to_string()),
            // Anything else in a list of options is a value as written.
            other => Token::Str(other.to_string(), other.to_string()),
        };
        out.push(token);
        i += 1;
    }
    Some(out)
}

/// When a tokenizer gives up on `sql`: every word after an `OPTIONS`
/// keyword that is not an option name, quotes taken off. More than is
/// secret, never less.
fn untokenized_secrets(sql: &str) -> Vec<String> {
    let lower = sql.to_ascii_lowercase();
    let Some(at) = lower.find("options") else {
        return Vec::new();
    };
    sql[at..]
        .split(|c: char| c.is_whitespace() || "(),=;".contains(c))
        .map(|w| w.trim_matches(|c| c == '\'' || c == '"' || c == '$'))
        .filter(|w| w.chars().count() >= 4 && !is_option_name(w))
        .flat_map(|w| w.split('\'').filter(|p| p.chars().count() >= 4))
        .map(str::to_string)
        .collect()
}

/// The strings in `sql`'s `OPTIONS (...)` lists that may be secret, as any
/// of [`dialects`] reads them.
fn option_secrets(sql: &str) -> Vec<String> {
    let mut secrets = Vec::new();
    for dialect in dialects() {
        match tokens(sql, dialect.as_ref()) {
            Some(tokens) => secrets.extend(listed_secrets(&tokens)),
            None => secrets.extend(untokenized_secrets(sql)),
        }
    }
    let mut seen = std::collections::HashSet::new();
    secrets.retain(|s| seen.insert(s.clone()));
    secrets
}

/// The strings in the `OPTIONS (...)` lists of `tokens` that may be secret.
fn listed_secrets(tokens: &[Token]) -> Vec<String> {
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
                Token::Str(s, _) | Token::Word(s)
                    if is_option_name(s) && previous_name.is_none() =>
                {
                    previous_name = Some(s.to_ascii_lowercase());
                }
                Token::Str(s, _) | Token::Word(s) => {
                    let public = previous_name
                        .as_deref()
                        .is_some_and(|n| PUBLIC_OPTIONS.contains(&n));
                    // Shorter strings are no secret, and masking them would
                    // garble the message.
                    if !public && s.chars().count() >= 4 {
                        secrets.push(s.clone());
                        // How a parser error quotes it, where masking the
                        // value would not mask that (escapes).
                        if let Token::Str(_, written) = &tokens[i]
                            && !written.contains(s.as_str())
                        {
                            secrets.push(written.clone());
                        }
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

    fn assert_has(secrets: &[String], expected: &[&str]) {
        for e in expected {
            assert!(secrets.iter().any(|s| s == e), "{e}: {secrets:?}");
        }
    }

    /// The secret values of `sql`, without their written forms.
    fn values(sql: &str) -> Vec<String> {
        option_secrets(sql)
            .into_iter()
            .filter(|s| !s.starts_with(['\'', '$']) && !s.starts_with("E'"))
            .collect()
    }

    /// Issue 26, item 6: comments and the other ways of writing a string
    /// no longer make the masking lose track of where the strings are.
    #[test]
    fn comments_and_other_strings_keep_the_masking_on_track() {
        let list = "OPTIONS ('aws.access_key_id' 'AKIDSENTINEL' 'SECRETSENTINEL')";
        for before in [
            "-- don't\n",
            "/* it's a 'comment */ ",
            "# don't (a MySQL comment)\n",
            "-- 'aws.region' 'x\n",
        ] {
            let sql = format!(
                "CREATE EXTERNAL TABLE t STORED AS IMAGE LOCATION 's3://b/' {before}{list}"
            );
            let secrets = values(&sql);
            assert_has(&secrets, &["SECRETSENTINEL", "AKIDSENTINEL"]);
            assert_eq!(
                redact_with(&secrets, "found: 'SECRETSENTINEL' after AKIDSENTINEL"),
                "found: '***' after ***",
                "{before:?}"
            );
        }
        // E-strings with an escaped quote, and dollar quoting.
        let sql = r"CREATE EXTERNAL TABLE t STORED AS IMAGE LOCATION 's3://b/' OPTIONS (
            'aws.secret_access_key' E'SECRET\'SENTINEL', 'aws.session_token' $$TOKEN'SENTINEL$$)";
        assert_has(&option_secrets(sql), &["SECRET'SENTINEL", "TOKEN'SENTINEL"]);
        // A statement no tokenizer can read: every word after OPTIONS.
        let sql = "CREATE EXTERNAL TABLE t STORED AS IMAGE LOCATION 's3://b/' OPTIONS ('aws.secret_access_key' 'SECRETSENTINEL";
        assert_has(&values(sql), &["SECRETSENTINEL"]);
    }
}
