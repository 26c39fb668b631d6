//! The planner error type. Each variant says whose fault it is (the query, a missing feature,
//! the disk), which is what the server's SQLSTATE mapping keys on.

use datafusion::error::DataFusionError;

/// Result alias for the planner.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of storage failure happened below the planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageErrorKind {
    /// The disk is full.
    DiskFull,
    /// Bytes on disk are damaged.
    Corruption,
    /// The log refuses writes after a failed fsync, or the I/O call failed.
    Io,
    /// The caller passed something the log refused.
    InvalidArgument,
    /// Anything else.
    Other,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SQL text does not parse.
    #[error("syntax error: {0}")]
    Syntax(String),
    /// A statement that parses but breaks a rule PostgreSQL checks after parsing (42601, with
    /// PostgreSQL's message as is).
    #[error("{0}")]
    SyntaxRule(String),
    /// A table or stream named in the query does not exist.
    #[error("relation \"{0}\" does not exist")]
    UndefinedTable(String),
    /// DROP of a table or stream that does not exist (PostgreSQL names the kind here).
    #[error("{kind} \"{name}\" does not exist")]
    UndefinedToDrop { kind: &'static str, name: String },
    /// CREATE of a name that is already taken.
    #[error("relation \"{0}\" already exists")]
    DuplicateTable(String),
    /// A PRIMARY KEY names a column the table does not have.
    #[error("column \"{0}\" named in key does not exist")]
    KeyColumnMissing(String),
    /// A column named twice in a definition.
    #[error("{0}")]
    DuplicateColumn(String),
    /// A table definition that cannot be (two primary keys, ...).
    #[error("{0}")]
    InvalidTableDefinition(String),
    /// A column named in the query does not exist.
    #[error("column \"{0}\" does not exist")]
    UndefinedColumn(String),
    /// The object exists but is of another kind than the statement needs.
    #[error("{0}")]
    WrongObjectType(String),
    /// A bad option value (for example `partitions = 0`).
    #[error("{0}")]
    InvalidParameter(String),
    /// Input data (COPY rows, literals) that does not convert to the column type.
    #[error("{0}")]
    InvalidInput(String),
    /// A NULL for a NOT NULL column.
    #[error("{0}")]
    NotNullViolation(String),
    /// A NULL for a NOT NULL column of a row table, with PostgreSQL's message and DETAIL line.
    #[error("{message}")]
    NotNullRow { message: String, detail: String },
    /// A row whose primary key is already taken (PostgreSQL's message and DETAIL line).
    #[error("{message}")]
    UniqueViolation {
        message: String,
        detail: Option<String>,
    },
    /// An ON CONFLICT target that names no unique constraint of the table (42P10).
    #[error("{0}")]
    InvalidColumnReference(String),
    /// A statement that would change one row twice (21000), as ON CONFLICT DO UPDATE with two
    /// proposed rows of the same key.
    #[error("{message}")]
    CardinalityViolation { message: String, hint: String },
    /// Another transaction committed a write to a row this one wrote (first committer wins);
    /// retrying the transaction is safe.
    #[error("could not serialize access due to concurrent update")]
    SerializationFailure,
    /// Waiting for a row lock would close a cycle of waiting transactions; this one gave up
    /// (40P01). Retrying the transaction is safe.
    #[error("deadlock detected")]
    Deadlock,
    /// A row, key or transaction over a size limit.
    #[error("{0}")]
    ProgramLimit(String),
    /// Something braid does not do (yet); the message says what to use instead.
    #[error("{0}")]
    Unsupported(String),
    /// The database named at connect time (or by DROP DATABASE) does not exist.
    #[error("database \"{0}\" does not exist")]
    UndefinedDatabase(String),
    /// CREATE DATABASE of a name that is taken (42P04).
    #[error("database \"{0}\" already exists")]
    DuplicateDatabase(String),
    /// A schema named in the statement does not exist (3F000).
    #[error("schema \"{0}\" does not exist")]
    UndefinedSchema(String),
    /// CREATE of an unqualified name when no schema of the search path exists (3F000).
    #[error("no schema has been selected to create in")]
    NoSchemaSelected,
    /// CREATE SCHEMA of a name that is taken (42P06).
    #[error("schema \"{0}\" already exists")]
    DuplicateSchema(String),
    /// A name the system keeps for itself (`pg_` schemas): 42939, with PostgreSQL's DETAIL.
    #[error("{message}")]
    ReservedName { message: String, detail: String },
    /// The object is in use by this or another session (55006), e.g. DROP DATABASE of a
    /// database with sessions.
    #[error("{message}")]
    ObjectInUse {
        message: String,
        detail: Option<String>,
    },
    /// Something no user may do, as creating a table in `pg_catalog` (42501).
    #[error("{message}")]
    PermissionDenied {
        message: String,
        detail: Option<String>,
    },
    /// A statement that cannot run inside a transaction block (25001), as CREATE DATABASE.
    #[error("{0} cannot run inside a transaction block")]
    ActiveTransaction(&'static str),
    /// DROP (RESTRICT) of an object others depend on (2BP01), with PostgreSQL's DETAIL (one
    /// line per dependent object) and HINT.
    #[error("{message}")]
    DependentObjectsExist {
        message: String,
        detail: String,
        hint: String,
    },
    /// A configuration parameter or other named object that does not exist.
    #[error("{0}")]
    UndefinedObject(String),
    /// The user's DROP names an object another one needs (an index a constraint owns).
    #[error("{0}")]
    DependentObjects(String),
    /// Integer arithmetic whose result does not fit its type (`smallint`, `integer` or
    /// `bigint`): the user's data or query, never a silently wrapped value.
    #[error("{0} out of range")]
    OutOfRange(&'static str),
    /// Floating-point arithmetic on finite operands whose result is infinite (`overflow`) or
    /// a zero from non-zero operands (`underflow`), as PostgreSQL reports it.
    #[error("value out of range: {0}")]
    FloatOutOfRange(&'static str),
    /// A numeric constant larger than any value braid can hold (22003), as `1e999999`.
    #[error("value overflows numeric format")]
    NumericOverflow,
    /// Interval arithmetic whose months, days or time part does not fit (22008).
    #[error("interval out of range")]
    IntervalOutOfRange,
    /// Text that is not a value of a date/time type (22007), as `'abc'::interval`.
    #[error("invalid input syntax for type {type_name}: \"{text}\"")]
    InvalidDatetimeInput {
        type_name: &'static str,
        text: String,
    },
    /// A field of date/time text outside its range (22015), as `'00:60:00'::interval`.
    #[error("{type_name} field value out of range: \"{text}\"")]
    DatetimeFieldOverflow {
        type_name: &'static str,
        text: String,
    },
    /// A statement other than ROLLBACK inside a failed transaction block.
    #[error("current transaction is aborted, commands ignored until end of transaction block")]
    InFailedTransaction,
    /// The log below failed.
    #[error("{message}")]
    Storage {
        kind: StorageErrorKind,
        message: String,
    },
    /// The catalog file could not be read or written.
    #[error("could not {op} the catalog at {path}: {reason}")]
    CatalogIo {
        op: &'static str,
        path: String,
        reason: String,
    },
    /// The catalog file does not decode.
    #[error("the catalog at {path} is corrupt: {reason}")]
    CatalogCorrupt { path: String, reason: String },
    /// Errors from DataFusion planning or execution.
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
}

impl Error {
    /// PostgreSQL's HINT line for this error, if it has one.
    pub fn hint(&self) -> Option<&str> {
        match self {
            Error::CardinalityViolation { hint, .. } => Some(hint),
            Error::DependentObjectsExist { hint, .. } => Some(hint),
            _ => None,
        }
    }

    /// PostgreSQL's DETAIL line for this error, if it has one.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Error::NotNullRow { detail, .. } => Some(detail),
            Error::UniqueViolation { detail, .. } => detail.as_deref(),
            Error::ReservedName { detail, .. } => Some(detail),
            Error::ObjectInUse { detail, .. } => detail.as_deref(),
            Error::PermissionDenied { detail, .. } => detail.as_deref(),
            Error::DependentObjectsExist { detail, .. } => Some(detail),
            _ => None,
        }
    }

    /// Wraps a planner error so it can travel through DataFusion's execution machinery and be
    /// recovered (by downcast) at the server edge.
    pub fn into_datafusion(self) -> DataFusionError {
        match self {
            Error::DataFusion(e) => e,
            other => DataFusionError::External(Box::new(other)),
        }
    }
}
