//! The `pg_catalog` functions psql's describe queries call: `format_type`, `pg_get_expr`,
//! `pg_get_indexdef`, `pg_get_constraintdef`, `pg_get_userbyid`, `pg_table_is_visible`, the
//! size functions (`pg_table_size` …) and the comment lookups (`obj_description` …), and
//! the helpers [`super::rewrite`] turns `regclass` / `regtype` / `regnamespace` casts into.
//!
//! They take any argument types (psql passes OIDs as quoted literals such as `'16384'`, and
//! `true` or `0` for flags) and read OIDs through a cast to bigint, so a value that is no OID
//! gives NULL rather than an error, as for PostgreSQL an OID naming nothing does.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::prelude::SessionContext;

use super::{quote_ident, type_info, Snapshot, TableLister, FIRST_USER_OID};

/// Name of the function a `x::regclass` cast of a column becomes: the relation's name.
pub const REGCLASS_NAME: &str = "braid_regclass_name";
/// Name of the function a `'name'::regclass` cast of a literal becomes: the relation's OID.
pub const REGCLASS_OID: &str = "braid_regclass_oid";
/// Name of the function a `x::regnamespace` cast becomes: the namespace's name.
pub const REGNAMESPACE_NAME: &str = "braid_regnamespace_name";

type Body = dyn Fn(&[ArrayRef], usize) -> DfResult<ArrayRef> + Send + Sync;

/// A catalog function: its name, how many arguments it takes, its result type and body.
struct CatalogFn {
    name: &'static str,
    signature: Signature,
    returns: DataType,
    body: Arc<Body>,
}

impl std::fmt::Debug for CatalogFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogFn")
            .field("name", &self.name)
            .finish()
    }
}

// Each name is registered once per session, so the name identifies the function.
impl PartialEq for CatalogFn {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for CatalogFn {}
impl Hash for CatalogFn {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for CatalogFn {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(self.returns.clone())
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let n = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        Ok(ColumnarValue::Array((self.body)(&arrays, n)?))
    }
}

fn register(
    ctx: &SessionContext,
    name: &'static str,
    arities: &[usize],
    returns: DataType,
    body: impl Fn(&[ArrayRef], usize) -> DfResult<ArrayRef> + Send + Sync + 'static,
) {
    let signature = Signature::one_of(
        arities
            .iter()
            .map(|&n| {
                if n == 0 {
                    TypeSignature::Nullary
                } else {
                    TypeSignature::Any(n)
                }
            })
            .collect(),
        Volatility::Stable,
    );
    ctx.register_udf(ScalarUDF::new_from_impl(CatalogFn {
        name,
        signature,
        returns,
        body: Arc::new(body),
    }));
}

/// Argument `i` read as OIDs (NULL where it is missing or no integer).
fn oids(args: &[ArrayRef], i: usize, n: usize) -> DfResult<Vec<Option<i64>>> {
    let Some(a) = args.get(i) else {
        return Ok(vec![None; n]);
    };
    let a = match a.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            // A quoted OID ('16384'); text that is no number is no OID.
            let t = cast(a, &DataType::Utf8)?;
            let t = t.as_string::<i32>();
            return Ok((0..n)
                .map(|r| {
                    (!t.is_null(r))
                        .then(|| t.value(r).trim().parse::<i64>().ok())
                        .flatten()
                })
                .collect());
        }
        _ => cast(a, &DataType::Int64)?,
    };
    let a = a.as_primitive::<Int64Type>();
    Ok((0..n)
        .map(|r| (!a.is_null(r)).then(|| a.value(r)))
        .collect())
}

