//! `clipql sql`: run statements in order, print the last one's result.

use datafusion::error::DataFusionError;
use datafusion::logical_expr::{LogicalPlan, Statement};
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::ast;

use crate::cli::SqlArgs;
use crate::{cluster_model_name, model_dir, output, redact, session};

/// Whether SQL text calls a function that needs a model and leaves
/// `clip.model` to us: then `clipql sql` pulls the default model first.
fn needs_default_model(sql: &str) -> bool {
    let sql = sql.to_ascii_lowercase();
    !sql.contains("clip.model")
        && datafusion_clip::all_functions()
            .iter()
            .map(|f| f.name())
            .filter(|name| datafusion_clip::needs_model(name))
            .any(|name| sql.contains(name))
}

/// `SHOW FUNCTIONS` (`Some(None)`) or `SHOW FUNCTIONS LIKE 'p'`
/// (`Some(Some("p"))`), which `datafusion_clip::show_functions` answers so
/// that the `clip_*` functions are listed; `None` for any other statement
/// (other filters go to DataFusion, which says what it supports).
fn show_functions_filter(statement: &DFStatement) -> Option<Option<&str>> {
    let DFStatement::Statement(statement) = statement else {
        return None;
    };
    match statement.as_ref() {
        ast::Statement::ShowFunctions { filter: None } => Some(None),
        ast::Statement::ShowFunctions {
            filter: Some(ast::ShowStatementFilter::Like(pattern)),
        } => Some(Some(pattern.as_str())),
        _ => None,
    }
}

pub(crate) async fn run_sql(args: SqlArgs) -> Result<(), DataFusionError> {
    let sql = match (&args.command, &args.file) {
        (Some(sql), _) => sql.clone(),
        (None, Some(file)) => std::fs::read_to_string(file).map_err(|e| {
            DataFusionError::IoError(e).context(format!("reading {}", file.display()))
        })?,
        (None, None) => return Err(DataFusionError::Plan("give SQL with -c or -f".into())),
    };
    // Before anything can fail: an error may quote the SQL.
    redact::remember_secrets(&sql);
    let statements = DFParser::parse_sql(&sql)?;
    if statements.is_empty() {
        return Err(DataFusionError::Plan("no SQL statement given".into()));
    }
    // `SHOW FUNCTIONS LIKE 'clip_scores'` names a function but runs none.
    let runs_functions = statements
        .iter()
        .filter(|s| show_functions_filter(s).is_none())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(";\n");
    let dtype = args.dtype.unwrap_or_default();
    let mut options = Vec::new();
    if args.model.is_some() || needs_default_model(&runs_functions) {
        let dir = model_dir(args.model.as_deref(), dtype, false).await?;
        let model = match args.cluster {
            Some(_) => cluster_model_name(args.model.as_deref(), &dir),
            None => dir.to_string_lossy().into_owned(),
        };
        options.push(("clip.model".to_string(), model));
    }
    if let Some(dtype) = args.dtype {
        options.push(("clip.dtype".to_string(), dtype.to_string()));
    }
    let config = session::config(args.cluster.as_deref(), &options)?;
    let ctx = session::context(args.cluster.as_deref(), config).await?;
    let count = statements.len();
    let mut last = None;
    for (i, statement) in statements.into_iter().enumerate() {
        if let Some(like) = show_functions_filter(&statement) {
            let listed = datafusion_clip::show_functions(&ctx, like).await?;
            last = Some(listed.collect().await?);
            continue;
        }
        let plan = ctx.state().statement_to_plan(statement).await?;
        if let LogicalPlan::Statement(Statement::ResetVariable(reset)) = &plan
            && reset.variable.starts_with("clip.")
        {
            datafusion_clip::reset_option(&ctx, &reset.variable)
                .await
                .map_err(|e| e.context(format!("statement {} of {count}", i + 1)))?;
            last = Some(Vec::new());
            continue;
        }
        let df = ctx.execute_logical_plan(plan).await?;
        let batches = df
            .collect()
            .await
            .map_err(|e| e.context(format!("statement {} of {count}", i + 1)))?;
        last = Some(batches);
    }
    let batches = last.unwrap_or_default();
    let mut stdout = std::io::stdout().lock();
    output::print::write(&mut stdout, &batches, args.format)
}
