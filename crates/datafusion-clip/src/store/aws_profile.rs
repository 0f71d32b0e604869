//! The AWS shared config files (`~/.aws/credentials`, `~/.aws/config`), the
//! step of the usual AWS credential chain that `object_store` lacks.
//!
//! Read as the AWS CLI reads them: the profile is `AWS_PROFILE` (else
//! `default`); the files are `AWS_SHARED_CREDENTIALS_FILE` and
//! `AWS_CONFIG_FILE` (else under `~/.aws/`). A profile gives static keys
//! (`aws_access_key_id`, `aws_secret_access_key`, `aws_session_token`), and
//! `region` and `endpoint_url`. The environment wins over the files, as in
//! the AWS SDKs. Profiles that get credentials another way (`role_arn`,
//! `sso_session`, `credential_process`, ...) are not supported: naming one
//! in `AWS_PROFILE` is an error that says what to do instead.

use std::collections::HashMap;
use std::path::PathBuf;

use datafusion::common::{DataFusionError, Result};
use object_store::aws::AmazonS3ConfigKey;

/// Profile settings that cannot be used, and what they mean.
const UNSUPPORTED: &[&str] = &[
    "role_arn",
    "sso_session",
    "sso_start_url",
    "credential_process",
    "web_identity_token_file",
];

/// One INI file: section name → key → value.
type Ini = HashMap<String, HashMap<String, String>>;

fn parse_ini(text: &str) -> Ini {
    let mut ini = Ini::new();
    let mut section: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.trim().to_string());
            continue;
        }
        if let (Some(section), Some((key, value))) = (&section, line.split_once('=')) {
            ini.entry(section.clone())
                .or_default()
                .insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    ini
}