/// Whether argument `i` is text: a name (`pg_table_size('t')`,
/// `pg_database_size('postgres')`) rather than an OID.
fn text_arg(args: &[ArrayRef], i: usize) -> bool {
    matches!(
        args.get(i).map(|a| a.data_type()),
        Some(DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
    )
}

/// Argument `i` read as text.
fn texts(args: &[ArrayRef], i: usize, n: usize) -> DfResult<Vec<Option<String>>> {
    let Some(a) = args.get(i) else {
        return Ok(vec![None; n]);
    };
    let t = cast(a, &DataType::Utf8)?;
    let t = t.as_string::<i32>();
    Ok((0..n)
        .map(|r| (!t.is_null(r)).then(|| t.value(r).to_string()))
        .collect())
}

fn text_array(v: Vec<Option<String>>) -> ArrayRef {
    Arc::new(StringArray::from(v))
}

/// PostgreSQL's `format_type(type_oid, typmod)` for the types braid knows.
pub fn format_type(oid: i64, typmod: Option<i64>) -> String {
    let m = typmod.filter(|m| *m >= 0);
    match oid {
        0 => "-".into(),
        16 => "boolean".into(),
        17 => "bytea".into(),
        19 => "name".into(),
        20 => "bigint".into(),
        21 => "smallint".into(),
        23 => "integer".into(),
        25 => "text".into(),
        26 => "oid".into(),
        114 => "json".into(),
        700 => "real".into(),
        701 => "double precision".into(),
        1042 => match m {
            Some(m) => format!("character({})", m - 4),
            None => "character".into(),
        },
        1043 => match m {
            Some(m) => format!("character varying({})", m - 4),
            None => "character varying".into(),
        },
        1082 => "date".into(),
        1114 => match m {
            Some(p) => format!("timestamp({p}) without time zone"),
            None => "timestamp without time zone".into(),
        },
        1184 => match m {
            Some(p) => format!("timestamp({p}) with time zone"),
            None => "timestamp with time zone".into(),
        },
        1700 => match m {
            Some(m) => {
                let m = m - 4;
                format!("numeric({},{})", (m >> 16) & 0xffff, m & 0xffff)
            }
            None => "numeric".into(),
        },
        1186 => "interval".into(),
        2950 => "uuid".into(),
        3802 => "jsonb".into(),
        other => type_info(other).map_or("???".into(), |t| t.name.to_string()),
    }
}

/// Registers the `pg_catalog` functions on a session; `tables` lists the database's tables
/// when a query runs, so the functions see the catalog as the query's tables do.
pub fn register_functions(ctx: &SessionContext, user: &str, tables: Arc<dyn TableLister>) {
    let user = user.to_string();
    register(ctx, "pg_get_userbyid", &[1], DataType::Utf8, move |a, n| {
        Ok(text_array(
            oids(a, 0, n)?
                .into_iter()
                .map(|o| {
                    o.map(|o| match o {
                        super::DATABASE_OWNER_OID => "pg_database_owner".to_string(),
                        _ => user.clone(),
                    })
                })
                .collect(),
        ))
    });
    register(ctx, "pg_size_pretty", &[1], DataType::Utf8, |a, n| {
        let Some(arg) = a.first() else {
            return Ok(text_array(vec![None; n]));
        };
        let sizes = cast(arg, &DataType::Int64)?;
        let sizes = sizes.as_primitive::<Int64Type>();
        Ok(text_array(
            (0..n)
                .map(|r| (!sizes.is_null(r)).then(|| size_pretty(sizes.value(r))))
                .collect(),
        ))
    });
    // PostgreSQL's encoding numbers; braid stores UTF8 only, but the name of any encoding
    // number is answered as PostgreSQL does (an unknown one is the empty string).
    register(ctx, "pg_encoding_to_char", &[1], DataType::Utf8, |a, n| {
        Ok(text_array(
            oids(a, 0, n)?
                .into_iter()
                .map(|e| e.map(|e| encoding_name(e).to_string()))
                .collect(),
        ))
    });
    // Visible: the session's search path finds the relation by its bare name. An OID that
    // names no relation is NULL, as in PostgreSQL.
    let t = tables.clone();
    register(
        ctx,
        "pg_table_is_visible",
        &[1],
        DataType::Boolean,
        move |a, n| {
            let snap = Snapshot::take(t.as_ref());
            let v: Vec<Option<bool>> = oids(a, 0, n)?
                .into_iter()
                .map(|o| snap.oid_is_visible(o?))
                .collect();
            Ok(Arc::new(datafusion::arrow::array::BooleanArray::from(v)))
        },
    );
    register(ctx, "format_type", &[2], DataType::Utf8, |a, n| {
        let types = oids(a, 0, n)?;
        let mods = oids(a, 1, n)?;
        Ok(text_array(
            types
                .into_iter()
                .zip(mods)
                .map(|(t, m)| t.map(|t| format_type(t, m)))
                .collect(),
        ))
    });
    // braid keeps defaults and index predicates as SQL text, which is what this returns.
    register(ctx, "pg_get_expr", &[2, 3], DataType::Utf8, |a, n| {
        Ok(text_array(texts(a, 0, n)?))
    });
    let t = tables.clone();
    register(
        ctx,
        "pg_get_indexdef",
        &[1, 3],
        DataType::Utf8,
        move |a, n| {
            let snap = Snapshot::take(t.as_ref());
            let ixs = oids(a, 0, n)?;
            let cols = oids(a, 1, n)?;
            // `pretty` (the third argument, psql's `\d`) leaves a visible table unqualified.
            let pretty = oids(a, 2, n)?;
            Ok(text_array(
                ixs.into_iter()
                    .zip(cols)
                    .zip(pretty)
                    .map(|((ix, col), pretty)| {
                        let ix = snap.index(ix?)?;
                        match col.unwrap_or(0) {
                            0 if pretty.unwrap_or(0) != 0 => Some(snap.index_definition(&ix)),
                            0 => Some(snap.qualified_index_definition(&ix)),
                            c => ix
                                .columns
                                .get(usize::try_from(c).ok()?.checked_sub(1)?)
                                .map(|c| quote_ident(c)),
                        }
                    })
                    .collect(),
            ))
        },
    );
    let t = tables.clone();
    register(
        ctx,
        "pg_get_constraintdef",
        &[1, 2],
        DataType::Utf8,
        move |a, n| {
            let snap = Snapshot::take(t.as_ref());
            let indexes = snap.indexes();
            Ok(text_array(
                oids(a, 0, n)?
                    .into_iter()
                    .map(|c| {
                        let c = c?;
                        indexes
                            .iter()
                            .find(|i| i.constraint_oid() == Some(c))
                            .map(|i| i.constraint_definition())
                    })
                    .collect(),
            ))
        },
    );
    register_sizes(ctx, &tables);
    register_database_size(ctx, &tables);
    // braid keeps no comments on objects.
    for (name, arities) in [
        ("obj_description", &[1usize, 2][..]),
        ("col_description", &[2][..]),
        ("shobj_description", &[2][..]),
    ] {
        register(ctx, name, arities, DataType::Utf8, |_, n| {
            Ok(text_array(vec![None; n]))
        });
    }
    let t = tables.clone();
    register(ctx, REGCLASS_NAME, &[1], DataType::Utf8, move |a, n| {
        let snap = Snapshot::take(t.as_ref());
        Ok(text_array(
            oids(a, 0, n)?
                .into_iter()
                .map(|o| {
                    let o = o?;
                    // An OID naming nothing prints as the number, as in PostgreSQL.
                    Some(match snap.display_name(o) {
                        Some(name) => name,
                        None => system_catalog_name(o).map_or(o.to_string(), str::to_string),
                    })
                })
                .collect(),
        ))
    });
    let t = tables.clone();
    register(ctx, REGCLASS_OID, &[1], DataType::Int64, move |a, n| {
        let snap = Snapshot::take(t.as_ref());
        // `'t'::regclass` of a name that names nothing is an error in PostgreSQL (42P01), not
        // NULL: a query comparing OIDs with it would otherwise quietly match nothing.
        Ok(Arc::new(Int64Array::from(named_relations(&snap, a, n)?)))
    });
    let t = tables.clone();
    register(ctx, REGNAMESPACE_NAME, &[1], DataType::Utf8, move |a, n| {
        let snap = Snapshot::take(t.as_ref());
        Ok(text_array(
            oids(a, 0, n)?
                .into_iter()
                .map(|o| {
                    o.map(|o| {
                        snap.namespace_name(o)
                            .map_or_else(|| o.to_string(), quote_ident)
                    })
                })
                .collect(),
        ))
    });
    // No publications and no extended statistics exist.
    register(
        ctx,
        "pg_relation_is_publishable",
        &[1],
        DataType::Boolean,
        |a, n| {
            let v: Vec<Option<bool>> = oids(a, 0, n)?
                .into_iter()
                .map(|o| o.map(|_| false))
                .collect();
            Ok(Arc::new(datafusion::arrow::array::BooleanArray::from(v)))
        },
    );
    register(
        ctx,
        "pg_get_statisticsobjdef_columns",
        &[1],
        DataType::Utf8,
        |_, n| Ok(text_array(vec![None; n])),
    );
}

/// The OIDs the names in the first argument name, as PostgreSQL's `regclass` input reads them:
/// a name that names no relation is an error (42P01), a NULL stays NULL.
fn named_relations(snap: &Snapshot, a: &[ArrayRef], n: usize) -> DfResult<Vec<Option<i64>>> {
    texts(a, 0, n)?
        .into_iter()
        .map(|name| match name {
            None => Ok(None),
            Some(name) => regclass_oid(snap, &name)
                .map(Some)
                .ok_or_else(|| crate::error::Error::UndefinedTable(name).into_datafusion()),
        })
        .collect()
}

/// The OID a `regclass` input names: a number, a system catalog (`pg_catalog` comes first in
/// every search path, as in PostgreSQL) or a relation name, optionally qualified by its schema
/// (each part folded to lower case unless double-quoted); a bare name is looked up through the
/// search path.
fn regclass_oid(snap: &Snapshot, name: &str) -> Option<i64> {
    if let Ok(oid) = name.parse::<i64>() {
        return Some(oid);
    }
    let parts = identifier_parts(name)?;
    match parts.as_slice() {
        [t] => system_catalog_oid(t).or_else(|| snap.relation_oid(None, t)),
        [s, t] if s == "pg_catalog" => system_catalog_oid(t),
        [s, t] => snap.relation_oid(Some(s), t),
        _ => None,
    }
}

/// The parts of a dotted name as PostgreSQL reads them: `"A.b".c` is `A.b` and `c`; unquoted
/// parts fold to lower case. `None` for text that is no name.
fn identifier_parts(name: &str) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    let mut chars = name.trim().chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    '"' => break,
                    c => part.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != '.') {
                part.push(c.to_ascii_lowercase());
            }
            if part.is_empty() {
                return None;
            }
        }
        parts.push(part);
        match chars.next() {
            None => return Some(parts),
            Some('.') => continue,
            Some(_) => return None,
        }
    }
}

