//! Integration tests of sources against real services (PostgreSQL on the machine),
//! each in its own schema, loading into a lake in a temporary directory.

mod mysql;
mod postgres;
