use datafusion::common::DataFusionError;
use strata_types::{Classify, ErrorClass};

/// Errors raised while planning or running SQL.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// From the query engine: syntax, planning, execution.
    #[error("{}", clean_datafusion_message(.0))]
    DataFusion(Box<DataFusionError>),
    /// From the lake.
    #[error(transparent)]
    Lake(Box<strata_lake::Error>),
    /// A bad name.
    #[error(transparent)]
    Name(#[from] strata_types::NameError),
    /// A statement Strata does not run, with what to do instead.
    #[error("{0}")]
    Unsupported(String),
    /// A statement that cannot run as written.
    #[error("{0}")]
    Invalid(String),
    /// The principal lacks a privilege (SQLSTATE 42501 at the wire).
    #[error("{0}")]
    PermissionDenied(String),
}

impl Error {
    /// Where in the SQL text the error is, when the engine knows: 1-based `(line, column)`
    /// of a syntax error, or of the span a planning diagnostic points at (an unknown
    /// column, a missing `GROUP BY` entry).
    pub fn location(&self) -> Option<(usize, usize)> {
        let Error::DataFusion(e) = self else {
            return None;
        };
        for err in e.iter() {
            if let Some(span) = err.diagnostic().and_then(|d| d.span)
                && span.start.line > 0
            {
                return Some((span.start.line as usize, span.start.column as usize));
            }
        }
        if let DataFusionError::SQL(p, _) = e.find_root() {
            return parser_location(&p.to_string());
        }
        None
    }
}

/// `… at Line: 3, Column: 5` in a parser message.
fn parser_location(message: &str) -> Option<(usize, usize)> {
    let rest = &message[message.rfind("Line: ")? + "Line: ".len()..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((line.trim().parse().ok()?, column.parse().ok()?))
}

impl From<DataFusionError> for Error {
    fn from(e: DataFusionError) -> Self {
        if let Some(m) = find_denial(&e) {
            return Error::PermissionDenied(m.to_string());
        }
        Error::DataFusion(Box::new(e))
    }
}

impl From<strata_lake::Error> for Error {
    fn from(e: strata_lake::Error) -> Self {
        Error::Lake(Box::new(e))
    }
}

/// Removes DataFusion's layering noise ("Error during planning: ", "External error: ").
fn clean_datafusion_message(e: &DataFusionError) -> String {
    if let Some(lake) = find_lake_error(e) {
        return lake.to_string();
    }
    if let DataFusionError::SQL(p, _) = e.find_root() {
        use datafusion::sql::sqlparser::parser::ParserError;
        return match p.as_ref() {
            ParserError::ParserError(m) | ParserError::TokenizerError(m) => {
                format!("SQL syntax error: {m}")
            }
            other => format!("SQL syntax error: {other}"),
        };
    }
    if let DataFusionError::ResourcesExhausted(m) = e.find_root() {
        let first = m.lines().last().unwrap_or(m).trim_start_matches("Error: ");
        return format!(
            "the query needs more memory than `engine.memory_limit` allows ({first}); raise the limit in strata.yml or narrow the query"
        );
    }
    let mut s = e.find_root().to_string();
    for prefix in [
        "External error: ",
        "Error during planning: ",
        "SQL error: ",
        "Execution error: ",
        "Arrow error: ",
        "Schema error: ",
    ] {
        while let Some(rest) = s.strip_prefix(prefix) {
            s = rest.to_string();
        }
    }
    s
}

/// A permission denial raised inside planning or execution (the secured catalog, the
/// policy rule), wherever DataFusion wrapped it.
pub fn find_denial(e: &DataFusionError) -> Option<&str> {
    match e {
        DataFusionError::External(inner) => match inner.downcast_ref::<Error>() {
            Some(Error::PermissionDenied(m)) => Some(m),
            Some(Error::DataFusion(e)) => find_denial(e),
            _ => inner
                .downcast_ref::<DataFusionError>()
                .and_then(find_denial),
        },
        DataFusionError::Context(_, inner) => find_denial(inner),
        DataFusionError::Shared(inner) => find_denial(inner),
        _ => None,
    }
}

fn find_lake_error(e: &DataFusionError) -> Option<&strata_lake::Error> {
    match e {
        DataFusionError::External(inner) => inner.downcast_ref::<strata_lake::Error>(),
        DataFusionError::Context(_, inner) => find_lake_error(inner),
        DataFusionError::Shared(inner) => find_lake_error(inner),
        _ => None,
    }
}

impl Classify for Error {
    fn class(&self) -> ErrorClass {
        match self {
            Error::DataFusion(e) => {
                if let Some(l) = find_lake_error(e) {
                    return l.class();
                }
                match e.find_root() {
                    DataFusionError::Internal(_) => ErrorClass::Internal,
                    DataFusionError::IoError(_) | DataFusionError::ObjectStore(_) => {
                        ErrorClass::External
                    }
                    _ => ErrorClass::User,
                }
            }
            Error::Lake(e) => e.class(),
            Error::Name(_)
            | Error::Unsupported(_)
            | Error::Invalid(_)
            | Error::PermissionDenied(_) => ErrorClass::User,
        }
    }

    fn retryable(&self) -> bool {
        match self {
            Error::Lake(e) => e.retryable(),
            _ => false,
        }
    }
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