/// PostgreSQL's fixed OIDs of the system catalogs tools name with `'pg_class'::regclass`
/// (`pg_description.classoid`, `pg_depend.refclassid`); the same in every PostgreSQL database.
const SYSTEM_CATALOG_OIDS: [(&str, i64); 17] = [
    ("pg_type", 1247),
    ("pg_attribute", 1249),
    ("pg_proc", 1255),
    ("pg_class", 1259),
    ("pg_authid", 1260),
    ("pg_database", 1262),
    ("pg_tablespace", 1213),
    ("pg_am", 2601),
    ("pg_attrdef", 2604),
    ("pg_constraint", 2606),
    ("pg_description", 2609),
    ("pg_index", 2610),
    ("pg_inherits", 2611),
    ("pg_namespace", 2615),
    ("pg_rewrite", 2618),
    ("pg_trigger", 2620),
    ("pg_collation", 3456),
];

fn system_catalog_oid(name: &str) -> Option<i64> {
    SYSTEM_CATALOG_OIDS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, oid)| *oid)
}

fn system_catalog_name(oid: i64) -> Option<&'static str> {
    SYSTEM_CATALOG_OIDS
        .iter()
        .find(|(_, o)| *o == oid)
        .map(|(n, _)| *n)
}

/// What a size function measures of the relation an OID names.
#[derive(Clone, Copy)]
enum Measure {
    /// `pg_table_size`, `pg_relation_size`: the relation's own data.
    Own,
    /// `pg_indexes_size`: a table's secondary indexes.
    Indexes,
    /// `pg_total_relation_size`: both.
    Total,
}

