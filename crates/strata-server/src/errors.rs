//! Errors as clients see them: SQLSTATE codes for the Postgres wire protocol.

use pgwire::error::{ErrorInfo, PgWireError};
use strata_engine::datafusion::common::DataFusionError;
use strata_engine::datafusion::sql::sqlparser::parser::ParserError;
use strata_types::{Classify, ErrorClass};

/// The SQLSTATE of an engine error.
pub fn sqlstate(e: &strata_engine::Error) -> &'static str {
    use strata_engine::Error as E;
    match e {
        E::PermissionDenied(_) => "42501",
        E::Unsupported(_) => "0A000",
        E::Name(_) => "42602",
        E::Invalid(m) => by_message(m).unwrap_or("22023"),
        E::Lake(l) => match l.as_ref() {
            strata_lake::Error::TableNotFound { .. } | strata_lake::Error::ViewNotFound(_) => {
                "42P01"
            }
            strata_lake::Error::TableExists(_) => "42P07",
            strata_lake::Error::IsAView(..) => "42809",
            strata_lake::Error::SchemaMismatch { .. } => "42804",
            strata_lake::Error::Conflict { .. } => "40001",
            other => by_class(other.class()),
        },
        E::DataFusion(d) => match d.find_root() {
            DataFusionError::SQL(..) => "42601",
            DataFusionError::NotImplemented(_) => "0A000",
            DataFusionError::ResourcesExhausted(_) => "53200",
            DataFusionError::Plan(_) | DataFusionError::SchemaError(_, _)
                if d.to_string().contains("No field named") =>
            {
                "42703"
            }
            DataFusionError::Plan(m) => by_message(m).unwrap_or("42000"),
            DataFusionError::Execution(m) => by_message(m).unwrap_or("22000"),
            DataFusionError::ArrowError(..) => "22000",
            _ => by_class(e.class()),
        },
    }
}

fn by_message(m: &str) -> Option<&'static str> {
    if m.contains("already exists") {
        Some("42P07")
    } else if m.contains("not found") || m.contains("does not exist") {
        Some("42P01")
    } else {
        None
    }
}

fn by_class(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::User => "22023",
        ErrorClass::External => "58000",
        ErrorClass::Internal => "XX000",
    }
}

/// An engine error for a Postgres client.
pub fn to_pgwire(e: &strata_engine::Error) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        sqlstate(e).into(),
        e.to_string(),
    )))
}

/// An error `datafusion-postgres` raised (planning or running a query) for a Postgres
/// client, with its SQLSTATE.
pub fn api_error(e: &(dyn std::error::Error + Send + Sync + 'static)) -> PgWireError {
    if let Some(d) = e.downcast_ref::<DataFusionError>() {
        let engine: strata_engine::Error = clone_datafusion(d).into();
        return to_pgwire(&engine);
    }
    if let Some(p) = e.downcast_ref::<ParserError>() {
        return crate::pg::error("42601", format!("SQL syntax error: {p}"));
    }
    crate::pg::error("XX000", e.to_string())
}

/// DataFusion errors are not `Clone`; the parts the mapping reads are rebuilt.
fn clone_datafusion(d: &DataFusionError) -> DataFusionError {
    if let Some(m) = strata_engine::error_denial(d) {
        return DataFusionError::External(Box::new(strata_engine::Error::PermissionDenied(
            m.to_string(),
        )));
    }
    match d.find_root() {
        DataFusionError::SQL(p, _) => DataFusionError::SQL(Box::new(clone_parser(p)), None),
        DataFusionError::NotImplemented(m) => DataFusionError::NotImplemented(m.clone()),
        DataFusionError::ResourcesExhausted(m) => DataFusionError::ResourcesExhausted(m.clone()),
        DataFusionError::Plan(m) => DataFusionError::Plan(m.clone()),
        e @ DataFusionError::SchemaError(..) => DataFusionError::Plan(e.to_string()),
        DataFusionError::Execution(m) => DataFusionError::Execution(m.clone()),
        other => DataFusionError::Execution(other.to_string()),
    }
}

fn clone_parser(p: &ParserError) -> ParserError {
    match p {
        ParserError::TokenizerError(m) => ParserError::TokenizerError(m.clone()),
        ParserError::ParserError(m) => ParserError::ParserError(m.clone()),
        ParserError::RecursionLimitExceeded => ParserError::RecursionLimitExceeded,
    }
}
