//! The one place a command gets its DataFusion session: local, or a Ballista
//! cluster's (`--cluster`), with its `clip.*` options set.

use datafusion::error::{DataFusionError, Result};
use datafusion::prelude::{SessionConfig, SessionContext};

/// The session config for a local run or for `cluster` (Ballista's, which
/// carries the plan codecs), with `options` set in order, so that a later
/// one (`--set`) wins. A value an option refuses is a planning error that
/// names the key.
pub(crate) fn config(cluster: Option<&str>, options: &[(String, String)]) -> Result<SessionConfig> {
    let mut config = match cluster {
        Some(_) => ballista_clip::session_config(),
        None => datafusion_clip::session_config(),
    };
    for (key, value) in options {
        // Not SessionConfig::set_str, which panics on a value it refuses.
        config.options_mut().set(key, value).map_err(|e| match e {
            DataFusionError::Configuration(m) => {
                DataFusionError::Plan(format!("{key} = {value}: {m}"))
            }
            other => other,
        })?;
    }
    Ok(config)
}

/// The context for `config`: a client of the scheduler at `cluster`, or a
/// local one with every `clip_*` function and the IMAGE format registered,
/// `information_schema` on (`SHOW FUNCTIONS`, `SHOW ALL`, with each
/// function's documentation) and files queryable by URL
/// (`SELECT * FROM 'photos/*.parquet'`).
pub(crate) async fn context(
    cluster: Option<&str>,
    config: SessionConfig,
) -> Result<SessionContext> {
    match cluster {
        Some(url) => ballista_clip::remote_context(url, config).await,
        None => {
            let config = config.with_information_schema(true);
            let ctx = SessionContext::new_with_config_rt(config, datafusion_clip::runtime_env()?)
                .enable_url_table();
            datafusion_clip::register_all(&ctx)?;
            Ok(ctx)
        }
    }
}