/// Bytes `oid` takes as `measure` counts them; `None` for an OID naming no relation. A
/// table's own data is its row tree (rows in primary-key order, so the primary key index has
/// no storage of its own and measures 0) or its stream's log; a secondary index is its tree.
fn relation_size(snap: &Snapshot, lister: &dyn TableLister, oid: i64, m: Measure) -> Option<i64> {
    let secondary = |t: &crate::catalog::TableDef| -> u64 {
        t.indexes()
            .iter()
            .map(|ix| lister.index_bytes(ix.id).unwrap_or(0))
            .sum()
    };
    let bytes = match snap.table(oid) {
        Some(t) => match m {
            Measure::Own => lister.table_bytes(t)?,
            Measure::Indexes => secondary(t),
            Measure::Total => lister.table_bytes(t)? + secondary(t),
        },
        None => {
            let ix = snap.index(oid)?;
            match m {
                Measure::Indexes => 0,
                _ if ix.primary => 0,
                _ => lister.index_bytes(u64::try_from(ix.oid - FIRST_USER_OID).ok()?)?,
            }
        }
    };
    i64::try_from(bytes).ok()
}

/// The bytes of every relation (table, stream, index) of the database `lister` lists.
fn database_bytes(snap: &Snapshot, lister: &dyn TableLister) -> Option<i64> {
    let total: u64 = snap
        .tables()
        .iter()
        .map(|tbl| {
            let own = lister.table_bytes(tbl).unwrap_or(0);
            let ix: u64 = tbl
                .indexes()
                .iter()
                .map(|ix| lister.index_bytes(ix.id).unwrap_or(0))
                .sum();
            own + ix
        })
        .sum();
    i64::try_from(total).ok()
}