/// The S3 settings the shared config files give, for what the environment
/// (`env`) leaves unset. `home` is the user's home folder.
pub(crate) fn profile_settings(
    env: &dyn Fn(&str) -> Option<String>,
    home: Option<PathBuf>,
) -> Result<Vec<(AmazonS3ConfigKey, String)>> {
    let set = |k: &str| env(k).is_some_and(|v| !v.is_empty());
    let explicit = env("AWS_PROFILE").filter(|p| !p.is_empty());
    let profile = explicit.clone().unwrap_or_else(|| "default".to_string());
    let file = |var: &str, default: &str| {
        env(var)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws").join(default)))
    };
    let read = |path: Option<PathBuf>| {
        path.and_then(|p| std::fs::read_to_string(p).ok())
            .map(|t| parse_ini(&t))
            .unwrap_or_default()
    };
    let credentials = read(file("AWS_SHARED_CREDENTIALS_FILE", "credentials"));
    let config = read(file("AWS_CONFIG_FILE", "config"));
    let config_section = if profile == "default" {
        "default".to_string()
    } else {
        format!("profile {profile}")
    };
    // The credentials file wins over the config file, key by key.
    let mut values: HashMap<String, String> =
        config.get(&config_section).cloned().unwrap_or_default();
    if let Some(c) = credentials.get(&profile) {
        values.extend(c.clone());
    }
    if values.is_empty() {
        return match explicit {
            Some(p) => Err(DataFusionError::Plan(format!(
                "AWS_PROFILE is {p}, but neither the AWS credentials file nor the config file \
                 has that profile"
            ))),
            None => Ok(Vec::new()),
        };
    }

    let mut settings = Vec::new();
    let has_keys = values.contains_key("aws_access_key_id");
    if !set("AWS_ACCESS_KEY_ID") {
        if has_keys {
            for (name, key) in [
                ("aws_access_key_id", AmazonS3ConfigKey::AccessKeyId),
                ("aws_secret_access_key", AmazonS3ConfigKey::SecretAccessKey),
                ("aws_session_token", AmazonS3ConfigKey::Token),
            ] {
                if let Some(v) = values.get(name) {
                    settings.push((key, v.clone()));
                }
            }
        } else if let (Some(p), Some(how)) = (
            &explicit,
            UNSUPPORTED.iter().find(|k| values.contains_key(**k)),
        ) {
            return Err(DataFusionError::Plan(format!(
                "AWS profile {p} gets its credentials through {how}, which ClipQL does not \
                 support; export them first, e.g. \
                 eval \"$(aws configure export-credentials --profile {p} --format env)\""
            )));
        }
    }
    if !set("AWS_REGION")
        && !set("AWS_DEFAULT_REGION")
        && let Some(region) = values.get("region")
    {
        settings.push((AmazonS3ConfigKey::Region, region.clone()));
    }
    if !set("AWS_ENDPOINT_URL")
        && !set("AWS_ENDPOINT")
        && let Some(endpoint) = values.get("endpoint_url")
    {
        settings.push((AmazonS3ConfigKey::Endpoint, endpoint.clone()));
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home_with(credentials: &str, config: &str) -> tempfile::TempDir {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".aws")).unwrap();
        std::fs::write(home.path().join(".aws/credentials"), credentials).unwrap();
        std::fs::write(home.path().join(".aws/config"), config).unwrap();
        home
    }

    fn names(settings: &[(AmazonS3ConfigKey, String)]) -> Vec<(String, String)> {
        settings
            .iter()
            .map(|(k, v)| (k.as_ref().to_string(), v.clone()))
            .collect()
    }

    const CREDENTIALS: &str = "# comment\n[default]\naws_access_key_id = AKIADEFAULT\n\
        aws_secret_access_key = secret-default\n\n[work]\naws_access_key_id=AKIAWORK\n\
        aws_secret_access_key=secret-work\naws_session_token = tok\n";
    const CONFIG: &str = "[default]\nregion = eu-west-1\n[profile work]\nregion = us-east-2\n\
        endpoint_url = http://127.0.0.1:9000\n[profile sso]\nsso_session = corp\nregion = eu-north-1\n";

    #[test]
    fn the_default_profile_fills_what_the_environment_leaves_unset() {
        let home = home_with(CREDENTIALS, CONFIG);
        let none = |_: &str| None;
        let got = profile_settings(&none, Some(home.path().to_path_buf())).unwrap();
        assert_eq!(
            names(&got),
            [
                ("aws_access_key_id".into(), "AKIADEFAULT".into()),
                ("aws_secret_access_key".into(), "secret-default".into()),
                ("aws_region".into(), "eu-west-1".into()),
            ]
        );
        // The environment wins.
        let env = |k: &str| {
            matches!(k, "AWS_ACCESS_KEY_ID" | "AWS_REGION").then(|| "from-env".to_string())
        };
        let got = profile_settings(&env, Some(home.path().to_path_buf())).unwrap();
        assert!(got.is_empty(), "{:?}", names(&got));
    }

    #[test]
    fn a_named_profile_from_either_file() {
        let home = home_with(CREDENTIALS, CONFIG);
        let env = |k: &str| (k == "AWS_PROFILE").then(|| "work".to_string());
        let got = profile_settings(&env, Some(home.path().to_path_buf())).unwrap();
        assert_eq!(
            names(&got),
            [
                ("aws_access_key_id".into(), "AKIAWORK".into()),
                ("aws_secret_access_key".into(), "secret-work".into()),
                ("aws_session_token".into(), "tok".into()),
                ("aws_region".into(), "us-east-2".into()),
                ("aws_endpoint".into(), "http://127.0.0.1:9000".into()),
            ]
        );
    }

    #[test]
    fn unsupported_and_missing_profiles_say_what_to_do() {
        let home = home_with(CREDENTIALS, CONFIG);
        let sso = |k: &str| (k == "AWS_PROFILE").then(|| "sso".to_string());
        let err = profile_settings(&sso, Some(home.path().to_path_buf()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("through sso_session"), "{err}");
        assert!(err.contains("aws configure export-credentials"), "{err}");
        let missing = |k: &str| (k == "AWS_PROFILE").then(|| "nope".to_string());
        let err = profile_settings(&missing, Some(home.path().to_path_buf()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("AWS_PROFILE is nope"), "{err}");
        // No files, no profile: nothing, and no error.
        let none = |_: &str| None;
        assert!(profile_settings(&none, None).unwrap().is_empty());
    }
}
