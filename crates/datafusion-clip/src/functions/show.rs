//! `SHOW FUNCTIONS` that lists the `clip_*` functions too.
//!
//! DataFusion 55 answers `SHOW FUNCTIONS` from `information_schema.parameters`,
//! which has rows only for signatures it can enumerate (example argument
//! types whose return type plans). Every `clip_*` function has a
//! user-defined signature (its own `coerce_types`, for planning errors that
//! say what to write), so DataFusion's query drops it, although
//! `information_schema.routines` has its description and syntax.
//! [`show_functions`] adds those routines to DataFusion's own answer.

use datafusion::common::Result;
use datafusion::dataframe::DataFrame;
use datafusion::prelude::{SessionContext, cast, col};

fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `SHOW FUNCTIONS [LIKE pattern]`: DataFusion's rows, plus one row for each
/// scalar function that `information_schema.routines` describes but whose
/// signature `information_schema.parameters` cannot list (every `clip_*`
/// function), with a NULL return type and parameters: its `syntax_example`
/// names them. Needs `information_schema` on.
pub async fn show_functions(ctx: &SessionContext, like: Option<&str>) -> Result<DataFrame> {
    let like_sql = like.map(sql_string);
    let listed = ctx
        .sql(&match &like_sql {
            Some(p) => format!("SHOW FUNCTIONS LIKE {p}"),
            None => "SHOW FUNCTIONS".to_string(),
        })
        .await?;
    let filter = like_sql.map_or_else(String::new, |p| format!(" AND routine_name LIKE {p}"));
    let unlisted = ctx
        .sql(&format!(
            "SELECT DISTINCT routine_name AS function_name, data_type AS return_type, \
             NULL AS parameters, NULL AS parameter_types, function_type, description, \
             syntax_example \
             FROM information_schema.routines \
             WHERE function_type <> 'TABLE' AND routine_name NOT IN \
             (SELECT specific_name FROM information_schema.parameters \
              WHERE parameter_mode = 'OUT'){filter}"
        ))
        .await?;
    let columns = listed
        .schema()
        .fields()
        .iter()
        .map(|f| cast(col(f.name().as_str()), f.data_type().clone()).alias(f.name()))
        .collect::<Vec<_>>();
    listed.union(unlisted.select(columns)?)
}