/// `pg_database_size(name or oid)`: the sizes of the session's database's relations (tables,
/// streams, indexes); NULL for another database (its tables are not listed here), and an
/// error (3D000) for a name that names no database, as in PostgreSQL.
fn register_database_size(ctx: &SessionContext, tables: &Arc<dyn TableLister>) {
    let t = tables.clone();
    register(
        ctx,
        "pg_database_size",
        &[1],
        DataType::Int64,
        move |a, n| {
            let snap = Snapshot::take(t.as_ref());
            let names = t.databases();
            let own = t.database();
            let own_bytes = || database_bytes(&snap, t.as_ref());
            let by_name = text_arg(a, 0);
            let mut out = Vec::with_capacity(n);
            if by_name {
                for name in texts(a, 0, n)? {
                    out.push(match name {
                        None => None,
                        Some(name) if !names.contains(&name) => {
                            return Err(
                                crate::error::Error::UndefinedDatabase(name).into_datafusion()
                            )
                        }
                        Some(name) if own.as_deref() == Some(name.as_str()) => own_bytes(),
                        Some(_) => None,
                    });
                }
            } else {
                let own_oid = t
                    .database_ids()
                    .into_iter()
                    .find(|(name, _)| Some(name) == own.as_ref())
                    .map(|(_, id)| super::database_oid(id));
                for o in oids(a, 0, n)? {
                    out.push(match o {
                        Some(o) if Some(o) == own_oid => own_bytes(),
                        _ => None,
                    });
                }
            }
            Ok(Arc::new(Int64Array::from(out)))
        },
    );
    // `pg_default` holds the relations (those of the session's database are counted);
    // `pg_global` holds nothing of braid's.
    let t = tables.clone();
    register(
        ctx,
        "pg_tablespace_size",
        &[1],
        DataType::Int64,
        move |a, n| {
            let snap = Snapshot::take(t.as_ref());
            let by_name = text_arg(a, 0);
            let spaces: Vec<Option<i64>> = if by_name {
                texts(a, 0, n)?
                    .into_iter()
                    .map(|name| match name.as_deref() {
                        None => Ok(None),
                        Some("pg_default") => Ok(Some(super::DEFAULT_TABLESPACE_OID)),
                        Some("pg_global") => Ok(Some(super::GLOBAL_TABLESPACE_OID)),
                        Some(other) => Err(crate::error::Error::UndefinedObject(format!(
                            "tablespace \"{other}\" does not exist"
                        ))
                        .into_datafusion()),
                    })
                    .collect::<DfResult<_>>()?
            } else {
                oids(a, 0, n)?
            };
            let v: Vec<Option<i64>> = spaces
                .into_iter()
                .map(|o| match o? {
                    super::DEFAULT_TABLESPACE_OID => database_bytes(&snap, t.as_ref()),
                    super::GLOBAL_TABLESPACE_OID => Some(0),
                    _ => None,
                })
                .collect();
            Ok(Arc::new(Int64Array::from(v)))
        },
    );
    // braid's two tablespaces are PostgreSQL's built-in ones, whose location is ''.
    register(
        ctx,
        "pg_tablespace_location",
        &[1],
        DataType::Utf8,
        |a, n| {
            Ok(text_array(
                oids(a, 0, n)?
                    .into_iter()
                    .map(|o| o.map(|_| String::new()))
                    .collect(),
            ))
        },
    );
    // The one user is a superuser: every privilege on every database. The database is the
    // first argument, or the second after a user; a name that names none is 3D000, as in
    // PostgreSQL.
    let t = tables.clone();
    register(
        ctx,
        "has_database_privilege",
        &[2, 3],
        DataType::Boolean,
        move |a, n| {
            let at = usize::from(a.len() == 3);
            let names = t.databases();
            let by_name = text_arg(a, at);
            let v: Vec<Option<bool>> = texts(a, at, n)?
                .into_iter()
                .map(|d| match d {
                    Some(d) if by_name && !names.contains(&d) => {
                        Err(crate::error::Error::UndefinedDatabase(d).into_datafusion())
                    }
                    d => Ok(d.map(|_| true)),
                })
                .collect::<DfResult<_>>()?;
            Ok(Arc::new(datafusion::arrow::array::BooleanArray::from(v)))
        },
    );
}

/// `pg_table_size`, `pg_relation_size`, `pg_total_relation_size`, `pg_indexes_size`: what
/// psql's `\dt+`, `\di+` and `\l+`-style queries and monitoring tools ask.
fn register_sizes(ctx: &SessionContext, tables: &Arc<dyn TableLister>) {
    for (name, arities, m) in [
        ("pg_table_size", &[1usize][..], Measure::Own),
        ("pg_relation_size", &[1, 2][..], Measure::Own),
        ("pg_total_relation_size", &[1][..], Measure::Total),
        ("pg_indexes_size", &[1][..], Measure::Indexes),
    ] {
        let t = tables.clone();
        register(ctx, name, arities, DataType::Int64, move |a, n| {
            let snap = Snapshot::take(t.as_ref());
            // pg_relation_size(rel, fork): braid's relations have only a main fork.
            let forks = texts(a, 1, n)?;
            // The argument is a regclass: a quoted name (`pg_table_size('t')`) names the
            // relation, as PostgreSQL's cast of the literal does, and a name that names
            // none is an error (42P01); an OID that names none gives NULL.
            let rels = if text_arg(a, 0) {
                named_relations(&snap, a, n)?
            } else {
                oids(a, 0, n)?
            };
            let v: Vec<Option<i64>> = rels
                .into_iter()
                .zip(forks)
                .map(|(oid, fork)| {
                    let size = relation_size(&snap, t.as_ref(), oid?, m)?;
                    match fork.as_deref() {
                        None | Some("main") => Some(size),
                        Some(_) => Some(0),
                    }
                })
                .collect();
            Ok(Arc::new(Int64Array::from(v)))
        });
    }
}

/// `pg_encoding_to_char`: PostgreSQL 15's names for its server encodings' numbers (`pg_wchar.h`).
fn encoding_name(e: i64) -> &'static str {
    const NAMES: [&str; 42] = [
        "SQL_ASCII",
        "EUC_JP",
        "EUC_CN",
        "EUC_KR",
        "EUC_TW",
        "EUC_JIS_2004",
        "UTF8",
        "MULE_INTERNAL",
        "LATIN1",
        "LATIN2",
        "LATIN3",
        "LATIN4",
        "LATIN5",
        "LATIN6",
        "LATIN7",
        "LATIN8",
        "LATIN9",
        "LATIN10",
        "WIN1256",
        "WIN1258",
        "WIN866",
        "WIN874",
        "KOI8R",
        "WIN1251",
        "WIN1252",
        "ISO_8859_5",
        "ISO_8859_6",
        "ISO_8859_7",
        "ISO_8859_8",
        "WIN1250",
        "WIN1253",
        "WIN1254",
        "WIN1255",
        "WIN1257",
        "KOI8U",
        "SJIS",
        "BIG5",
        "GBK",
        "UHC",
        "GB18030",
        "JOHAB",
        "SHIFT_JIS_2004",
    ];
    usize::try_from(e)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("")
}

/// Whether `name` is one of PostgreSQL's encoding names or numbers (case and `_`/`-` aside,
/// as PostgreSQL compares them).
pub(crate) fn is_encoding(name: &str) -> bool {
    let clean = |s: &str| {
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase()
    };
    let wanted = clean(name);
    (0..42).any(|e| clean(encoding_name(e)) == wanted || e.to_string() == name)
}

/// `pg_size_pretty(bigint)` as PostgreSQL 15 writes it (`dbsize.c`): bytes below 10 kB, then
/// the largest unit that keeps the number below 20 × 1024 − 1, rounded half away from zero.
/// Dividing (not shifting) rounds negative sizes the same way as positive ones.
fn size_pretty(size: i64) -> String {
    // (name, limit, half-rounded, bits)
    const UNITS: [(&str, i64, bool, u32); 6] = [
        ("bytes", 10 * 1024, false, 0),
        ("kB", 20 * 1024 - 1, true, 10),
        ("MB", 20 * 1024 - 1, true, 20),
        ("GB", 20 * 1024 - 1, true, 30),
        ("TB", 20 * 1024 - 1, true, 40),
        ("PB", 20 * 1024 - 1, true, 50),
    ];
    let mut size = size;
    for (i, &(name, limit, round, bits)) in UNITS.iter().enumerate() {
        let next = UNITS.get(i + 1);
        if next.is_none() || size.unsigned_abs() < limit.unsigned_abs() {
            if round {
                size = (size + if size < 0 { -1 } else { 1 }) / 2;
            }
            return format!("{size} {name}");
        }
        if let Some(&(_, _, next_round, next_bits)) = next {
            let shift = next_bits - bits - u32::from(next_round) + u32::from(round);
            size /= 1i64 << shift;
        }
    }
    format!("{size} PB")
}

#[cfg(test)]
mod tests {
    use super::size_pretty;

    #[test]
    fn size_pretty_matches_postgresql() {
        // Each pair checked against PostgreSQL 15.18's pg_size_pretty.
        for (size, want) in [
            (0, "0 bytes"),
            (10239, "10239 bytes"),
            (10240, "10 kB"),
            (-10240, "-10 kB"),
            (123456789, "118 MB"),
            (-123456789, "-118 MB"),
            (20970496, "20 MB"),
            (21474836480, "20 GB"),
            (1099511627776, "1024 GB"),
            (1125899906842624, "1024 TB"),
            (i64::MAX, "8192 PB"),
            (i64::MIN, "-8192 PB"),
        ] {
            assert_eq!(size_pretty(size), want, "pg_size_pretty({size})");
        }
    }
}
